//! A `vm-migrate send` interrupted mid-copy: Ctrl-C (SIGINT) cancels the
//! migration as virsh migrate's does, with one line, and SIGKILL, which no
//! process can catch, gets the same from the VM itself once the tool's
//! connection closes. Either way the VM runs on here, no migration is left
//! in progress, and the destination gives up. A tool that floods that
//! connection instead does not hold the VM.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{env, finish, listening, recv, wait_for_status};
use test_guest::rundir::{decode, RunDir};
use test_guest::{have_kvm, kvm_lock};

/// `vm-migrate send a` at 1 MiB/s to a fresh destination `to`, once its
/// copy is under way.
fn slow_send(env: &RunDir, to: &str) -> (Child, Child) {
    let mut r = recv(env, "tcp:127.0.0.1:0", to);
    let addr = listening(&mut r);
    let send = env
        .command("vm-migrate")
        .args(["send", "a", &addr, "--bandwidth", "1", "--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_status(env, "a", "never active", |s| {
        s["status"] == "active" && s["bytes"].as_u64() > Some(0)
    });
    (send, r)
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill on the pid of a child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// The VM runs here with no migration in progress (within 10 s), and the
/// destination has given up.
fn stays_here(env: &RunDir, dest: Child, what: &str) {
    let t0 = Instant::now();
    loop {
        let (code, _, err) = env.run("vm-migrate", &["status", "a"]);
        if code == 1 && err.contains("no migration in progress") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{what}: {err}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(env.running(), ["a"], "{what}");
    let (code, _, err) = finish(dest);
    assert_ne!(code, 0, "{what}: the destination gave up: {err}");
    assert!(
        err.contains("the source ended the migration: cancelled"),
        "{what}: {err}"
    );
    // The guest goes on, its memory checked pass after pass.
    let last = env.counts("a", "touch ").last().copied().unwrap_or(0);
    env.wait_count("a", "touch ", last + 1);
    assert!(
        !env.console("a").contains("MEMORY ERROR"),
        "{what}: {}",
        env.console("a")
    );
}

#[test]
fn an_interrupted_send_leaves_the_vm_here() {
    if !have_kvm() {
        return;
    }
    let _lock = kvm_lock();
    let env = env();
    // At 1 MiB/s the first pass over 16 MiB takes 16 s.
    env.start(&env.spec("a", "fill mb=16 dirty=1", &serde_json::json!({})));
    env.wait_count("a", "touch ", 1);

    let (send, dest) = slow_send(&env, "b");
    signal(&send, libc::SIGINT);
    let (code, _, err) = decode(&send.wait_with_output().unwrap());
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cancelling the migration of 'a'") && err.contains("not migrated: cancelled"),
        "{err}"
    );
    stays_here(&env, dest, "SIGINT");

    let (send, dest) = slow_send(&env, "c");
    signal(&send, libc::SIGKILL);
    let _ = send.wait_with_output().unwrap();
    stays_here(&env, dest, "SIGKILL");
    assert!(
        std::fs::read_to_string(env.run_dir().join("a/vm.log"))
            .unwrap()
            .contains("the tool that asked for the migration went away: cancelling"),
        "the VM says why it cancelled"
    );

    // A tool that keeps writing on the connection that asked for the
    // migration (it has nothing more to say) is read away without
    // holding the VM: status answers at once; then its close cancels.
    let mut dest = recv(&env, "tcp:127.0.0.1:0", "d");
    let addr = listening(&mut dest);
    let conn = std::net::TcpStream::connect(addr.strip_prefix("tcp:").unwrap()).unwrap();
    let sock = env.run_dir().join("a/control.sock");
    let tool = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let req = serde_json::json!({"cmd": "migrate-send", "options": {"bandwidth_mib": 1}});
    vm_control::send_with_fds(
        &tool,
        format!("{req}\n").as_bytes(),
        &[std::os::fd::AsRawFd::as_raw_fd(&conn)],
    )
    .unwrap();
    drop(conn);
    wait_for_status(&env, "a", "never active", |s| s["status"] == "active");
    let writer = {
        let mut tool = tool.try_clone().unwrap();
        std::thread::spawn(move || {
            let junk = vec![b'x'; 64 << 10];
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(3) {
                if std::io::Write::write_all(&mut tool, &junk).is_err() {
                    break;
                }
            }
        })
    };
    for _ in 0..5 {
        let t0 = Instant::now();
        let (code, _, err) = env.run("vm-migrate", &["status", "a"]);
        assert_eq!(code, 0, "{err}");
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "status took {:?} while the tool wrote",
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    writer.join().unwrap();
    drop(tool);
    stays_here(&env, dest, "a tool that wrote, then closed");
    assert_eq!(env.vm_run(&["kill", "a"]).0, 0);
}
