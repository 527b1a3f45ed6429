//! Opt-in: boots a real Linux kernel (VMTOOLS_LINUX_KERNEL names a bzImage
//! or vmlinux; VMTOOLS_LINUX_INITRD optionally an initramfs) on a machine
//! with hardware KVM. The kernel must print its banner on ttyS0 and end
//! the run: with no init it panics, `panic=-1` reboots at once, and
//! `on_reboot: destroy` makes vm-run exit 0. Under nested, emulating KVM
//! (the development machine) Linux does not get far enough; the test is
//! off unless the variable is set.

use std::process::Command;
use std::time::Duration;

#[test]
fn linux_boots_to_its_banner_and_reboots() {
    let Some(kernel) = std::env::var_os("VMTOOLS_LINUX_KERNEL") else {
        eprintln!("SKIP: VMTOOLS_LINUX_KERNEL is not set (opt-in Linux boot test)");
        return;
    };
    let _l = test_guest::kvm_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut boot = serde_json::json!({
        "kernel": kernel.to_str().unwrap(),
        "cmdline": "console=ttyS0 panic=-1 reboot=k",
    });
    if let Some(initrd) = std::env::var_os("VMTOOLS_LINUX_INITRD") {
        boot["initrd"] = serde_json::json!(initrd.to_str().unwrap());
    }
    let spec = serde_json::json!({
        "name": "linux", "vcpus": 2, "memory": "512MiB", "boot": boot,
        "on_reboot": "destroy"
    });
    let path = dir.path().join("linux.json");
    std::fs::write(&path, spec.to_string()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vm-run"))
        .env("VMTOOLS_RUN_DIR", dir.path().join("run"))
        .arg("start")
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Linux did not finish in 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(
        out.contains("Linux version"),
        "no kernel banner on the console:\n{out}"
    );
    assert_eq!(status.code(), Some(0), "console:\n{out}");
}
