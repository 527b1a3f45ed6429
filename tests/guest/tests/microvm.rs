//! The same guest file boots in QEMU's microvm, so figures can be taken
//! side by side.

use std::process::Command;

use test_guest::{have_kvm, have_tool, kvm_lock, GUEST_ELF};

/// QEMU's command line for the guest, as the benchmark uses it too.
fn microvm(cmdline: &str) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-M",
        "microvm,acpi=off",
        "-accel",
        "kvm",
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-m",
        "64M",
        "-serial",
        "stdio",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-kernel",
        GUEST_ELF,
        "-append",
        cmdline,
    ]);
    c
}

#[test]
fn guest_boots_in_qemu_microvm() {
    if !have_kvm() || !have_tool("qemu-system", "qemu-system-x86_64") {
        return;
    }
    let _l = kvm_lock();
    let out = microvm("mode=hello").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("vmtools test guest: hello"), "{stdout}");
    // isa-debug-exit: status (value << 1) | 1 for the guest's 0.
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The guest's virtio-blk driver against QEMU's own virtio-blk: what it
/// reads matches the file, what it writes lands in it. This judges the
/// driver independently of vm-run's device.
#[test]
fn the_blk_driver_works_against_qemu() {
    if !have_kvm() || !have_tool("qemu-system", "qemu-system-x86_64") {
        return;
    }
    let _l = kvm_lock();
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("d.raw");
    let data = test_guest::pattern(0x00ba_5e00, 1 << 20);
    std::fs::write(&disk, &data).unwrap();
    let drive = format!("id=d0,file={},format=raw,if=none", disk.display());
    let run = |mode: &str| {
        let out = microvm(&format!("mode={mode}"))
            .args(["-drive", &drive])
            .args(["-device", "virtio-blk-device,drive=d0,serial=qemu-disk"])
            .args(["-global", "virtio-mmio.force-legacy=false"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = run("blk-read sector=10 count=8");
    let want = format!("{:08x}", test_guest::fnv(&data[10 * 512..18 * 512]));
    assert!(
        out.contains(&format!(
            "capacity=2048 ro=0 serial=qemu-disk status=0 sum={want}"
        )),
        "{out}"
    );
    let out = run("blk-write sector=4 count=2 seed=9");
    assert!(out.contains("status=0 flush=0 read=0 verify=ok"), "{out}");
    let now = std::fs::read(&disk).unwrap();
    assert_eq!(&now[4 * 512..6 * 512], &test_guest::pattern(9, 1024)[..]);
    assert_eq!(&now[..4 * 512], &data[..4 * 512], "nothing else changed");
}
