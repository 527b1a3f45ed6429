//! Run folders as other users and full disks leave them: a run or
//! definitions folder another user controls is refused, and a run folder
//! with no room left keeps the VM running.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

mod common;

use common::{alive, error_line, wait_dead, Env};

/// A run or definitions folder another user owns or may write, and a
/// symlink planted under a VM's name, are refused: nothing is made,
/// followed or chmodded there.
#[test]
fn folders_others_control_are_refused() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: needs root to make folders of another user");
        return;
    }
    let e = Env::new();
    let s = e.spec("planted", "hello", &json!({}));
    let run = e.run_dir();
    std::fs::create_dir(&run).unwrap();
    let mode =
        |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    // Owned by another user.
    std::os::unix::fs::chown(&run, Some(65534), Some(65534)).unwrap();
    for args in [
        vec!["start", &s],
        vec!["start", "--detach", &s],
        vec!["list"],
    ] {
        let (code, _, err) = e.vm_run(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(error_line(&err).contains("not trusted"), "{args:?}: {err}");
    }
    assert_eq!(std::fs::read_dir(&run).unwrap().count(), 0);
    // Ours, but writable by others.
    std::os::unix::fs::chown(&run, Some(0), Some(0)).unwrap();
    mode(&run, 0o777);
    let (code, _, err) = e.vm_run(&["start", &s]);
    assert_eq!(code, 1);
    assert!(
        error_line(&err).contains("writable by other users"),
        "{err}"
    );
    // A symlink named after the VM in a trusted folder is not followed:
    // its target keeps its mode and gets no files.
    mode(&run, 0o700);
    let target = e.dir.path().join("target");
    std::fs::create_dir(&target).unwrap();
    mode(&target, 0o755);
    std::os::unix::fs::symlink(&target, run.join("planted")).unwrap();
    for args in [
        vec!["start", &s],
        vec!["kill", "planted"],
        vec!["status", "planted"],
    ] {
        let (code, _, err) = e.vm_run(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(error_line(&err).contains("not a folder"), "{args:?}: {err}");
    }
    assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o777, 0o755);
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
    // Definitions likewise.
    let defs = e.dir.path().join("defs");
    std::fs::create_dir(&defs).unwrap();
    mode(&defs, 0o777);
    let (code, _, err) = e.vm_run(&["define", &s]);
    assert_eq!(code, 1);
    assert!(
        error_line(&err).contains("writable by other users"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&defs).unwrap().count(), 0);
}

/// The run folder's file system full: a pause that cannot be recorded is
/// refused with the reason (not blamed on the peer check), the guest
/// runs on, and once there is room again everything works.
#[test]
fn a_full_run_folder_keeps_the_vm() {
    if !test_guest::have_kvm() {
        return;
    }
    let _l = test_guest::kvm_lock();
    let e = Env::new();
    std::fs::create_dir(e.run_dir()).unwrap();
    let Some(_fs) = test_guest::hostfs::SmallTmpfs::mount(&e.run_dir(), "1m") else {
        return;
    };
    let s = e.spec(
        "full",
        "heartbeat",
        &json!({"serial": {"mode": "file", "path": e.dir.path().join("full.log")}}),
    );
    let (code, out, err) = e.vm_run(&["start", "--detach", &s]);
    assert_eq!(code, 0, "{err}");
    let pid = common::json(&out)["pid"].as_u64().unwrap() as u32;
    // Fill the file system.
    let filler = e.run_dir().join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![1u8; 4096];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);
    let (code, _, err) = e.vm_run(&["pause", "full"]);
    assert_eq!(code, 1, "{err}");
    let line = error_line(&err);
    assert!(
        line.contains("cannot record the state") && line.contains("No space left"),
        "{line}"
    );
    assert!(alive(pid), "the VM lives");
    let log = || std::fs::read_to_string(e.dir.path().join("full.log")).unwrap_or_default();
    let ticks = log().matches("tick").count();
    let t0 = Instant::now();
    while log().matches("tick").count() < ticks + 2 {
        assert!(t0.elapsed() < Duration::from_secs(30), "the guest stopped");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(e.vm_run(&["pause", "full"]).0, 0);
    assert_eq!(e.vm_run(&["kill", "full"]).0, 0);
    wait_dead(pid);
}
