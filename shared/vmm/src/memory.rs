//! Guest memory: one memfd, mapped through vm-memory with a FileOffset per
//! region, so the same mapping later serves mbind, save (write the file),
//! restore (map a saved file) and migration.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::FromRawFd;

use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap};

use crate::layout::ram_ranges;
use crate::{Error, Result};

pub type GuestMemory = GuestMemoryMmap<()>;

/// Total RAM of the host, to refuse a guest that cannot fit.
pub fn host_memory() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    (pages.max(0) as u64).saturating_mul(page.max(0) as u64)
}

/// Refuses a guest larger than the host's RAM.
fn fits_host(size: u64) -> Result<()> {
    let available = host_memory();
    if size > available {
        return Err(Error::MemoryTooLarge {
            requested: size,
            available,
        });
    }
    Ok(())
}

/// Free pages in the host's pool of `page`-byte huge pages.
pub fn free_hugepages(page: u64) -> u64 {
    let path = format!(
        "/sys/kernel/mm/hugepages/hugepages-{}kB/free_hugepages",
        page / 1024
    );
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Creates `size` bytes of guest memory backed by a new memfd named after
/// the VM: from the hugepage pool when `hugepages` names a page size (the
/// pool must hold all of it: a short pool is an error now rather than a
/// SIGBUS later), else normal pages with transparent huge pages advised.
/// Pages are allocated by the kernel on first touch.
pub fn create_with(name: &str, size: u64, hugepages: Option<u64>) -> Result<(GuestMemory, File)> {
    if let Some(page) = hugepages {
        let need = size.div_ceil(page);
        let free = free_hugepages(page);
        if free < need {
            return Err(Error::Memory(format!(
                "hugepages: {need} pages of {} KiB needed, the pool has {free} free \
                 (raise /sys/kernel/mm/hugepages/hugepages-{}kB/nr_hugepages)",
                page / 1024,
                page / 1024
            )));
        }
    }
    let (mem, file) = create_inner(name, size, hugepages)?;
    if hugepages.is_none() {
        advise_huge(&mem);
    }
    Ok((mem, file))
}

/// Creates `size` bytes of anonymous guest memory, transparent huge pages
/// advised: the memory a migration's destination fills. A memfd's pages
/// come from shmem, which default hosts (`shmem_enabled=never`) give no
/// huge pages: each 4 KiB page then costs an allocation, a charge and an
/// LRU insertion, three times what copying it in costs. Anonymous memory
/// takes huge pages under the default `enabled=madvise`, as QEMU's RAM
/// does. Untouched pages read as zero; [`region_extents`] finds the rest.
pub fn create_anonymous(size: u64) -> Result<GuestMemory> {
    fits_host(size)?;
    let ranges: Vec<(GuestAddress, usize)> = ram_ranges(size)
        .into_iter()
        .map(|(start, len)| (GuestAddress(start), len as usize))
        .collect();
    let mem = GuestMemoryMmap::from_ranges(&ranges).map_err(|e| Error::Memory(e.to_string()))?;
    advise_huge(&mem);
    Ok(mem)
}

/// Advises transparent huge pages over every region.
fn advise_huge(mem: &GuestMemory) {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    for region in mem.iter() {
        if let Ok(host) = region.get_host_address(vm_memory::MemoryRegionAddress(0)) {
            // SAFETY: advice on a mapping we own, of its own length; it
            // changes no contents.
            unsafe { libc::madvise(host.cast(), region.len() as usize, libc::MADV_HUGEPAGE) };
        }
    }
}

/// Creates `size` bytes of guest memory (normal pages).
pub fn create(name: &str, size: u64) -> Result<(GuestMemory, File)> {
    create_with(name, size, None)
}

fn create_inner(name: &str, size: u64, hugepages: Option<u64>) -> Result<(GuestMemory, File)> {
    fits_host(size)?;
    let cname =
        CString::new(format!("vmtools-{name}")).map_err(|e| Error::Memory(e.to_string()))?;
    let flags = match hugepages {
        // MFD_HUGE_SHIFT = 26: the page size's log2 goes in bits 26..31.
        Some(page) => libc::MFD_CLOEXEC | libc::MFD_HUGETLB | (page.trailing_zeros() << 26),
        None => libc::MFD_CLOEXEC,
    };
    // SAFETY: memfd_create reads the NUL-terminated name we pass, which lives
    // for the call; on success we own the returned descriptor.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), flags) };
    if fd < 0 {
        return Err(Error::io("memfd_create")(std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size)
        .map_err(Error::io("sizing guest memory"))?;
    let mut ranges = Vec::new();
    let mut file_off = 0u64;
    for (start, len) in ram_ranges(size) {
        let f = file.try_clone().map_err(Error::io("guest memory fd"))?;
        ranges.push((
            GuestAddress(start),
            len as usize,
            Some(FileOffset::new(f, file_off)),
        ));
        file_off += len;
    }
    let mem = GuestMemoryMmap::from_ranges_with_files(ranges)
        .map_err(|e| Error::Memory(e.to_string()))?;
    Ok((mem, file))
}

/// NUMA memory policies (the spec's numatune modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumaPolicy {
    /// MPOL_BIND: only these nodes.
    Strict,
    /// MPOL_PREFERRED: this node first.
    Preferred,
    /// MPOL_INTERLEAVE: pages spread over the nodes.
    Interleave,
}

/// Applies `policy` over `nodes` to all of guest memory. Called before the
/// first touch, so every page is placed by it.
pub fn bind(mem: &GuestMemory, policy: NumaPolicy, nodes: &[u32]) -> Result<()> {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    const MPOL_PREFERRED: libc::c_int = 1;
    const MPOL_BIND: libc::c_int = 2;
    const MPOL_INTERLEAVE: libc::c_int = 3;
    let mode = match policy {
        NumaPolicy::Strict => MPOL_BIND,
        NumaPolicy::Preferred => MPOL_PREFERRED,
        NumaPolicy::Interleave => MPOL_INTERLEAVE,
    };
    let max = nodes.iter().copied().max().unwrap_or(0) as usize + 1;
    let mut mask = vec![0u64; max.div_ceil(64)];
    for &n in nodes {
        mask[n as usize / 64] |= 1 << (n % 64);
    }
    for region in mem.iter() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| Error::Memory(e.to_string()))?;
        // SAFETY: mbind on a mapping we own, of the region's length, with a
        // node mask of `mask.len() * 64` bits that lives for the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mbind,
                host,
                region.len() as usize,
                mode,
                mask.as_ptr(),
                mask.len() * 64 + 1,
                0,
            )
        };
        if r < 0 {
            return Err(Error::io("mbind (numatune)")(
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// Guest memory as a saved file holds it.
#[derive(Debug)]
pub struct Saved {
    pub file: File,
    pub runs: Vec<crate::state::file::MemoryRun>,
}

/// Guest memory for a restore: each RAM region mapped privately from the
/// saved file (copy-on-write: pages load as the guest touches them, and
/// clones of one file share what neither wrote), so the time taken does
/// not grow with memory size. With huge pages the saved memory is read
/// into a new hugepage memfd instead (slower: every byte is copied).
/// Returns the memory and the file behind it.
pub fn restore(
    name: &str,
    size: u64,
    hugepages: Option<u64>,
    from: &Saved,
) -> Result<(GuestMemory, File)> {
    let want = ram_ranges(size);
    let matches = want.len() == from.runs.len()
        && want
            .iter()
            .zip(&from.runs)
            .all(|(&(addr, len), r)| r.guest_addr == addr && r.len == len);
    if !matches {
        return Err(Error::State(format!(
            "the saved memory does not match the spec's {size} bytes"
        )));
    }
    let file = from.file.try_clone().map_err(Error::io("saved memory"))?;
    if hugepages.is_some() {
        let (mem, memfd) = create_with(name, size, hugepages)?;
        copy_in(&mem, from)?;
        return Ok((mem, memfd));
    }
    let mut regions = Vec::new();
    for r in &from.runs {
        let f = file.try_clone().map_err(Error::io("saved memory"))?;
        let mapping = vm_memory::MmapRegion::build(
            Some(FileOffset::new(f, r.file_offset)),
            r.len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_NORESERVE | libc::MAP_PRIVATE,
        )
        .map_err(|e| Error::Memory(e.to_string()))?;
        let region = vm_memory::GuestRegionMmap::new(mapping, GuestAddress(r.guest_addr))
            .ok_or_else(|| Error::Memory("a saved region overflows".into()))?;
        regions.push(region);
    }
    let mem = GuestMemoryMmap::from_regions(regions).map_err(|e| Error::Memory(e.to_string()))?;
    Ok((mem, file))
}

/// Reads the saved memory into `mem` (the hugepage restore).
fn copy_in(mem: &GuestMemory, from: &Saved) -> Result<()> {
    use std::os::unix::fs::FileExt;
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    for (region, r) in mem.iter().zip(&from.runs) {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| Error::Memory(e.to_string()))?;
        // SAFETY: the region is a fresh mapping of `len` bytes that nothing
        // else uses yet (no vCPU exists).
        let bytes = unsafe { std::slice::from_raw_parts_mut(host, region.len() as usize) };
        for chunk in (0..r.len).step_by(8 << 20) {
            let n = (r.len - chunk).min(8 << 20) as usize;
            let dst = &mut bytes[chunk as usize..chunk as usize + n];
            from.file
                .read_exact_at(dst, r.file_offset + chunk)
                .map_err(Error::io("reading saved memory"))?;
        }
    }
    Ok(())
}

/// True when the page holds only zeroes. Read as 16-byte words: at the
/// release build's size-first opt-level a byte-wise fold stayed byte by
/// byte, 12.6 ms per 256 MiB against 3 ms this way (`zero_check_speed`).
pub fn is_zero(page: &[u8]) -> bool {
    let mut blocks = page.chunks_exact(64);
    blocks.all(|c| {
        c.chunks_exact(16).fold(0u128, |a, w| {
            a | u128::from_ne_bytes(w.try_into().expect("16 bytes"))
        }) == 0
    }) && blocks.remainder().iter().all(|&b| b == 0)
}

/// The data extents of `file` within `start..end` (SEEK_DATA/SEEK_HOLE);
/// the whole range where the file system cannot say.
pub fn data_extents(file: &File, start: u64, end: u64) -> Vec<(u64, u64)> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        // SAFETY: lseek on a descriptor we hold; no memory is passed.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // no data after pos
            }
            return vec![(start, end)];
        }
        let data = data as u64;
        if data >= end {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data as libc::off_t, libc::SEEK_HOLE) };
        let hole = if hole < 0 {
            end
        } else {
            (hole as u64).min(end)
        };
        out.push((data, hole));
        pos = hole;
    }
    out
}

