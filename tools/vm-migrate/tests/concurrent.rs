//! Requests that exclude each other, sent all at once against one VM: a
//! save, a live disk snapshot, a live migration, and pauses and resumes.
//! Whichever wins, the VM ends up in exactly one place (saved to a file
//! that verifies, moved to the destination, or still here), its disk
//! checks clean, and every loser gets one error line that says why (not
//! "refused", not an errno), never a panic.

mod common;

use std::path::Path;
use std::process::Command;

use common::env;
use test_guest::rundir::{decode, json};
use test_guest::{have_kvm, have_tool, kvm_lock};

/// One line on stderr for a failure, nothing for a success, and an exit
/// code of 0 or 1.
fn one_line(what: &str, (code, _, err): &(i32, String, String)) {
    assert!(!err.contains("panicked"), "{what}: {err}");
    assert!(matches!(code, 0 | 1), "{what}: exit {code}: {err}");
    if *code == 1 {
        // Through exec:, the destination's own line comes first.
        let mine = err.lines().filter(|l| !l.starts_with("vm-run: ")).count();
        assert!(mine <= 1, "{what}: {err}");
        // The owner is never told the VM refused them, nor given a bare
        // errno for a VM that ended under them.
        assert!(
            !err.contains("refused the connection") && !err.contains("os error"),
            "{what}: {err}"
        );
    }
}

#[test]
fn a_save_a_snapshot_a_migration_and_pauses_at_once() {
    if !have_kvm() || !have_tool("qemu-img", "qemu-img") {
        return;
    }
    let _lock = kvm_lock();
    let env = env();
    let me = Path::new(env!("CARGO_BIN_EXE_vm-migrate"));
    let disk = env.path("a.qcow2");
    let made = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("16M")
        .status()
        .unwrap();
    assert!(made.success());
    let spec = env.spec(
        "a",
        "heartbeat",
        &serde_json::json!({"disks": [{"id": "vda", "path": disk, "format": "qcow2"}]}),
    );
    for round in 0..6 {
        env.start(&spec);
        env.wait_count("a", "tick ", 1);
        let saved = env.path(&format!("a{round}.saved"));
        let dest = format!("b{round}");
        let to = format!(
            "exec:{} recv - --name {dest} --console {}",
            me.display(),
            env.console_path(&dest).display()
        );
        let snapshot = format!("s{round}");
        let (save, snap, migrate, pauses) = std::thread::scope(|s| {
            let save = s.spawn(|| env.run("vm-snap", &["save", "a", saved.to_str().unwrap()]));
            let snap = s.spawn(|| env.run("vm-snap", &["create", "a", "--name", &snapshot]));
            let migrate = s.spawn(|| env.run("vm-migrate", &["send", "-q", "a", &to]));
            let pauses = s.spawn(|| {
                (0..3)
                    .flat_map(|_| [env.vm_run(&["pause", "a"]), env.vm_run(&["resume", "a"])])
                    .collect::<Vec<_>>()
            });
            (
                save.join().unwrap(),
                snap.join().unwrap(),
                migrate.join().unwrap(),
                pauses.join().unwrap(),
            )
        });
        one_line("save", &save);
        one_line("snapshot", &snap);
        one_line("migrate", &migrate);
        for p in &pauses {
            one_line("pause or resume", p);
        }
        // Exactly one place.
        let running = env.running();
        eprintln!(
            "round {round}: save {}, snapshot {}, migrate {}, running {running:?}",
            save.0, snap.0, migrate.0
        );
        let places = [
            save.0 == 0,
            migrate.0 == 0 && running == [dest.as_str()],
            running == ["a"],
        ];
        assert_eq!(
            places.iter().filter(|&&p| p).count(),
            1,
            "round {round}: save {save:?}, migrate {migrate:?}, running {running:?}"
        );
        if save.0 == 0 {
            assert!(running.is_empty(), "saved, and still running: {running:?}");
            let (code, out, err) = env.run("vm-snap", &["verify", saved.to_str().unwrap()]);
            assert_eq!(code, 0, "{out}{err}");
        } else {
            assert!(!saved.exists(), "a failed save leaves no file");
        }
        // The disk (its top, after a snapshot) checks clean, VM or not.
        let top = running.first().map_or_else(
            || disk.clone(),
            |vm| {
                let d = json(&env.vm_run(&["status", "--json", vm]).1)["disks"][0]["top"]
                    .as_str()
                    .unwrap()
                    .into();
                d
            },
        );
        let check = Command::new("qemu-img")
            .args(["check", "-U", "-q"])
            .arg(&top)
            .output()
            .unwrap();
        let (code, out, err) = decode(&check);
        assert_eq!(code, 0, "round {round}: {}: {out}{err}", top.display());
        for vm in running {
            assert_eq!(env.vm_run(&["kill", &vm]).0, 0);
        }
    }
}
