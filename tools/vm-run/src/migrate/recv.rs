//! The destination's side of a live migration. The foreground `vm-run
//! start --incoming FD` reads the hello (the spec, the guest's CPU
//! features) and checks this host before anything else moves; the VM
//! process then makes guest memory, says `ready`, takes the pages and the
//! state, builds the machine from them and says `running`. The guest runs
//! only once the whole stream has arrived and checked; on any error the
//! source hears it and the partial VM is discarded.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use anyhow::{anyhow, bail, Context, Result};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm::memory::GuestMemory;
use vmm::state::stream::{Hello, Reader, Record, Reply, MAX_RECORD};
use vmm::state::MachineState;

use super::storage::Targets;
use super::Conn;

/// Reads the stream's header and hello, and checks that this host can
/// take the guest: its KVM offers every CPU feature the guest was given,
/// and there are CPUs enough for its vCPUs. A refusal is sent back too.
pub(crate) fn hello(conn: &mut Conn) -> Result<Hello> {
    let r = read_hello(conn);
    if let Err(e) = &r {
        let _ = Reply::Error {
            error: crate::one_line(e),
        }
        .write(conn);
    }
    r
}

fn read_hello(conn: &mut Conn) -> Result<Hello> {
    let mut reader = Reader::new(&mut *conn)?;
    let Record::Hello(h) = reader.next_record()? else {
        bail!("the stream does not start with a hello");
    };
    let missing = vmm::cpu::missing_features(&h.cpuid)?;
    if !missing.is_empty() {
        bail!(
            "this host's KVM lacks CPU features the guest was given: {}",
            missing.join(", ")
        );
    }
    let vcpus = h
        .spec
        .get("vcpus")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(1);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    if vcpus > cpus {
        bail!("the guest has {vcpus} vCPUs and this host {cpus} CPUs");
    }
    Ok(*h)
}

/// In the VM process: guest memory for `size` bytes, `ready`, then every
/// record up to the end. Returns the state and the filled memory.
/// Disk contents land in `disks` (storage migration), synced once the
/// end has arrived.
pub(crate) fn receive(
    conn: &mut Conn,
    cfg: &vmm::VmConfig,
    disks: &mut Targets,
) -> Result<(MachineState, GuestMemory, File)> {
    let (mem, memfd) = vmm::memory::create_with(&cfg.name, cfg.memory, cfg.hugepages)?;
    if let Some((policy, nodes)) = &cfg.numa {
        // Bound before the first page lands, so pages are placed there.
        vmm::memory::bind(&mem, *policy, nodes)?;
    }
    Reply::Ready.write(conn).context("answering the source")?;
    let mut reader = Reader::resume(&mut *conn);
    let mut records = 0u64;
    let zero = vec![0u8; 1 << 20];
    // Pages land straight in guest memory. No vCPU exists yet and no
    // other thread of this process touches guest memory until the machine
    // is built, so the slice handed to the reader is ours alone; a record
    // that fails its checksum ends the migration, and the memory with it.
    let mut place = |gpa: u64, len: usize| -> vmm::Result<Option<&mut [u8]>> {
        let slice = Some(len)
            .filter(|&l| mem.check_range(GuestAddress(gpa), l))
            .and_then(|l| mem.get_slice(GuestAddress(gpa), l).ok())
            .ok_or_else(|| {
                vmm::Error::Stream(format!(
                    "a page record outside guest memory ({gpa:#x} + {len})"
                ))
            })?;
        // SAFETY: see above: the range is in guest RAM (checked) and one
        // mapping; nothing else reads or writes it while this slice lives.
        Ok(Some(unsafe {
            std::slice::from_raw_parts_mut(slice.ptr_guard_mut().as_ptr(), len)
        }))
    };
    // Without hugepages, pages are written into the memfd rather than
    // through the mapping: shmem then allocates each page without
    // zeroing it first (a whole-page write fills it), which a fault on
    // the mapping does not spare. hugetlbfs has no write(): its pages
    // land through the mapping.
    let by_write = cfg.hugepages.is_none();
    let mut scratch = vec![0u8; if by_write { MAX_RECORD as usize } else { 0 }];
    let state = loop {
        let record = if by_write {
            reader.next_record_in(&mut scratch)?
        } else {
            reader.next_record_into(&mut place)?
        };
        match record {
            Record::PagesPlaced { gpa, len } if by_write => {
                let at = file_offset(&mem, gpa, len)?;
                memfd
                    .write_all_at(&scratch[..len as usize], at)
                    .map_err(|e| anyhow!("writing guest memory at {gpa:#x}: {e}"))?;
                records += 1;
            }
            Record::PagesPlaced { .. } => records += 1,
            Record::Pages { gpa, data } => {
                in_memory(&mem, gpa, data.len() as u64)?;
                mem.write_slice(&data, GuestAddress(gpa))
                    .map_err(|e| anyhow!("writing guest memory at {gpa:#x}: {e}"))?;
                records += 1;
            }
            Record::Zeroes { gpa, pages } => {
                let len = pages
                    .checked_mul(4096)
                    .ok_or_else(|| anyhow!("a zeroed range too long"))?;
                in_memory(&mem, gpa, len)?;
                if by_write {
                    punch(&memfd, file_offset(&mem, gpa, len)?, len)?;
                    records += 1;
                    continue;
                }
                let mut at = 0;
                while at < len {
                    let n = (len - at).min(zero.len() as u64);
                    mem.write_slice(&zero[..n as usize], GuestAddress(gpa + at))
                        .map_err(|e| anyhow!("zeroing guest memory: {e}"))?;
                    at += n;
                }
                records += 1;
            }
            Record::State(json) => {
                let state: MachineState = serde_json::from_slice(&json)
                    .map_err(|e| anyhow!("the machine's state: {e}"))?;
                break state;
            }
            Record::Hello(_) => bail!("a second hello"),
            Record::End(_) => bail!("the stream ended before the machine's state"),
            Record::Disk { disk, offset, data } => disks.write(disk, offset, &data)?,
            Record::DiskZeroes { disk, offset, len } => disks.zero(disk, offset, len)?,
            Record::Commit => bail!("a commit before the machine's state"),
        }
    };
    match reader.next_record()? {
        Record::End(e) if e.page_records == records && e.disk_records == disks.records => {}
        Record::End(e) => bail!(
            "the stream sent {records} page and {} disk records, and its end says {} and {}",
            disks.records,
            e.page_records,
            e.disk_records
        ),
        _ => bail!("the machine's state is not followed by the end"),
    }
    disks.sync()?;
    Ok((state, mem, memfd))
}