/// The guest ranges that may hold data, as (guest address, length); see
/// [`region_extents`].
pub fn touched_ranges(mem: &GuestMemory, memfd: Option<&File>) -> Vec<(u64, u64)> {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    let mut out = Vec::new();
    for r in mem.iter() {
        let gpa = r.start_addr().0;
        for (s, e) in region_extents(r, memfd) {
            out.push((gpa + s, e - s));
        }
    }
    out
}

/// The parts of a region that may hold data, as (start, end) offsets in
/// it: with a memfd behind guest memory, its data extents (pages never
/// touched are holes); for anonymous memory, the pages in memory or
/// swapped out (the rest were never written); a region mapped from a
/// saved file, whole.
pub fn region_extents(r: &vm_memory::GuestRegionMmap<()>, memfd: Option<&File>) -> Vec<(u64, u64)> {
    use vm_memory::GuestMemoryRegion;
    match (memfd, r.file_offset()) {
        (Some(f), Some(fo)) => {
            let off = fo.start();
            data_extents(f, off, off + r.len())
                .into_iter()
                .map(|(s, e)| (s - off, e - off))
                .collect()
        }
        (None, None) => r
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .ok()
            .and_then(|host| mapped_extents(host as usize, r.len()))
            .unwrap_or_else(|| vec![(0, r.len())]),
        _ => vec![(0, r.len())],
    }
}

