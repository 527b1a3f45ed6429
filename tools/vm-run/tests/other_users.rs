//! Other users and vm-run: a VM's folder, socket and files keep another
//! user out, with one line that says why.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use test_guest::{have_kvm, kvm_lock};

mod common;

use common::{decode, error_line, json, Env};

fn nobody() -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    c
}

fn can_switch_user() -> bool {
    let ok = nobody().arg("true").status().is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIP: cannot run as another user here (needs root and setpriv)");
    }
    ok
}

#[test]
fn other_users_are_kept_out() {
    if !have_kvm() || !can_switch_user() {
        return;
    }
    let _l = kvm_lock();
    let e = Env::new();
    let s = e.spec("guarded", "heartbeat", &serde_json::json!({}));
    assert_eq!(e.vm_run(&["start", "--detach", &s]).0, 0);
    let dir = e.run_dir().join("guarded");
    // Open the file modes, so only the SO_PEERCRED check stands (folders
    // writable by others would be refused as untrusted before that).
    for p in [e.dir.path().to_path_buf(), e.run_dir(), dir.clone()] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(
        dir.join("control.sock"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    std::fs::set_permissions(
        dir.join("state.json"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = nobody()
        .env("VMTOOLS_RUN_DIR", e.run_dir())
        .arg(env!("CARGO_BIN_EXE_vm-run"))
        .args(["pause", "guarded"])
        .output()
        .unwrap();
    let (code, _, err) = decode(&out);
    assert_eq!(code, 1, "another user is refused: {err}");
    assert!(error_line(&err).contains("refused the connection"), "{err}");
    // A refused kill is an error too, and leaves the VM and its folder be
    // (it used to wait, remove root's folder and exit 0).
    let t0 = Instant::now();
    let out = nobody()
        .env("VMTOOLS_RUN_DIR", e.run_dir())
        .arg(env!("CARGO_BIN_EXE_vm-run"))
        .args(["kill", "guarded"])
        .output()
        .unwrap();
    let (code, _, err) = decode(&out);
    assert_eq!(code, 1, "another user's kill is refused: {err}");
    assert!(error_line(&err).contains("refused the connection"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(5), "refused at once");
    assert!(dir.join("state.json").exists() && dir.join("control.sock").exists());
    assert_eq!(
        json(&e.vm_run(&["status", "guarded"]).1)["state"],
        "running",
        "and changes nothing"
    );
    assert!(std::fs::read_to_string(dir.join("vm.log"))
        .unwrap()
        .contains("refused a control connection"));
    assert_eq!(e.vm_run(&["kill", "guarded"]).0, 0);

    // Without permission on /dev/kvm: one clear line, nothing left behind.
    let runs = e.dir.path().join("nobody-run");
    std::fs::create_dir(&runs).unwrap();
    std::os::unix::fs::chown(&runs, Some(65534), Some(65534)).unwrap();
    let out = nobody()
        .env("VMTOOLS_RUN_DIR", &runs)
        .arg(env!("CARGO_BIN_EXE_vm-run"))
        .args(["start", &s])
        .output()
        .unwrap();
    let (code, _, err) = decode(&out);
    assert_eq!(code, 1);
    assert!(error_line(&err).contains("/dev/kvm"), "{err}");
    assert_eq!(std::fs::read_dir(&runs).unwrap().count(), 0);
}
