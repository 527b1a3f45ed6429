//! The saved-VM file: a header page (magic, version, where the state and
//! each memory run are, checksums), the spec and machine state as JSON,
//! guest memory as one page-aligned run per RAM region with zero pages
//! left as holes (so a restore maps it straight from the file), and a
//! trailer page with the memory's checksum.
//!
//! Everything read from a file is checked before use: the file is as
//! hostile as any image header (a planted or corrupted file must not get
//! a VM started from it).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use super::MachineState;
use crate::memory::GuestMemory;
use crate::{Error, Result};

pub const MAGIC: &[u8; 8] = b"VMTSAVE\n";
const TRAILER_MAGIC: &[u8; 8] = b"VMTEND\n\0";
/// The format this code writes and reads.
pub const VERSION: u32 = 1;
const PAGE: u64 = 4096;
/// RAM regions a file may name (a VM has one or two).
const MAX_RUNS: usize = 8;
/// A state bigger than this is not ours (a 255-vCPU VM's is a few MiB).
const MAX_STATE: u64 = 64 << 20;
/// Guest memory written in pieces of at most this much.
const WRITE_CHUNK: usize = 8 << 20;
const HEADER_CRC_AT: usize = PAGE as usize - 4;

/// Where one RAM region's bytes are in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRun {
    pub guest_addr: u64,
    pub len: u64,
    pub file_offset: u64,
}

/// What a saved file holds besides memory.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Saved {
    pub spec: vm_spec::VmSpec,
    pub machine: MachineState,
}

/// A saved file, checked and read (memory stays in the file).
#[derive(Debug)]
pub struct Opened {
    pub saved: Saved,
    pub runs: Vec<MemoryRun>,
    pub file: File,
    /// The trailer's memory checksum and non-zero page count.
    memory_crc: u32,
    memory_pages: u64,
}

/// What a save wrote and how long it took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteStats {
    /// Bytes of guest memory.
    pub memory_bytes: u64,
    /// Bytes of it that were not zero, and so written.
    pub written_bytes: u64,
    pub state_bytes: u64,
    /// The file's length (holes included).
    pub file_bytes: u64,
    pub write_ms: u64,
    /// Time in fsync; 0 when the save was not made durable.
    pub sync_ms: u64,
}

fn bad(what: impl Into<String>) -> Error {
    Error::SavedFile(what.into())
}

fn align_up(v: u64) -> u64 {
    v.div_ceil(PAGE) * PAGE
}

fn put64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn put32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn get64(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}
fn get32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

/// The memory checksum: CRC-32 over each non-zero page, led by its guest
/// address, in address order. Holes and zero pages add nothing, so the
/// writer and `verify` get the same sum without reading zeroes.
#[derive(Debug, Default)]
struct MemorySum {
    crc: crc32fast::Hasher,
    pages: u64,
}

impl MemorySum {
    fn add(&mut self, guest_addr: u64, page: &[u8]) {
        self.crc.update(&guest_addr.to_le_bytes());
        self.crc.update(page);
        self.pages += 1;
    }
}

/// O_DIRECT on the save file while guest memory is written.
#[derive(Debug)]
struct DirectIo {
    on: bool,
}

impl DirectIo {
    fn set(file: &File, on: bool) -> bool {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        // SAFETY: fcntl on a descriptor we hold; no memory is passed.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return false;
        }
        let want = if on {
            flags | libc::O_DIRECT
        } else {
            flags & !libc::O_DIRECT
        };
        // SAFETY: as above.
        unsafe { libc::fcntl(fd, libc::F_SETFL, want) == 0 }
    }

    fn enable(file: &File) -> Self {
        Self {
            on: Self::set(file, true),
        }
    }

    fn disable(&mut self, file: &File) {
        if self.on {
            Self::set(file, false);
            self.on = false;
        }
    }

    /// Writes `buf` at `at`; a write O_DIRECT refuses (EINVAL: alignment
    /// the file system wants bigger) turns it off and goes buffered.
    fn write_all_at(&mut self, file: &File, buf: &[u8], at: u64) -> std::io::Result<()> {
        match file.write_all_at(buf, at) {
            Err(e) if self.on && e.raw_os_error() == Some(libc::EINVAL) => {
                self.disable(file);
                file.write_all_at(buf, at)
            }
            r => r,
        }
    }
}

