//! The destination's side of a live migration. The foreground `vm-run
//! start --incoming FD` reads the hello (the spec, the guest's CPU
//! features) and checks this host before anything else moves; the VM
//! process then makes guest memory, says `ready`, takes the pages and the
//! state, builds the machine from them and says `running`. The guest runs
//! only once the whole stream has arrived and checked; on any error the
//! source hears it and the partial VM is discarded.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use vmm::memory::GuestMemory;
use vmm::state::stream::{stream_of, Hello, Reader, Record, Reply};
use vmm::state::MachineState;

use super::storage::Targets;
use super::{on_every_stream, Conn, Streams};

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

/// The further streams of a migration the hello says comes over
/// several (none for one): each connection to `listener` must open with
/// a join that shows the hello's token and names a stream not yet taken;
/// any other is closed. Waits at most [`JOIN_WAIT`] in all.
pub(crate) fn joins(hello: &Hello, listener: Option<OwnedFd>) -> Result<Vec<Conn>> {
    let n = hello.streams;
    if n <= 1 {
        return Ok(Vec::new());
    }
    if n as usize > super::MAX_STREAMS {
        bail!(
            "the source sends over {n} streams (at most {})",
            super::MAX_STREAMS
        );
    }
    if hello.token.len() < 32 {
        bail!("the source's token for its further streams is too short");
    }
    let Some(listener) = listener else {
        bail!(
            "the source sends over {n} streams and this destination takes one \
             (vm-migrate send --streams 1, or receive on tcp: or unix:)"
        );
    };
    let deadline = Instant::now() + JOIN_WAIT;
    let mut got: Vec<Option<Conn>> = (1..n).map(|_| None).collect();
    let mut strangers = 0;
    loop {
        let missing = got.iter().filter(|c| c.is_none()).count();
        if missing == 0 {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(fd) = accept(&listener, left)? else {
            bail!(
                "{missing} of the source's {n} streams did not arrive within {} s",
                JOIN_WAIT.as_secs()
            );
        };
        let mut conn = Conn::from_fd(fd)?;
        // A connection gets a second in all to show its join, however
        // slowly it sends: the timeout is set again before every read.
        let until = Until {
            conn: &mut conn,
            at: Instant::now() + left.min(Duration::from_secs(1)),
        };
        match Reader::new(until).and_then(|mut r| r.next_record()) {
            Ok(Record::Join(j))
                if j.token == hello.token
                    && (1..n).contains(&j.stream)
                    && got[j.stream as usize - 1].is_none() =>
            {
                conn.set_read_timeout(None)?;
                got[j.stream as usize - 1] = Some(conn);
            }
            _ => {
                strangers += 1;
                if strangers > 64 {
                    bail!("too many connections that are not the source's streams");
                }
            }
        }
    }
    Ok(got.into_iter().flatten().collect())
}

/// Reads `conn` until `at`, in all: each read may wait only for what is
/// left of the time.
struct Until<'a> {
    conn: &'a mut Conn,
    at: Instant,
}

impl Read for Until<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.conn.set_read_timeout(Some(left))?;
        self.conn.read(buf)
    }
}

/// How long the further streams of a migration may take to join.
const JOIN_WAIT: Duration = Duration::from_secs(10);

/// One connection from `listener` within `wait`, or None.
fn accept(listener: &OwnedFd, wait: Duration) -> Result<Option<OwnedFd>> {
    let mut p = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = wait.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one pollfd, which lives for the call.
    let r = unsafe { libc::poll(&raw mut p, 1, ms) };
    if r < 0 {
        return Err(std::io::Error::last_os_error()).context("waiting for the source's streams");
    }
    if r == 0 {
        return Ok(None);
    }
    // SAFETY: accept4 with no address wanted; the new descriptor is ours.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("taking the source's streams");
    }
    // SAFETY: accept4 just returned it to us.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// In the VM process: guest memory for `size` bytes, `ready`, then every
