//! Direct kernel boot without firmware: an ELF with a PVH note (32-bit
//! entry, as QEMU's -kernel), a 64-bit ELF (vmlinux), or a bzImage, with a
//! command line and an initrd. We write the boot structures ourselves:
//! PVH start info and memory map, or the Linux zero page with its e820
//! map; GDT, page tables and MP table.

pub mod gdt;
pub mod mptable;
pub mod paging;

use std::fs::File;
use std::path::{Path, PathBuf};

use linux_loader::bootparam::boot_params;
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::layout::{
    ram_ranges, CMDLINE_ADDR, CMDLINE_MAX, EBDA_START, HIMEM_START, MMIO_HOLE_START, PVH_INFO_ADDR,
    PVH_MEMMAP_ADDR, ZERO_PAGE_ADDR,
};
use crate::memory::GuestMemory;
use crate::{Error, Result};

/// How the boot vCPU starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// 32-bit protected mode, paging off, %ebx = start info.
    Pvh { rip: u64, start_info: u64 },
    /// 64-bit long mode on identity page tables, %rsi = zero page.
    Linux64 { rip: u64, zero_page: u64 },
}

#[derive(Debug, Clone, Default)]
pub struct BootConfig {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub vcpus: u8,
    /// The virtio-mmio devices the ACPI tables describe (the VM fills it).
    pub mmio_devices: Vec<crate::acpi::MmioDevice>,
    /// Guest NUMA nodes (an SRAT and a SLIT); none: one node.
    pub numa_nodes: Vec<crate::acpi::NumaNode>,
}

/// True when `kernel` is Linux: a bzImage, or an ELF carrying Linux's own
/// note. Linux finds virtio-mmio devices through ACPI; other kernels (the
/// test guest) read them from the command line.
pub fn is_linux(kernel: &Path) -> bool {
    use std::os::unix::fs::FileExt;
    let Ok(f) = open_regular(kernel) else {
        return false;
    };
    let mut eh = [0u8; 64];
    if f.read_exact_at(&mut eh, 0).is_err() {
        return false;
    }
    if &eh[..4] != b"\x7fELF" {
        // Not ELF: a bzImage ("HdrS" at 0x202) is Linux.
        let mut hdr = [0u8; 4];
        return f.read_exact_at(&mut hdr, 0x202).is_ok() && &hdr == b"HdrS";
    }
    if eh[4] != 2 {
        return false;
    }
    let u16_at = |b: &[u8], o: usize| u64::from(u16::from_le_bytes([b[o], b[o + 1]]));
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
    let (phoff, phentsize, phnum) = (u64_at(&eh, 32), u16_at(&eh, 54), u16_at(&eh, 56));
    let mut ph = [0u8; 56];
    for i in 0..phnum.min(64) {
        if phentsize < 56 || f.read_exact_at(&mut ph, phoff + i * phentsize).is_err() {
            return false;
        }
        if u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]) != 4 {
            continue; // not PT_NOTE
        }
        let (off, size) = (u64_at(&ph, 8), u64_at(&ph, 32).min(1 << 16));
        let mut notes = vec![0u8; size as usize];
        if f.read_exact_at(&mut notes, off).is_err() {
            continue;
        }
        let mut at = 0usize;
        while at + 12 <= notes.len() {
            let w = |o: usize| {
                u32::from_le_bytes(notes[o..o + 4].try_into().unwrap_or([0; 4])) as usize
            };
            let (namesz, descsz) = (w(at), w(at + 4));
            let name = notes.get(at + 12..at + 12 + namesz).unwrap_or_default();
            if name == b"Linux\0" {
                return true;
            }
            at += 12 + namesz.next_multiple_of(4) + descsz.next_multiple_of(4);
        }
    }
    false
}

/// e820 types.
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;

/// The guest's memory map: low RAM, the reserved BIOS area, RAM from 1 MiB.
pub fn memory_map(mem_size: u64) -> Vec<(u64, u64, u32)> {
    let mut map = vec![
        (0, EBDA_START, E820_RAM),
        (EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED),
    ];
    for (start, len) in ram_ranges(mem_size) {
        if start == 0 {
            map.push((HIMEM_START, len - HIMEM_START, E820_RAM));
        } else {
            map.push((start, len, E820_RAM));
        }
    }
    map
}