/// Writes the VM into `file` (empty, opened for writing): the caller has
/// paused it. `memfd` is the descriptor behind guest memory when there is
/// one. Pages never touched (a memfd's holes, anonymous pages never
/// mapped) are skipped without reading them.
/// With `fsync` the file is on stable storage when this returns.
pub fn write(
    file: &File,
    saved: &Saved,
    mem: &GuestMemory,
    memfd: Option<&File>,
    fsync: bool,
) -> Result<WriteStats> {
    let started = Instant::now();
    let state = serde_json::to_vec(saved).map_err(|e| bad(format!("encoding the state: {e}")))?;
    let io = |what: &'static str| Error::io(format!("saved file: {what}"));
    let mut runs = Vec::new();
    let mut at = align_up(PAGE + state.len() as u64);
    let mut regions = Vec::new();
    for region in mem.iter() {
        runs.push(MemoryRun {
            guest_addr: region.start_addr().0,
            len: region.len(),
            file_offset: at,
        });
        regions.push(region);
        at = align_up(at + region.len());
    }
    if runs.len() > MAX_RUNS {
        return Err(bad(format!("{} memory regions", runs.len())));
    }
    let trailer_at = at;
    file.set_len(trailer_at + PAGE).map_err(io("sizing"))?;
    file.write_all_at(&state, PAGE)
        .map_err(io("writing the state"))?;

    let mut sum = MemorySum::default();
    let mut written = 0u64;
    // Guest memory goes to the file with O_DIRECT where the file system
    // takes it: pages and offsets are page-aligned, and a buffered write
    // spends most of its time filling the page cache (six times slower
    // on the development machine). Anything refused falls back to
    // buffered writes; the state, trailer and header always go buffered.
    let mut direct = DirectIo::enable(file);
    for (run, region) in runs.iter().zip(&regions) {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| Error::Memory(e.to_string()))?;
        // SAFETY: the region is a live mapping of `len` bytes that the VM
        // keeps while it exists; its vCPUs and device loops are paused, so
        // nothing writes it while this slice is read.
        let bytes = unsafe { std::slice::from_raw_parts(host.cast_const(), region.len() as usize) };
        let extents = crate::memory::region_extents(region, memfd);
        for (start, end) in extents {
            let mut page = start;
            while page < end {
                // A run of non-zero pages, up to WRITE_CHUNK.
                let first = page;
                while page < end && (page - first) < WRITE_CHUNK as u64 {
                    let p = &bytes[page as usize..(page + PAGE) as usize];
                    if crate::memory::is_zero(p) {
                        break;
                    }
                    sum.add(run.guest_addr + page, p);
                    page += PAGE;
                }
                if page > first {
                    let chunk = &bytes[first as usize..page as usize];
                    direct
                        .write_all_at(file, chunk, run.file_offset + first)
                        .map_err(io("writing guest memory"))?;
                    written += page - first;
                } else {
                    page += PAGE;
                }
            }
        }
    }
    direct.disable(file);
    let mut trailer = [0u8; PAGE as usize];
    trailer[..8].copy_from_slice(TRAILER_MAGIC);
    put32(&mut trailer, 8, sum.crc.clone().finalize());
    put64(&mut trailer, 16, sum.pages);
    let tcrc = crc32fast::hash(&trailer[..24]);
    put32(&mut trailer, 24, tcrc);
    file.write_all_at(&trailer, trailer_at)
        .map_err(io("writing the trailer"))?;

    let mut header = [0u8; PAGE as usize];
    header[..8].copy_from_slice(MAGIC);
    put32(&mut header, 8, VERSION);
    put64(&mut header, 16, PAGE);
    put64(&mut header, 24, state.len() as u64);
    put32(&mut header, 32, crc32fast::hash(&state));
    put32(&mut header, 36, runs.len() as u32);
    put64(&mut header, 40, trailer_at);
    for (i, r) in runs.iter().enumerate() {
        let at = 48 + i * 24;
        put64(&mut header, at, r.guest_addr);
        put64(&mut header, at + 8, r.len);
        put64(&mut header, at + 16, r.file_offset);
    }
    let hcrc = crc32fast::hash(&header[..HEADER_CRC_AT]);
    put32(&mut header, HEADER_CRC_AT, hcrc);
    file.write_all_at(&header, 0)
        .map_err(io("writing the header"))?;
    let write_ms = started.elapsed().as_millis() as u64;
    let mut sync_ms = 0;
    if fsync {
        let t = Instant::now();
        file.sync_all().map_err(io("fsync"))?;
        sync_ms = t.elapsed().as_millis() as u64;
    }
    Ok(WriteStats {
        memory_bytes: runs.iter().map(|r| r.len).sum(),
        written_bytes: written,
        state_bytes: state.len() as u64,
        file_bytes: trailer_at + PAGE,
        write_ms,
        sync_ms,
    })
}