/// record up to the end, on every stream at once (a thread for each
/// further stream). Returns the state and the filled memory (with its
/// memfd for huge pages).
/// Disk contents land in `disks` (storage migration), synced once the
/// end has arrived.
pub(crate) fn receive(
    conns: &mut [Conn],
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
    let n = conns.len() as u32;
    // To wake every stream's thread when one fails.
    let wake = conns
        .iter()
        .map(Conn::try_clone)
        .collect::<std::io::Result<Vec<_>>>()?;
    let Some((first, rest)) = conns.split_first_mut() else {
        bail!("a migration with no stream");
    };
    Reply::Ready.write(first).context("answering the source")?;
    let memory = &mem;
    let rest: Vec<_> = rest
        .iter_mut()
        .zip(1..)
        .map(|(c, k)| {
            move |_: &Streams| {
                further(c, k, n, memory).with_context(|| format!("stream {k} of the migration"))
            }
        })
        .collect();
    let state = on_every_stream(
        |_| {
            let state = first_stream(first, n, memory, disks)?;
            // Each further stream ends before the first sends the state:
            // a stream that says no more now is not coming.
            for c in &wake[1..] {
                let _ = c.set_read_timeout(Some(JOIN_WAIT));
            }
            Ok(state)
        },
        rest,
        || stop_reading(&wake),
    )?;
    disks.sync()?;
    Ok((state, mem, memfd))
}

/// Wakes every stream's reader after a failure; the first stream stays
/// open for the error's reply to the source.
fn stop_reading(streams: &[Conn]) {
    for (k, c) in streams.iter().enumerate() {
        if k == 0 {
            c.shutdown_read();
        } else {
            c.shutdown();
        }
    }
}

/// The first stream: pages of its chunks, disk ranges, then the state
/// and the end.
fn first_stream(
    conn: &mut Conn,
    n: u32,
    mem: &GuestMemory,
    disks: &mut Targets,
) -> Result<MachineState> {
    let mut reader = Reader::resume(&mut *conn);
    let mut pages = Pages::new(mem, 0, n);
    let state = loop {
        match pages.next(&mut reader)? {
            None => {}
            Some(Record::State(json)) => {
                // The state follows the last copy of every page.
                pages.all_whole()?;
                let state: MachineState = serde_json::from_slice(&json)
                    .map_err(|e| anyhow!("the machine's state: {e}"))?;
                break state;
            }
            Some(Record::Hello(_)) => bail!("a second hello"),
            Some(Record::End(_)) => bail!("the stream ended before the machine's state"),
            Some(Record::Disk { disk, offset, data }) => disks.write(disk, offset, &data)?,
            Some(Record::DiskZeroes { disk, offset, len }) => disks.zero(disk, offset, len)?,
            Some(Record::Commit) => bail!("a commit before the machine's state"),
            Some(Record::Join(_)) => bail!("a join on the first stream"),
            Some(r) => bail!("an unexpected record: {r:?}"),
        }
    };
    let records = pages.records;
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
    Ok(state)
}

/// A further stream (`k` of `n`): pages of its chunks, then its end.
fn further(conn: &mut Conn, k: u32, n: u32, mem: &GuestMemory) -> Result<()> {
    let mut reader = Reader::resume(&mut *conn);
    let mut pages = Pages::new(mem, k, n);
    loop {
        match pages.next(&mut reader)? {
            None => {}
            Some(Record::End(e)) if e.page_records == pages.records && e.disk_records == 0 => {
                return pages.all_whole();
            }
            Some(Record::End(e)) => bail!(
                "it sent {} page records, and its end says {} page and {} disk records",
                pages.records,
                e.page_records,
                e.disk_records
            ),
            Some(r) => bail!("only pages and the end travel here, not {}", kind(&r)),
        }
    }
}

fn kind(r: &Record) -> &'static str {
    match r {
        Record::Hello(_) => "a hello",
        Record::State(_) => "the state",
        Record::Disk { .. } | Record::DiskZeroes { .. } => "disk records",
        Record::Commit => "the commit",
        Record::Join(_) => "a join",
        _ => "this record",
    }
}