fn kernel_err(path: &Path, message: &impl ToString) -> Error {
    Error::Kernel {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Opens a kernel or initrd: a regular file only. The open does not wait
/// (a FIFO would block it forever) and the type is checked before any read.
fn open_regular(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(f)
}

/// An ELF kernel must load something: a header whose program table holds
/// no loadable bytes (or is cut off) would start the guest on garbage.
fn check_elf_loads(f: &File) -> std::result::Result<(), String> {
    use std::os::unix::fs::FileExt;
    let mut eh = [0u8; 64];
    f.read_exact_at(&mut eh, 0)
        .map_err(|_| "ELF header is cut off".to_string())?;
    let u16_at = |b: &[u8], o: usize| u64::from(u16::from_le_bytes([b[o], b[o + 1]]));
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
    if eh[4] != 2 {
        // 32-bit ELF: linux-loader refuses it with its own message.
        return Ok(());
    }
    let (phoff, phentsize, phnum) = (u64_at(&eh, 32), u16_at(&eh, 54), u16_at(&eh, 56));
    if phentsize < 56 {
        return Err("ELF program header table is malformed".into());
    }
    let mut ph = vec![0u8; 56];
    let mut loaded = 0u64;
    for i in 0..phnum {
        f.read_exact_at(&mut ph, phoff.saturating_add(i * phentsize))
            .map_err(|_| "ELF program header table is cut off".to_string())?;
        if u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]) == 1 {
            loaded = loaded.saturating_add(u64_at(&ph, 32));
        }
    }
    if loaded == 0 {
        return Err("ELF file has no loadable segment".into());
    }
    Ok(())
}

/// Loads the kernel, command line and initrd; writes the boot structures.
pub fn load(mem: &GuestMemory, mem_size: u64, cfg: &BootConfig) -> Result<Entry> {
    let mut f = open_regular(&cfg.kernel).map_err(|e| kernel_err(&cfg.kernel, &e))?;
    let elf = Elf::load(mem, None, &mut f, Some(GuestAddress(HIMEM_START)));
    if elf.is_ok() {
        check_elf_loads(&f).map_err(|m| kernel_err(&cfg.kernel, &m))?;
    }
    let (entry_kind, result) = match elf {
        Ok(r) => (Some(r.pvh_boot_cap), r),
        Err(linux_loader::loader::Error::Elf(
            linux_loader::loader::elf::Error::InvalidElfMagicNumber,
        )) => {
            let r = BzImage::load(mem, None, &mut f, Some(GuestAddress(HIMEM_START)))
                .map_err(|e| kernel_err(&cfg.kernel, &format!("neither ELF nor bzImage: {e}")))?;
            (None, r)
        }
        Err(e) => return Err(kernel_err(&cfg.kernel, &e)),
    };
    if cfg.cmdline.len() + 1 > CMDLINE_MAX {
        return Err(Error::Boot(format!(
            "command line is longer than {CMDLINE_MAX} bytes"
        )));
    }
    let mut cmd = cfg.cmdline.clone().into_bytes();
    cmd.push(0);
    mem.write_slice(&cmd, GuestAddress(CMDLINE_ADDR))
        .map_err(|e| Error::Boot(format!("command line: {e}")))?;
    let initrd = match &cfg.initrd {
        Some(p) => Some(load_initrd(mem, mem_size, p, result.kernel_end)?),
        None => None,
    };
    mptable::write(mem, cfg.vcpus, crate::layout::MPTABLE_ADDR)?;
    // ACPI for kernels that want it; the MP table stays for `acpi=off`.
    let rsdp = crate::acpi::write(mem, cfg.vcpus, &cfg.mmio_devices, &cfg.numa_nodes, mem_size)?;
    match entry_kind {
        Some(PvhBootCapability::PvhEntryPresent(rip)) => {
            write_pvh_info(mem, mem_size, initrd, rsdp)?;
            Ok(Entry::Pvh {
                rip: rip.0,
                start_info: PVH_INFO_ADDR,
            })
        }
        Some(_) => {
            // A 64-bit ELF vmlinux: entry at its ELF entry point.
            write_zero_page(mem, mem_size, None, cmd.len(), initrd, rsdp)?;
            Ok(Entry::Linux64 {
                rip: result.kernel_load.0,
                zero_page: ZERO_PAGE_ADDR,
            })
        }
        None => {
            // bzImage: the 64-bit entry is 0x200 into the protected-mode code.
            write_zero_page(mem, mem_size, result.setup_header, cmd.len(), initrd, rsdp)?;
            Ok(Entry::Linux64 {
                rip: result.kernel_load.0 + 0x200,
                zero_page: ZERO_PAGE_ADDR,
            })
        }
    }
}

/// Puts the initrd at the top of low RAM (below the MMIO hole), page
/// aligned, above the kernel. Returns (address, size).
fn load_initrd(
    mem: &GuestMemory,
    mem_size: u64,
    path: &Path,
    kernel_end: u64,
) -> Result<(u64, u64)> {
    let err = |m: String| Error::Initrd {
        path: path.to_path_buf(),
        message: m,
    };
    let mut f = open_regular(path).map_err(|e| err(e.to_string()))?;
    let size = f.metadata().map_err(|e| err(e.to_string()))?.len();
    let top = mem_size.min(MMIO_HOLE_START);
    let addr = top
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|&a| a >= kernel_end)
        .ok_or_else(|| {
            err(format!(
                "{size} bytes do not fit in guest memory above the kernel"
            ))
        })?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut f, size as usize)
        .map_err(|e| err(e.to_string()))?;
    Ok((addr, size))
}