/// Reads and checks a saved file's header, state and trailer (not its
/// memory: see [`verify_memory`]).
pub fn open(file: File) -> Result<Opened> {
    let len = file.metadata().map_err(Error::io("saved file"))?.len();
    let mut header = [0u8; PAGE as usize];
    if len < 2 * PAGE {
        return Err(bad(format!("{len} bytes: too short to be a saved VM")));
    }
    file.read_exact_at(&mut header, 0)
        .map_err(Error::io("reading the saved file's header"))?;
    if &header[..8] != MAGIC {
        return Err(bad("not a saved VM (no vmtools save magic)"));
    }
    let version = get32(&header, 8);
    if version > VERSION {
        return Err(Error::SavedFileVersion(version));
    }
    if version == 0 {
        return Err(bad("format version 0"));
    }
    if crc32fast::hash(&header[..HEADER_CRC_AT]) != get32(&header, HEADER_CRC_AT) {
        return Err(bad("the header's checksum does not match (corrupted)"));
    }
    let state_at = get64(&header, 16);
    let state_len = get64(&header, 24);
    let trailer_at = get64(&header, 40);
    let count = get32(&header, 36) as usize;
    if state_len > MAX_STATE || count == 0 || count > MAX_RUNS {
        return Err(bad("the header is out of bounds"));
    }
    if trailer_at % PAGE != 0
        || trailer_at.checked_add(PAGE) != Some(len)
        || state_at < PAGE
        || state_at.saturating_add(state_len) > trailer_at
    {
        return Err(bad(format!(
            "{len} bytes where the header describes {}: truncated or corrupted",
            trailer_at.saturating_add(PAGE)
        )));
    }
    let mut runs = Vec::with_capacity(count);
    let mut end = align_up(state_at + state_len);
    for i in 0..count {
        let at = 48 + i * 24;
        let r = MemoryRun {
            guest_addr: get64(&header, at),
            len: get64(&header, at + 8),
            file_offset: get64(&header, at + 16),
        };
        if r.file_offset % PAGE != 0
            || r.len % PAGE != 0
            || r.guest_addr % PAGE != 0
            || r.file_offset < end
            || r.file_offset.saturating_add(r.len) > trailer_at
        {
            return Err(bad(format!("memory run {i} is out of bounds")));
        }
        end = r.file_offset + r.len;
        runs.push(r);
    }
    let mut state = vec![0u8; state_len as usize];
    file.read_exact_at(&mut state, state_at)
        .map_err(Error::io("reading the saved state"))?;
    if crc32fast::hash(&state) != get32(&header, 32) {
        return Err(bad("the state's checksum does not match (corrupted)"));
    }
    let mut trailer = [0u8; 32];
    file.read_exact_at(&mut trailer, trailer_at)
        .map_err(Error::io("reading the saved file's trailer"))?;
    if &trailer[..8] != TRAILER_MAGIC || crc32fast::hash(&trailer[..24]) != get32(&trailer, 24) {
        return Err(bad("the trailer is missing or corrupted"));
    }
    let saved: Saved = serde_json::from_slice(&state)
        .map_err(|e| bad(format!("the state does not parse: {e}")))?;
    saved
        .spec
        .validate()
        .map_err(|e| bad(format!("the saved spec: {e}")))?;
    Ok(Opened {
        saved,
        runs,
        file,
        memory_crc: get32(&trailer, 8),
        memory_pages: get64(&trailer, 16),
    })
}

/// Reads all of the saved memory and checks it against the trailer's
/// checksum; returns the number of non-zero pages.
pub fn verify_memory(o: &Opened) -> Result<u64> {
    let mut sum = MemorySum::default();
    let mut buf = vec![0u8; WRITE_CHUNK];
    for r in &o.runs {
        // Pages below this were summed (extents of small-block file
        // systems can share a page).
        let mut next = 0;
        for (start, end) in
            crate::memory::data_extents(&o.file, r.file_offset, r.file_offset + r.len)
        {
            let mut at = (start / PAGE * PAGE).max(next);
            while at < end {
                let n = (end - at).min(WRITE_CHUNK as u64) as usize;
                let n = n.div_ceil(PAGE as usize) * PAGE as usize;
                o.file
                    .read_exact_at(&mut buf[..n], at)
                    .map_err(Error::io("reading saved memory"))?;
                for (i, page) in buf[..n].chunks_exact(PAGE as usize).enumerate() {
                    if !crate::memory::is_zero(page) {
                        sum.add(r.guest_addr + at - r.file_offset + (i as u64) * PAGE, page);
                    }
                }
                at += n as u64;
            }
            next = at;
        }
    }
    if sum.crc.finalize() != o.memory_crc || sum.pages != o.memory_pages {
        return Err(bad("guest memory does not match its checksum (corrupted)"));
    }
    Ok(sum.pages)
}