/// The incoming machine, received and built paused (`built`), is
/// announced with `running` and let run once the source commits. Any
/// failure reaches the source, and no machine is left behind.
pub(crate) fn announce(conn: &mut Conn, built: Result<vmm::Vm>, paused: bool) -> Result<vmm::Vm> {
    let vm = match built {
        Ok(vm) => vm,
        Err(e) => {
            let _ = Reply::Error {
                error: crate::one_line(&e),
            }
            .write(conn);
            return Err(e.context("incoming migration"));
        }
    };
    let committed = Reply::Running
        .write(conn)
        .map_err(anyhow::Error::from)
        .and_then(|()| {
            conn.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
            match Reader::resume(&mut *conn).next_record()? {
                Record::Commit => Ok(()),
                _ => bail!("the source sent something else than its commit"),
            }
        });
    if let Err(e) = committed {
        vm.destroy();
        return Err(e.context("the source did not commit (it keeps the VM)"));
    }
    if !paused {
        vm.resume();
    }
    Ok(vm)
}

/// Where `[gpa, gpa + len)` is in the memfd behind guest memory; the
/// range must be wholly in one region.
fn file_offset(mem: &GuestMemory, gpa: u64, len: u64) -> Result<u64> {
    in_memory(mem, gpa, len)?;
    let r = mem
        .find_region(GuestAddress(gpa))
        .ok_or_else(|| anyhow!("a page record outside guest memory ({gpa:#x})"))?;
    let inside = gpa - r.start_addr().0;
    if inside + len > r.len() {
        bail!("a page record across two memory regions ({gpa:#x} + {len})");
    }
    let base = r
        .file_offset()
        .ok_or_else(|| anyhow!("guest memory without its file"))?
        .start();
    Ok(base + inside)
}

/// Frees the memfd's pages in a range, which then read as zero.
fn punch(memfd: &File, at: u64, len: u64) -> Result<()> {
    let (Ok(off), Ok(n)) = (i64::try_from(at), i64::try_from(len)) else {
        bail!("a zeroed range too long");
    };
    // SAFETY: fallocate on our own memfd; no memory is passed.
    let r = unsafe {
        libc::fallocate(
            memfd.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            n,
        )
    };
    if r < 0 {
        bail!("zeroing guest memory: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Refuses a range that is not wholly in guest RAM.
fn in_memory(mem: &GuestMemory, gpa: u64, len: u64) -> Result<()> {
    let ok = usize::try_from(len)
        .ok()
        .is_some_and(|l| mem.check_range(GuestAddress(gpa), l));
    if !ok {
        bail!("a page record outside guest memory ({gpa:#x} + {len})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages written into the memfd show through guest memory's mapping,
    /// and a punched range reads as zero there again.
    #[test]
    fn written_and_punched_pages_show_in_guest_memory() {
        let (mem, memfd) = vmm::memory::create("recv-test", 4 << 20).unwrap();
        let page = vec![0x5au8; 8192];
        let at = file_offset(&mem, 0x10_0000, 8192).unwrap();
        memfd.write_all_at(&page, at).unwrap();
        let mut back = vec![0u8; 8192];
        mem.read_slice(&mut back, GuestAddress(0x10_0000)).unwrap();
        assert_eq!(back, page);
        punch(&memfd, at, 4096).unwrap();
        mem.read_slice(&mut back, GuestAddress(0x10_0000)).unwrap();
        assert!(back[..4096].iter().all(|&b| b == 0));
        assert!(back[4096..].iter().all(|&b| b == 0x5a));
        assert!(file_offset(&mem, (4 << 20) - 4096, 8192).is_err());
    }
}
