//! Boots the test guest on the real /dev/kvm.

use std::path::PathBuf;
use std::time::Duration;

use vmm::devices::SerialOut;
use vmm::vcpu::VcpuEvent;
use vmm::{Vm, VmConfig};

mod common;

use test_guest::{have_kvm, kvm_lock};

fn config(cmdline: &str, vcpus: u8) -> VmConfig {
    common::config("boot-test", cmdline, vcpus)
}

fn boot(
    cmdline: &str,
    vcpus: u8,
    wait: Duration,
) -> (Vm, Option<VcpuEvent>, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("console.log");
    let f = std::fs::File::create(&log).unwrap();
    let vm = Vm::start(&config(cmdline, vcpus), SerialOut::File(f)).unwrap();
    let ev = vm.wait_event(Some(wait));
    let out = std::fs::read_to_string(&log).unwrap();
    (vm, ev, out, dir)
}

#[test]
fn hello_then_reset() {
    if !have_kvm() {
        return;
    }
    let _lock = kvm_lock();
    for vcpus in [1, 2] {
        let (vm, ev, out, _d) = boot("mode=hello", vcpus, Duration::from_secs(30));
        assert_eq!(ev, Some(VcpuEvent::Reset), "console: {out}");
        assert!(out.contains("vmtools test guest: hello"), "{out}");
        vm.destroy();
    }
}

/// The long-mode path: a 64-bit ELF without a PVH note starts in long mode
/// on our page tables and GDT.
#[test]
fn elf64_entry_boots_in_long_mode() {
    if !have_kvm() {
        return;
    }
    let _lock = kvm_lock();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("console.log");
    let mut cfg = config("", 1);
    cfg.boot.kernel = PathBuf::from(test_guest::GUEST64_ELF);
    let vm = Vm::start(&cfg, SerialOut::File(std::fs::File::create(&log).unwrap())).unwrap();
    let ev = vm.wait_event(Some(Duration::from_secs(30)));
    let out = std::fs::read_to_string(&log).unwrap();
    assert_eq!(ev, Some(VcpuEvent::Reset), "console: {out}");
    assert_eq!(out, "vmtools test guest (64-bit entry): hello\n");
    vm.destroy();
}

#[test]
fn triple_fault_is_a_crash() {
    if !have_kvm() {
        return;
    }
    let _lock = kvm_lock();
    let (vm, ev, out, _d) = boot("mode=crash", 1, Duration::from_secs(30));
    assert!(matches!(ev, Some(VcpuEvent::Crash(_))), "{ev:?} {out}");
    vm.destroy();
}

/// Pause must stop a vCPU that never leaves KVM_RUN on its own.
#[test]
fn pause_stops_the_heartbeat_and_resume_restarts_it() {
    if !have_kvm() {
        return;
    }
    let _lock = kvm_lock();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("console.log");
    let f = std::fs::File::create(&log).unwrap();
    let vm = Vm::start(&config("mode=heartbeat", 2), SerialOut::File(f)).unwrap();
    let ticks = || {
        std::fs::read_to_string(&log)
            .unwrap()
            .matches("tick")
            .count()
    };
    let wait_for = |n: usize| {
        let t0 = std::time::Instant::now();
        while ticks() < n {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "heartbeat too slow: {}",
                ticks()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(2);
    vm.pause().unwrap();
    let paused_at = ticks();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(ticks(), paused_at, "no ticks while paused");
    vm.resume();
    wait_for(paused_at + 2);
    // Ctrl-Alt-Del on IRQ 1: the guest answers with the reset line.
    vm.ctrl_alt_del();
    assert_eq!(
        vm.wait_event(Some(Duration::from_secs(30))),
        Some(VcpuEvent::Reset)
    );
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("ctrl-alt-del: going down"));
    vm.destroy();

    // A guest in cli; hlt never exits to us: pause and destroy still work.
    let f = std::fs::File::create(&log).unwrap();
    let vm = Vm::start(&config("mode=cli-hlt", 1), SerialOut::File(f)).unwrap();
    let t0 = std::time::Instant::now();
    while !std::fs::read_to_string(&log).unwrap().contains("halting") {
        assert!(t0.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(10));
    }
    vm.pause().unwrap();
    vm.resume();
    vm.destroy();
}

/// The test guest is not Linux: it gets its virtio-mmio devices on the
/// command line (Linux finds them through ACPI).
#[test]
fn the_test_guest_is_not_linux() {
    assert!(!vmm::boot::is_linux(std::path::Path::new(
        test_guest::GUEST_ELF
    )));
}
