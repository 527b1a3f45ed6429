//! The destination's side of a live migration. The foreground `vm-run
//! start --incoming FD` reads the hello (the spec, the guest's CPU
//! features) and checks this host before anything else moves; the VM
//! process then makes guest memory, says `ready`, takes the pages and the
//! state, builds the machine from them and says `running`. The guest runs
//! only once the whole stream has arrived and checked; on any error the
//! source hears it and the partial VM is discarded.

use std::fs::File;

use anyhow::{anyhow, bail, Context, Result};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use vmm::memory::GuestMemory;
use vmm::state::stream::{Hello, Reader, Record, Reply};
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
/// record up to the end. Returns the state and the filled memory (with
/// its memfd for huge pages).
/// Disk contents land in `disks` (storage migration), synced once the
/// end has arrived.
pub(crate) fn receive(
    conn: &mut Conn,
    cfg: &vmm::VmConfig,
    disks: &mut Targets,
) -> Result<(MachineState, GuestMemory, Option<File>)> {
    // Normal pages: anonymous memory with huge pages advised, which the
    // stream fills in one copy (docs/vm-migrate.md, "Destination memory").
    // Huge pages from the pool stay a hugetlbfs memfd.
    let (mem, memfd) = if cfg.hugepages.is_some() {
        let (m, f) = vmm::memory::create_with(&cfg.name, cfg.memory, cfg.hugepages)?;
        (m, Some(f))
    } else {
        (vmm::memory::create_anonymous(cfg.memory)?, None)
    };
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
    // Pages that arrived torn and have not yet come again whole.
    let mut owed = Owed::default();
    let state = loop {
        match reader.next_record_into(&mut place)? {
            Record::PagesPlaced { gpa, len } => {
                owed.clear(gpa, len);
                records += 1;
            }
            Record::PagesTorn { gpa, len, torn } => {
                owed.clear(gpa, len);
                for page in torn {
                    owed.set(page, 4096);
                }
                records += 1;
            }
            Record::Pages { gpa, data } => {
                in_memory(&mem, gpa, data.len() as u64)?;
                mem.write_slice(&data, GuestAddress(gpa))
                    .map_err(|e| anyhow!("writing guest memory at {gpa:#x}: {e}"))?;
                owed.clear(gpa, data.len() as u64);
                records += 1;
            }
            Record::Zeroes { gpa, pages } => {
                let len = pages
                    .checked_mul(4096)
                    .ok_or_else(|| anyhow!("a zeroed range too long"))?;
                in_memory(&mem, gpa, len)?;
                let mut at = 0;
                while at < len {
                    let n = (len - at).min(zero.len() as u64);
                    mem.write_slice(&zero[..n as usize], GuestAddress(gpa + at))
                        .map_err(|e| anyhow!("zeroing guest memory: {e}"))?;
                    at += n;
                }
                owed.clear(gpa, len);
                records += 1;
            }
            Record::State(json) => {
                // The state follows the last copy of every page.
                if let Some(gpa) = owed.first() {
                    bail!(
                        "the page at {gpa:#x} failed its checksum, and no whole copy came after it"
                    );
                }
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

/// Guest pages whose latest copy arrived torn (it changed while the
/// source read it, or was damaged on the way), by page number. Each
/// must come again whole before the state: the source's dirty log
/// resends a page the guest wrote, and a page no one wrote never tears.
#[derive(Debug, Default)]
struct Owed {
    bits: std::collections::BTreeMap<u64, u64>,
}

impl Owed {
    const PAGE: u64 = 4096;

    /// Marks `[gpa, gpa + len)` owed (already checked to lie in memory).
    /// A later torn copy owes again what a whole one had paid.
    fn set(&mut self, gpa: u64, len: u64) {
        for p in gpa / Self::PAGE..(gpa + len).div_ceil(Self::PAGE) {
            *self.bits.entry(p / 64).or_default() |= 1 << (p % 64);
        }
    }

    /// A whole copy of `[gpa, gpa + len)` arrived.
    fn clear(&mut self, gpa: u64, len: u64) {
        // Nothing owed is the common case: a lookup per record, no more.
        if self.bits.is_empty() {
            return;
        }
        let (first, end) = (gpa / Self::PAGE, (gpa + len).div_ceil(Self::PAGE));
        let words: Vec<u64> = self
            .bits
            .range(first / 64..=(end - 1) / 64)
            .map(|(&w, _)| w)
            .collect();
        for w in words {
            let Some(bits) = self.bits.get_mut(&w) else {
                continue;
            };
            for p in (w * 64).max(first)..((w + 1) * 64).min(end) {
                *bits &= !(1 << (p % 64));
            }
            if *bits == 0 {
                self.bits.remove(&w);
            }
        }
    }

    /// The address of the lowest page still owed.
    fn first(&self) -> Option<u64> {
        let (&w, &bits) = self.bits.iter().next()?;
        Some((w * 64 + u64::from(bits.trailing_zeros())) * Self::PAGE)
    }
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
    use super::Owed;

    #[test]
    fn owed_pages_are_paid_by_any_whole_copy() {
        let mut o = Owed::default();
        assert_eq!(o.first(), None);
        // A torn run of 256 pages across two words, paid in two parts
        // that do not line up with it.
        o.set(0x10_0000, 256 * 4096);
        assert_eq!(o.first(), Some(0x10_0000));
        o.clear(0x0f_f000, 10 * 4096);
        assert_eq!(o.first(), Some(0x10_9000));
        o.clear(0x10_9000, 246 * 4096);
        assert_eq!(o.first(), Some(0x1f_f000));
        // A later torn copy owes again what a whole one had paid.
        o.set(0x10_0000, 4096);
        assert_eq!(o.first(), Some(0x10_0000));
        o.clear(0x10_0000, 4096);
        o.clear(0x1f_f000, 4096);
        assert_eq!(o.first(), None);
        assert!(o.bits.is_empty());
    }
}