/// The pages of our anonymous mapping at `host` (`len` bytes) that are
/// present or swapped out, from /proc/self/pagemap (bits 63 and 62, which
/// need no privilege), as (start, end) offsets. A page the guest wrote is
/// one or the other; a page never touched is neither and reads as zero.
/// `None` when the map cannot be read.
fn mapped_extents(host: usize, len: u64) -> Option<Vec<(u64, u64)>> {
    use std::os::unix::fs::FileExt;
    const PAGE: u64 = 4096;
    const HELD: u64 = (1 << 63) | (1 << 62);
    let map = File::open("/proc/self/pagemap").ok()?;
    let first = host as u64 / PAGE;
    let pages = len / PAGE;
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024 * 8];
    let mut done = 0u64;
    while done < pages {
        let n = (pages - done).min(64 * 1024);
        let bytes = &mut buf[..(n * 8) as usize];
        map.read_exact_at(bytes, (first + done) * 8).ok()?;
        for (i, e) in bytes.chunks_exact(8).enumerate() {
            let entry = u64::from_le_bytes(e.try_into().expect("8 bytes"));
            if entry & HELD == 0 {
                continue;
            }
            let at = (done + i as u64) * PAGE;
            match out.last_mut() {
                Some(last) if last.1 == at => last.1 = at + PAGE,
                _ => out.push((at, at + PAGE)),
            }
        }
        done += n;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend};

    /// In anonymous memory, the pages written are found and a range never
    /// touched is not (huge pages may widen what is found, never narrow it).
    /// What the zero check costs against the byte-wise fold it replaced
    /// and a page checksum, over 256 MiB of non-zero pages (printed, not
    /// asserted: `cargo test --release -p vmm --lib -- --ignored
    /// --nocapture zero_check_speed`).
    #[test]
    #[ignore = "a timing, run by hand in a release build"]
    fn zero_check_speed() {
        let mem: Vec<u8> = (0..256usize << 20).map(|i| (i % 251) as u8 | 1).collect();
        let bytewise = |p: &[u8]| {
            p.chunks_exact(64)
                .all(|c| c.iter().fold(0u8, |a, &b| a | b) == 0)
        };
        let time = |f: &dyn Fn(&[u8]) -> bool| {
            let t = std::time::Instant::now();
            let n = mem.chunks(4096).filter(|p| f(p)).count();
            assert_eq!(n, 0);
            t.elapsed()
        };
        for _ in 0..3 {
            let wide = time(&|p| is_zero(p));
            let old = time(&bytewise);
            let sum = time(&|p| crate::state::stream::page_sum(p) == 0);
            eprintln!(
                "256 MiB: is_zero {wide:?}, byte-wise {old:?} ({:.1}x), page sums {sum:?}",
                old.as_secs_f64() / wide.as_secs_f64()
            );
        }
    }

    #[test]
    fn zero_pages_are_told_from_any_other() {
        let mut page = vec![0u8; 4096];
        assert!(is_zero(&page));
        for at in [0, 15, 16, 63, 64, 2047, 4095] {
            page[at] = 1;
            assert!(!is_zero(&page), "a byte at {at}");
            page[at] = 0;
        }
        // A length that is not whole 64-byte blocks: the rest counts too.
        let mut odd = vec![0u8; 4100];
        assert!(is_zero(&odd));
        odd[4099] = 0x80;
        assert!(!is_zero(&odd));
    }

    #[test]
    fn anonymous_memory_extents_hold_every_written_page() {
        let mem = create_anonymous(64 << 20).unwrap();
        let region = mem.iter().next().unwrap();
        assert!(
            region_extents(region, None).is_empty(),
            "nothing written yet"
        );
        let written = [0x1000_u64, 0x20_0000, 0x3f0_0000];
        for &at in &written {
            mem.write_slice(&[0x5a; 4096], GuestAddress(at)).unwrap();
        }
        let extents = region_extents(region, None);
        for at in written {
            assert!(
                extents.iter().any(|&(s, e)| s <= at && at + 4096 <= e),
                "{at:#x} not in {extents:x?}"
            );
        }
        let untouched = 0x200_0000_u64;
        assert!(
            !extents
                .iter()
                .any(|&(s, e)| s <= untouched && untouched < e),
            "{untouched:#x} in {extents:x?}"
        );
    }
}
