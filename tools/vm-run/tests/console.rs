//! `vm-run console` on a detached VM: interactive on a pty and on a
//! socket, and scripted with a stdin pipe and `--until`.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use test_guest::{have_kvm, kvm_lock};

mod common;

use common::{decode, error_line, json, wait_for, Env};

#[test]
fn interactive_consoles_on_a_pty_and_a_socket() {
    if !have_kvm() {
        return;
    }
    let _l = kvm_lock();
    let e = Env::new();
    // A pty: `vm-run console` carries our input to the guest and its
    // answer back, until the guest ends the run.
    let s = e.spec(
        "tty",
        "echo",
        &serde_json::json!({"serial": {"mode": "pty"}}),
    );
    let st = json(&e.vm_run(&["start", "--detach", &s]).1);
    let link = e.run_dir().join("tty/console");
    assert_eq!(st["console"], link.to_str().unwrap());
    assert!(std::fs::read_link(&link).unwrap().starts_with("/dev/pts"));
    let mut child = e
        .cmd()
        .args(["console", "tty"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"ping").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"q").unwrap();
    drop(child.stdin.take());
    let (code, out, _) = decode(&child.wait_with_output().unwrap());
    assert_eq!(code, 0);
    assert!(
        out.contains("ping") && out.contains("bye"),
        "console output: {out:?}"
    );
    let pid = st["pid"].as_u64().unwrap() as u32;
    wait_for("the VM to end", || {
        vm_control::Liveness::of(pid) == vm_control::Liveness::Dead
    });

    // A socket: one client, both directions.
    let sock = e.dir.path().join("con.sock");
    let s = e.spec(
        "sock",
        "echo",
        &serde_json::json!({"serial": {"mode": "socket", "path": sock.to_str().unwrap()}}),
    );
    let st = json(&e.vm_run(&["start", "--detach", &s]).1);
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    std::io::Write::write_all(&mut c, b"abc").unwrap();
    let mut got = Vec::new();
    wait_for("the echo", || {
        let mut b = [0u8; 64];
        if let Ok(n) = std::io::Read::read(&mut c, &mut b) {
            got.extend_from_slice(&b[..n]);
        }
        got.ends_with(b"abc")
    });
    std::io::Write::write_all(&mut c, b"q").unwrap();
    let pid = st["pid"].as_u64().unwrap() as u32;
    wait_for("the VM to end", || {
        vm_control::Liveness::of(pid) == vm_control::Liveness::Dead
    });
    assert!(!sock.exists(), "the console socket is removed with the VM");
}

/// `vm-run console` with a stdin pipe and --until: what a script does to
/// wait for a prompt, type and wait for the answer.
fn console_until(e: &Env, vm: &str, input: &[u8], until: &str) -> (i32, String, String) {
    let mut child = e
        .cmd()
        .args(["console", vm, "--until", until])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), input).unwrap();
    drop(child.stdin.take());
    decode(&child.wait_with_output().unwrap())
}

#[test]
fn console_until_returns_when_the_text_shows() {
    if !have_kvm() {
        return;
    }
    let _l = kvm_lock();
    let e = Env::new();
    let sock = e.dir.path().join("until.sock");
    let s = e.spec(
        "until",
        "echo",
        &serde_json::json!({"serial": {"mode": "socket", "path": sock.to_str().unwrap()}}),
    );
    let st = json(&e.vm_run(&["start", "--detach", &s]).1);
    let pid = st["pid"].as_u64().unwrap() as u32;
    // The guest echoes; the text is split over two reads of the console
    // at most by chance, so both halves are sent apart too.
    let (code, out, err) = console_until(&e, "until", b"hello there", "lo th");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.ends_with("hello th"),
        "the output ends with the text: {out:?}"
    );
    assert_eq!(
        vm_control::Liveness::of(pid),
        vm_control::Liveness::Alive,
        "the VM runs on"
    );
    // A text that never shows: the guest ends (q), and so does the wait,
    // with exit 1 and one line saying why.
    let (code, out, err) = console_until(&e, "until", b"q", "never shown");
    assert_eq!(code, 1, "{out:?}");
    assert!(
        error_line(&err).contains("before it showed 'never shown'"),
        "{err}"
    );
    wait_for("the VM to end", || {
        vm_control::Liveness::of(pid) == vm_control::Liveness::Dead
    });
    // A console file is followed from its start until the text shows, and
    // what the file holds after the text is not printed.
    let s = e.spec("hb", "heartbeat", &serde_json::json!({}));
    let st = json(&e.vm_run(&["start", "--detach", &s]).1);
    let file = st["console"].as_str().unwrap().to_owned();
    wait_for("the third tick", || {
        std::fs::read_to_string(&file).is_ok_and(|t| t.contains("tick 3"))
    });
    let (code, out, err) = console_until(&e, "hb", b"", "tick 2");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("tick 1"), "{out:?}");
    assert!(out.ends_with("tick 2"), "{out:?}");
    assert_eq!(e.vm_run(&["kill", "hb"]).0, 0);
}