/// The pages one stream carries into guest memory: where they may land
/// (the stream's own chunks when there are several) and which arrived
/// torn.
struct Pages<'m> {
    mem: &'m GuestMemory,
    stream: u32,
    streams: u32,
    records: u64,
    /// Pages that arrived torn and have not yet come again whole.
    owed: Owed,
}

impl<'m> Pages<'m> {
    fn new(mem: &'m GuestMemory, stream: u32, streams: u32) -> Self {
        Self {
            mem,
            stream,
            streams,
            records: 0,
            owed: Owed::default(),
        }
    }

    /// Refuses a range outside guest RAM, or (with several streams) one
    /// that is not wholly in a chunk of this stream.
    fn check(&self, gpa: u64, len: u64) -> vmm::Result<()> {
        let in_ram = usize::try_from(len)
            .ok()
            .is_some_and(|l| self.mem.check_range(GuestAddress(gpa), l));
        if !in_ram {
            return Err(vmm::Error::Stream(format!(
                "a page record outside guest memory ({gpa:#x} + {len})"
            )));
        }
        if self.streams > 1 && stream_of(gpa, len, self.streams) != Some(self.stream) {
            return Err(vmm::Error::Stream(format!(
                "a page record ({gpa:#x} + {len}) on stream {} that belongs elsewhere",
                self.stream
            )));
        }
        Ok(())
    }

    /// Reads the next record; page records are placed and counted here
    /// (None), any other is handed back.
    fn next<R: std::io::Read>(&mut self, reader: &mut Reader<R>) -> Result<Option<Record>> {
        let mem = self.mem;
        // Pages land straight in guest memory. No vCPU exists yet, and
        // each stream's thread writes only its own chunks (checked), so
        // the slice handed to the reader is ours alone; a record that
        // fails its checksum ends the migration, and the memory with it.
        let mut place = |gpa: u64, len: usize| -> vmm::Result<Option<&mut [u8]>> {
            self.check(gpa, len as u64)?;
            let slice = mem
                .get_slice(GuestAddress(gpa), len)
                .map_err(|e| vmm::Error::Stream(format!("guest memory at {gpa:#x}: {e}")))?;
            // SAFETY: see above: the range is in guest RAM and one mapping
            // (checked), and no other thread reads or writes it while this
            // slice lives.
            Ok(Some(unsafe {
                std::slice::from_raw_parts_mut(slice.ptr_guard_mut().as_ptr(), len)
            }))
        };
        let rec = reader.next_record_into(&mut place)?;
        match rec {
            Record::PagesPlaced { gpa, len } => self.owed.clear(gpa, len),
            Record::PagesTorn { gpa, len, torn } => {
                self.owed.clear(gpa, len);
                for page in torn {
                    self.owed.set(page, 4096);
                }
            }
            Record::Pages { gpa, data } => {
                self.check(gpa, data.len() as u64)?;
                mem.write_slice(&data, GuestAddress(gpa))
                    .map_err(|e| anyhow!("writing guest memory at {gpa:#x}: {e}"))?;
                self.owed.clear(gpa, data.len() as u64);
            }
            Record::Zeroes { gpa, pages } => {
                let len = pages
                    .checked_mul(4096)
                    .ok_or_else(|| anyhow!("a zeroed range too long"))?;
                self.check(gpa, len)?;
                let zero = [0u8; 4096];
                let mut at = 0;
                while at < len {
                    mem.write_slice(&zero, GuestAddress(gpa + at))
                        .map_err(|e| anyhow!("zeroing guest memory: {e}"))?;
                    at += 4096;
                }
                self.owed.clear(gpa, len);
            }
            other => return Ok(Some(other)),
        }
        self.records += 1;
        Ok(None)
    }

    /// Every page that arrived torn has come again whole.
    fn all_whole(&self) -> Result<()> {
        if let Some(gpa) = self.owed.first() {
            bail!("the page at {gpa:#x} failed its checksum, and no whole copy came after it");
        }
        Ok(())
    }
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