fn write_pvh_info(
    mem: &GuestMemory,
    mem_size: u64,
    initrd: Option<(u64, u64)>,
    rsdp: u64,
) -> Result<()> {
    let map = memory_map(mem_size);
    let mut entries = Vec::new();
    for (addr, size, kind) in &map {
        entries.extend_from_slice(&addr.to_le_bytes());
        entries.extend_from_slice(&size.to_le_bytes());
        entries.extend_from_slice(&kind.to_le_bytes());
        entries.extend_from_slice(&0u32.to_le_bytes());
    }
    let mods_addr = PVH_MEMMAP_ADDR + entries.len() as u64;
    let mut info = Vec::with_capacity(56);
    info.extend_from_slice(&0x336e_c578u32.to_le_bytes()); // magic
    info.extend_from_slice(&1u32.to_le_bytes()); // version
    info.extend_from_slice(&0u32.to_le_bytes()); // flags
    info.extend_from_slice(&u32::from(initrd.is_some()).to_le_bytes());
    info.extend_from_slice(&(if initrd.is_some() { mods_addr } else { 0 }).to_le_bytes());
    info.extend_from_slice(&CMDLINE_ADDR.to_le_bytes());
    info.extend_from_slice(&rsdp.to_le_bytes());
    info.extend_from_slice(&PVH_MEMMAP_ADDR.to_le_bytes());
    info.extend_from_slice(&(map.len() as u32).to_le_bytes());
    info.extend_from_slice(&0u32.to_le_bytes());
    let w = |bytes: &[u8], at: u64| {
        mem.write_slice(bytes, GuestAddress(at))
            .map_err(|e| Error::Boot(format!("PVH start info: {e}")))
    };
    w(&info, PVH_INFO_ADDR)?;
    w(&entries, PVH_MEMMAP_ADDR)?;
    if let Some((addr, size)) = initrd {
        let mut m = Vec::with_capacity(32);
        m.extend_from_slice(&addr.to_le_bytes());
        m.extend_from_slice(&size.to_le_bytes());
        m.extend_from_slice(&[0; 16]);
        w(&m, mods_addr)?;
    }
    Ok(())
}

fn write_zero_page(
    mem: &GuestMemory,
    mem_size: u64,
    setup: Option<linux_loader::bootparam::setup_header>,
    cmd_len: usize,
    initrd: Option<(u64, u64)>,
    rsdp: u64,
) -> Result<()> {
    let mut p = boot_params {
        acpi_rsdp_addr: rsdp,
        ..boot_params::default()
    };
    if let Some(h) = setup {
        p.hdr = h;
    }
    p.hdr.type_of_loader = 0xff;
    p.hdr.boot_flag = 0xaa55;
    p.hdr.header = 0x5372_6448; // "HdrS"
    p.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    p.hdr.cmdline_size = cmd_len as u32;
    p.hdr.kernel_alignment = 0x0100_0000;
    if let Some((addr, size)) = initrd {
        p.hdr.ramdisk_image = addr as u32;
        p.hdr.ramdisk_size = size as u32;
    }
    let map = memory_map(mem_size);
    if map.len() > p.e820_table.len() {
        return Err(Error::Boot("too many e820 entries".into()));
    }
    for (i, (addr, size, kind)) in map.iter().enumerate() {
        p.e820_table[i].addr = *addr;
        p.e820_table[i].size = *size;
        p.e820_table[i].r#type = *kind;
    }
    p.e820_entries = map.len() as u8;
    mem.write_obj(p, GuestAddress(ZERO_PAGE_ADDR))
        .map_err(|e| Error::Boot(format!("zero page: {e}")))
}

/// The highest guest address (for tests and sanity checks).
pub fn last_addr(mem: &GuestMemory) -> u64 {
    mem.last_addr().0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux is told apart by its ELF note (vmlinux) or its setup header
    /// (bzImage); the test guest is not Linux.
    #[test]
    fn linux_kernels_are_recognised() {
        for (var, linux) in [
            ("VMTOOLS_TEST_VMLINUX", true),
            ("VMTOOLS_TEST_BZIMAGE", true),
        ] {
            if let Some(p) = std::env::var_os(var) {
                assert_eq!(is_linux(Path::new(&p)), linux, "{var}");
            } else {
                eprintln!("SKIP ({var} not set): Debian's kernel");
            }
        }
        let d = std::env::temp_dir().join(format!("not-linux-{}", std::process::id()));
        std::fs::write(&d, b"\x7fELF not really").unwrap();
        assert!(!is_linux(&d));
        std::fs::remove_file(&d).unwrap();
    }

    #[test]
    fn e820_reserves_the_bios_area_and_skips_the_hole() {
        let m = memory_map(64 << 20);
        assert_eq!(m[0], (0, 0x9_fc00, 1));
        assert_eq!(m[1], (0x9_fc00, 0x10_0000 - 0x9_fc00, 2));
        assert_eq!(m[2], (0x10_0000, (64 << 20) - 0x10_0000, 1));
        let big = memory_map(5 << 30);
        assert_eq!(big[3], (4 << 30, 2 << 30, 1));
    }
}
