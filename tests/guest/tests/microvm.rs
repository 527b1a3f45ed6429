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
