//! `vm-migrate set` on a migration under way (virsh migrate-setspeed and
//! migrate-setmaxdowntime during a job): `status` shows the knobs (virsh
//! migrate-getspeed), a copy held to 1 MiB/s finishes soon after its cap
//! is lifted, and knobs no migration can go by are refused, from the
//! command line and straight on the control socket.

use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;

use common::{env, finish, listening, recv, wait_for_status};
use test_guest::rundir::{contiguous, json};
use test_guest::{have_kvm, kvm_lock};

#[test]
fn set_changes_a_migration_under_way() {
    if !have_kvm() {
        return;
    }
    let _lock = kvm_lock();
    let env = env();
    // 16 MiB written, then a word in each page of its first MiB, pass
    // after pass (checked): at 1 MiB/s the first pass alone takes 16 s.
    env.start(&env.spec("a", "fill mb=16 dirty=1", &serde_json::json!({})));
    env.wait_count("a", "touch ", 1);
    let (code, _, err) = env.run("vm-migrate", &["set", "a", "--bandwidth", "5"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no migration in progress"), "{err}");
    for args in [
        &["set", "a"][..],
        &["set", "a", "--bandwidth", "0"],
        &["set", "a", "--bandwidth", "fast"],
        &["set", "a", "--max-downtime", "0"],
        &["send", "a", "tcp:127.0.0.1:1", "--bandwidth", "0"],
        &["send", "a", "tcp:127.0.0.1:1", "--max-downtime", "0"],
    ] {
        let (code, _, err) = env.run("vm-migrate", args);
        assert_eq!(code, 2, "{args:?}: {err}");
    }

    let mut r = recv(&env, "tcp:127.0.0.1:0", "b");
    let addr = listening(&mut r);
    let send = env
        .command("vm-migrate")
        // A timeout too far off to reckon is no timeout (adding it to
        // the start once panicked, and a release build aborts on that).
        .args(["send", "a", &addr, "--bandwidth", "1", "--quiet"])
        .args(["--timeout", &u64::MAX.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_status(&env, "a", "never active", |s| {
        s["status"] == "active" && s["bytes"].as_u64() > Some(0)
    });
    let (code, out, err) = env.run("vm-migrate", &["status", "a"]);
    assert_eq!(code, 0, "{err}");
    let st = json(&out);
    assert_eq!(st["bandwidth_mib"], 1, "{st}");
    assert_eq!(st["max_downtime_ms"], 300, "{st}");
    let (code, out, err) = env.run("vm-migrate", &["set", "a", "--max-downtime", "50"]);
    assert_eq!(code, 0, "{err}");
    let st = json(&out);
    assert_eq!(
        (st["max_downtime_ms"].as_u64(), st["bandwidth_mib"].as_u64()),
        (Some(50), Some(1)),
        "{st}"
    );
    assert_eq!(st["vm"], "a");

    // Straight on the control socket, knobs no migration can go by are
    // refused while it runs (and change nothing); the largest budget is
    // taken without harm, and the one before it put back.
    let sock = env.run_dir().join("a/control.sock");
    let set = |max_downtime_ms, bandwidth_mib| {
        let req = vm_control::Request::MigrateSet {
            max_downtime_ms,
            bandwidth_mib,
        };
        vm_control::Session::connect(&sock)
            .unwrap()
            .call(&req, &[], Some(Duration::from_secs(10)))
            .unwrap()
    };
    for (what, ms, expect) in [
        ("no budget", Some(0), "cannot be met"),
        ("nothing", None, "nothing to change"),
    ] {
        let r = set(ms, None);
        assert!(!r.ok, "{what}: accepted");
        assert!(
            r.error.as_deref().unwrap_or("").contains(expect),
            "{what}: {r:?}"
        );
    }
    let reply = set(Some(u64::MAX), None);
    assert!(reply.ok, "{reply:?}");
    assert_eq!(reply.migration.unwrap().max_downtime_ms, u64::MAX);
    let knobs = set(Some(50), None).migration.unwrap();
    assert_eq!((knobs.max_downtime_ms, knobs.bandwidth_mib), (50, Some(1)));
    assert_eq!(knobs.status, "active");

    std::thread::sleep(Duration::from_secs(1));
    let (_, out, _) = env.run("vm-migrate", &["status", "a"]);
    let sent = json(&out)["bytes"].as_u64().unwrap();
    assert!(sent < 4 << 20, "held to 1 MiB/s, yet {sent} bytes went");
    let lifted = Instant::now();
    let (code, out, err) = env.run("vm-migrate", &["set", "a", "--bandwidth", "unlimited"]);
    assert_eq!(code, 0, "{err}");
    assert!(json(&out)["bandwidth_mib"].is_null(), "{out}");
    let (code, out, err) = finish(send);
    assert_eq!(code, 0, "{err}");
    // What was left (over 12 MiB) would have taken 12 s more at the cap.
    let took = lifted.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "{took:?} after the cap was lifted"
    );
    let rec = json(&out);
    assert_eq!(rec["status"], "completed", "{rec}");
    assert!(rec["bandwidth_mib"].is_null(), "{rec}");
    assert_eq!(rec["max_downtime_ms"], 50, "{rec}");
    assert_eq!(finish(r).0, 0);
    assert_eq!(env.running(), ["b"]);
    // The touches go on at b from where a left them.
    let before = env.console("a");
    let last = *test_guest::rundir::counts_in(&before, "touch ")
        .last()
        .unwrap();
    env.wait_count("b", "touch ", last + 2);
    let both = before + &env.console("b");
    assert!(!both.contains("MEMORY ERROR"), "{both}");
    contiguous(&both, "touch ");
    let (code, _, err) = env.run("vm-migrate", &["set", "b", "--max-downtime", "40"]);
    assert_eq!(code, 1);
    assert!(err.contains("no migration in progress"), "{err}");
    env.vm_run(&["kill", "b"]);
}
