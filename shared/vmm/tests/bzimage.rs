//! A real bzImage (Debian's kernel, fetched by scripts/fetch-test-kernel
//! and named by VMTOOLS_TEST_BZIMAGE) loads as the Linux boot protocol
//! says: protected-mode code at 1 MiB, the 64-bit entry 0x200 into it, a
//! zero page with our loader fields, command line, initrd and e820 map. It
//! is loaded, not run (Linux does not boot usefully under this machine's
//! nested KVM; see the opt-in boot test in vm-run).

use std::path::PathBuf;

use linux_loader::bootparam::boot_params;
use vm_memory::{Bytes, GuestAddress};
use vmm::boot::{self, BootConfig, Entry};
use vmm::layout::{CMDLINE_ADDR, HIMEM_START, ZERO_PAGE_ADDR};

fn bzimage() -> Option<PathBuf> {
    // scripts/fetch-test-kernel fetches one.
    let p = std::env::var_os("VMTOOLS_TEST_BZIMAGE").map(PathBuf::from);
    test_guest::available("bzimage", p.is_some()).then(|| p.expect("checked"))
}

#[test]
fn debian_bzimage_loads_by_the_boot_protocol() {
    let Some(kernel) = bzimage() else { return };
    let image = std::fs::read(&kernel).unwrap();
    assert_eq!(&image[0x202..0x206], b"HdrS", "a bzImage");
    let setup_sects = usize::from(if image[0x1f1] == 0 { 4 } else { image[0x1f1] });
    let version = u16::from_le_bytes([image[0x206], image[0x207]]);
    assert!(version >= 0x20c, "boot protocol 2.12+ for a 64-bit entry");

    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initrd.img");
    std::fs::write(&initrd, vec![0x5au8; 123_456]).unwrap();
    let mem_size = 256 << 20;
    let (mem, _fd) = vmm::memory::create("bzimage-test", mem_size).unwrap();
    let cmdline = "console=ttyS0 panic=-1 reboot=k";
    let entry = boot::load(
        &mem,
        mem_size,
        &BootConfig {
            kernel: kernel.clone(),
            initrd: Some(initrd),
            cmdline: cmdline.into(),
            vcpus: 2,
            ..BootConfig::default()
        },
    )
    .unwrap();
    assert_eq!(
        entry,
        Entry::Linux64 {
            rip: HIMEM_START + 0x200,
            zero_page: ZERO_PAGE_ADDR
        }
    );
    // The protected-mode kernel sits at 1 MiB, byte for byte.
    let pm = &image[(setup_sects + 1) * 512..];
    let mut loaded = vec![0u8; pm.len()];
    mem.read_slice(&mut loaded, GuestAddress(HIMEM_START))
        .unwrap();
    assert!(loaded == pm, "kernel image at 1 MiB");
    // The zero page.
    let p: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_ADDR)).unwrap();
    let hdr = p.hdr;
    assert_eq!({ hdr.boot_flag }, 0xaa55);
    assert_eq!({ hdr.header }, 0x5372_6448);
    assert_eq!(hdr.type_of_loader, 0xff);
    assert_eq!(
        { hdr.version },
        version,
        "the kernel's own setup header was kept"
    );
    assert_eq!(u64::from(hdr.cmd_line_ptr), CMDLINE_ADDR);
    assert_eq!({ hdr.ramdisk_size }, 123_456);
    let rd = u64::from(hdr.ramdisk_image);
    assert_eq!(rd % 4096, 0);
    assert!(rd + 123_456 <= mem_size);
    let mut first = [0u8; 4];
    mem.read_slice(&mut first, GuestAddress(rd)).unwrap();
    assert_eq!(first, [0x5a; 4], "initrd contents");
    assert_eq!(p.e820_entries, 3);
    let e = p.e820_table;
    assert_eq!(
        (e[2].addr, e[2].size, e[2].r#type),
        (HIMEM_START, mem_size - HIMEM_START, 1)
    );
    let mut cl = vec![0u8; cmdline.len() + 1];
    mem.read_slice(&mut cl, GuestAddress(CMDLINE_ADDR)).unwrap();
    assert_eq!(&cl[..cmdline.len()], cmdline.as_bytes());
    assert_eq!(cl[cmdline.len()], 0);
    // And the MP table for the two CPUs.
    let mut mp = [0u8; 4];
    mem.read_slice(&mut mp, GuestAddress(vmm::layout::MPTABLE_ADDR))
        .unwrap();
    assert_eq!(&mp, b"_MP_");
}
