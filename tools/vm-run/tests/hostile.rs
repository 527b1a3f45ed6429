//! What a guest, a file or another user can plant, against vm-run: disk
//! chains whose formats would have to be guessed, files that are not
//! files, and (with KVM) forged state, planted folders and stalled
//! clients. Each test is named for the class of input it covers.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

mod common;

use common::{alive, error_line, heartbeat, wait_dead, Env};

fn nothing_left(e: &Env, what: &str) {
    let left: Vec<_> = std::fs::read_dir(e.run_dir())
        .map(|d| d.flatten().map(|x| x.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{what}: left behind {left:?}");
}

fn qcow2_over(path: &Path, backing: &str, format: Option<&str>) {
    let o = vm_image::qcow2::writer::CreateOptions {
        size: 1 << 20,
        ..Default::default()
    };
    let f = std::fs::File::create(path).unwrap();
    vm_image::qcow2::writer::Qcow2Writer::new(f, &o)
        .unwrap()
        .finish()
        .unwrap();
    vm_image::qcow2::set_backing(path, Some(backing), format).unwrap();
}

/// A disk chain whose backing format is not recorded, at any depth, is
/// refused before the VM starts: its format would be guessed from content
/// a guest may have written, and could name any host file.
#[test]
fn disk_backing_formats_are_never_guessed() {
    let e = Env::new();
    let d = e.dir.path();
    // Straight at a host file.
    qcow2_over(&d.join("passwd.qcow2"), "/etc/passwd", None);
    // One level down: the top records qcow2, the middle records nothing.
    std::fs::write(d.join("base.raw"), vec![0u8; 1 << 20]).unwrap();
    qcow2_over(&d.join("mid.qcow2"), "base.raw", None);
    qcow2_over(&d.join("top.qcow2"), "mid.qcow2", Some("qcow2"));
    for (top, image, backing) in [
        ("passwd.qcow2", "passwd.qcow2", "/etc/passwd"),
        ("top.qcow2", "mid.qcow2", "base.raw"),
    ] {
        for readonly in [false, true] {
            let s = e.spec(
                "chain",
                "blk-read",
                &json!({"disks": [{"id": "vda", "path": d.join(top), "format": "qcow2",
                                   "readonly": readonly}]}),
            );
            let (code, _, err) = e.vm_run(&["start", &s]);
            assert_eq!(code, 1, "{top}: {err}");
            let line = error_line(&err);
            assert!(
                line.contains(&format!("{}", d.join(image).display()))
                    && line.contains(&format!("'{backing}'"))
                    && line.contains("vm-img rebase -u -F FMT -b"),
                "{top} (readonly {readonly}): {line}"
            );
            nothing_left(&e, top);
        }
    }
}

/// A kernel, initrd or disk that is a FIFO would block the start forever:
/// each is refused at once with one line.
#[test]
fn boot_files_and_disks_must_be_files() {
    let e = Env::new();
    let fifo = e.dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let cases = [
        json!({"boot": {"kernel": fifo}}),
        json!({"boot": {"kernel": test_guest::GUEST_ELF, "initrd": fifo}}),
        json!({"disks": [{"id": "vda", "path": fifo, "format": "raw"}]}),
        json!({"boot": {"kernel": "/dev/null"}}),
    ];
    for extra in cases {
        let s = e.spec("fifo", "hello", &extra);
        let t0 = Instant::now();
        let mut child = e
            .cmd()
            .args(["start", &s])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        while child.try_wait().unwrap().is_none() {
            if t0.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!("{extra}: vm-run start blocked");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{extra}: {err}");
        assert!(
            error_line(&err).contains("not a regular file"),
            "{extra}: {err}"
        );
        nothing_left(&e, "fifo");
    }
}

/// A process that must survive whatever the test makes vm-run do.
struct Bystander(std::process::Child);

impl Bystander {
    fn new() -> Self {
        Self(
            std::process::Command::new("sleep")
                .arg("600")
                .spawn()
                .unwrap(),
        )
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
    fn assert_alive(&mut self, what: &str) {
        assert!(
            self.0.try_wait().unwrap().is_none(),
            "{what}: an unrelated process was signalled"
        );
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn forge_pid(dir: &Path, pid: u32) {
    let p = dir.join("state.json");
    let mut st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    st["pid"] = json!(pid);
    std::fs::write(&p, st.to_string()).unwrap();
}

/// A state.json whose pid names an unrelated process: vm-run reports and
/// signals only the process that holds the VM's folder (the kernel's
/// lock table says which), for a VM that answers, one that does not, and
/// a dead VM's leftovers.
#[test]
fn a_forged_pid_is_never_signalled() {
    if !test_guest::have_kvm() {
        return;
    }
    let _l = test_guest::kvm_lock();
    let e = Env::new();
    let mut by = Bystander::new();
    let pid = heartbeat(&e, "forged");
    let dir = e.run_dir().join("forged");
    forge_pid(&dir, by.pid());
    let st = common::json(&e.vm_run(&["status", "--json", "forged"]).1);
    assert_eq!(st["pid"], pid, "status names the real VM process");
    let list = e.vm_run(&["list", "--json"]).1;
    assert!(list.contains(&format!("\"pid\":{pid}")), "{list}");
    // A VM that cannot be asked (its socket is gone) is ended through the
    // verified pid, not the recorded one.
    std::fs::remove_file(dir.join("control.sock")).unwrap();
    let (code, _, err) = e.vm_run(&["kill", "forged"]);
    assert_eq!(code, 0, "{err}");
    wait_dead(pid);
    by.assert_alive("kill of a VM that does not answer");
    assert!(!dir.exists(), "the dead VM's folder is cleared");

    // A dead VM's state.json naming a live process: crashed, never killed.
    let pid = heartbeat(&e, "ghost");
    let dir = e.run_dir().join("ghost");
    let saved = std::fs::read(dir.join("state.json")).unwrap();
    assert_eq!(e.vm_run(&["kill", "ghost"]).0, 0);
    wait_dead(pid);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("state.json"), saved).unwrap();
    forge_pid(&dir, by.pid());
    assert_eq!(
        common::json(&e.vm_run(&["status", "--json", "ghost"]).1)["state"],
        "crashed"
    );
    let (code, _, err) = e.vm_run(&["kill", "ghost"]);
    assert_eq!(code, 0, "{err}");
    by.assert_alive("kill of a dead VM's leftovers");
    assert!(!dir.exists());
}

/// Two starts of one spec at the same moment: exactly one VM runs, the
/// other start gets one line, and nothing is left after a kill.
#[test]
fn two_starts_of_one_name_one_wins() {
    if !test_guest::have_kvm() {
        return;
    }
    let _l = test_guest::kvm_lock();
    let e = Env::new();
    let s = e.spec("race", "heartbeat", &json!({}));
    for round in 0..3 {
        let kids: Vec<_> = (0..2)
            .map(|_| {
                e.cmd()
                    .args(["start", "--detach", &s])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outs: Vec<_> = kids
            .into_iter()
            .map(|k| common::decode(&k.wait_with_output().unwrap()))
            .collect();
        let won: Vec<_> = outs.iter().filter(|o| o.0 == 0).collect();
        assert_eq!(won.len(), 1, "round {round}: {outs:?}");
        let lost = outs.iter().find(|o| o.0 != 0).unwrap();
        assert_eq!(lost.0, 1, "round {round}: {lost:?}");
        assert!(
            error_line(&lost.2).contains("already running"),
            "round {round}: {}",
            lost.2
        );
        let pid = common::json(&won[0].1)["pid"].as_u64().unwrap() as u32;
        // Only the winner runs: no other VM process of this run folder.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(vm_processes(&e), vec![pid], "round {round}");
        assert_eq!(e.vm_run(&["kill", "race"]).0, 0);
        wait_dead(pid);
        nothing_left(&e, "after kill");
    }
}

/// The vm-run processes (other than teardown children) serving VMs of
/// this test's run folder.
fn vm_processes(e: &Env) -> Vec<u32> {
    let needle = format!("VMTOOLS_RUN_DIR={}", e.run_dir().display());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| p.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| alive(pid))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "vm-run")
        })
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == needle.as_bytes()))
        })
        .collect()
}

/// state.json deleted, garbled or made a folder: the VM stays manageable
/// (found through its lock and asked over its socket), a state it cannot
/// record is an error for the caller, and the VM runs on as it was.
#[test]
fn a_lost_or_unwritable_state_keeps_the_vm() {
    if !test_guest::have_kvm() {
        return;
    }
    let _l = test_guest::kvm_lock();
    let e = Env::new();
    let pid = heartbeat(&e, "lost");
    let dir = e.run_dir().join("lost");
    let state = dir.join("state.json");
    std::fs::remove_file(&state).unwrap();
    let list = e.vm_run(&["list", "--json"]).1;
    assert!(list.contains("\"lost\""), "deleted: {list}");
    let st = common::json(&e.vm_run(&["status", "--json", "lost"]).1);
    assert_eq!(
        (st["pid"].as_u64(), st["state"].as_str()),
        (Some(pid.into()), Some("running"))
    );
    assert!(state.exists(), "the VM wrote its state.json anew");
    std::fs::write(&state, b"{garbled").unwrap();
    assert_eq!(e.vm_run(&["pause", "lost"]).0, 0, "garbled: pause works");
    assert_eq!(e.vm_run(&["resume", "lost"]).0, 0);
    // A folder where state.json was: the pause cannot be recorded, so it is
    // refused with the reason, and the guest keeps running.
    std::fs::remove_file(&state).unwrap();
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("x"), b"").unwrap();
    let (code, _, err) = e.vm_run(&["pause", "lost"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        error_line(&err).contains("cannot record the state"),
        "{err}"
    );
    assert!(alive(pid));
    let ticks = e.ticks("lost");
    e.wait_ticks("lost", ticks + 2);
    assert_eq!(
        common::json(&e.vm_run(&["status", "--json", "lost"]).1)["state"],
        "running"
    );
    std::fs::remove_dir_all(&state).unwrap();
    assert_eq!(e.vm_run(&["kill", "lost"]).0, 0);
    wait_dead(pid);
}

fn connect(dir: &Path) -> std::os::unix::net::UnixStream {
    std::os::unix::net::UnixStream::connect(dir.join("control.sock")).unwrap()
}

fn read_reply(s: &std::os::unix::net::UnixStream) -> String {
    use std::io::BufRead;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).unwrap();
    line
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// Clients that send nothing, too much, bytes that are not UTF-8 or
/// fields no request has: each gets an answer or its slot back, and the
/// VM's other clients and its guest never wait for them.
#[test]
fn control_clients_cannot_stall_the_vm() {
    use std::io::Write;
    if !test_guest::have_kvm() {
        return;
    }
    let _l = test_guest::kvm_lock();
    let e = Env::new();
    let pid = heartbeat(&e, "busy");
    let dir = e.run_dir().join("busy");
    let idle: Vec<_> = (0..3).map(|_| connect(&dir)).collect();
    let t0 = Instant::now();
    let (code, _, err) = e.vm_run(&["status", "busy"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "status waited {:?} behind idle clients",
        t0.elapsed()
    );
    // The idle ones are told off at their deadline.
    let r = read_reply(&idle[0]);
    assert!(r.contains("no whole request line"), "{r}");
    drop(idle);
    // A flood without a newline is cut off, and the VM does not grow.
    let before = rss_kib(pid);
    let mut flood = connect(&dir);
    let chunk = vec![b'x'; 64 << 10];
    for _ in 0..64 {
        if flood.write_all(&chunk).is_err() {
            break;
        }
    }
    let r = read_reply(&flood);
    assert!(r.contains("longer than"), "{r}");
    assert!(rss_kib(pid) < before + 1024, "the VMM grew by the flood");
    for (bytes, want) in [
        (&b"\xff\xfe{\n"[..], "bad request"),
        (&br#"{"cmd":"kill","now":true}"#[..], "unknown field `now`"),
    ] {
        let mut s = connect(&dir);
        s.write_all(bytes).unwrap();
        if !bytes.ends_with(b"\n") {
            s.write_all(b"\n").unwrap();
        }
        let r = read_reply(&s);
        assert!(r.contains("\"ok\":false") && r.contains(want), "{r}");
    }
    assert!(alive(pid), "the unknown field did not kill the VM");
    // More than 16 descriptors with one request, spread over messages of
    // 16 or fewer each, are refused with a line and closed, not piled up.
    let nulls: Vec<_> = (0..16)
        .map(|_| std::fs::File::open("/dev/null").unwrap())
        .collect();
    let raw: Vec<_> = nulls.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
    let open_fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let before = open_fds();
    let s = connect(&dir);
    vm_control::send_with_fds(&s, br#"{"cmd":"save""#, &raw).unwrap();
    vm_control::send_with_fds(&s, b"}\n", &raw[..1]).unwrap();
    let r = read_reply(&s);
    assert!(r.contains("more than 16 descriptors"), "{r}");
    drop(s);
    let t0 = Instant::now();
    while open_fds() > before {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the VM keeps the descriptors"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // More clients than the VM serves at once: the extra ones are told.
    let many: Vec<_> = (0..20).map(|_| connect(&dir)).collect();
    let r = read_reply(&many[19]);
    assert!(r.contains("too many"), "{r}");
    drop(many);
    let ticks = e.ticks("busy");
    e.wait_ticks("busy", ticks + 1);
    assert_eq!(e.vm_run(&["kill", "busy"]).0, 0);
    wait_dead(pid);
}

/// Names and paths with control characters are escaped in human output
/// and error lines, so they cannot drive the reader's terminal.
#[test]
fn control_characters_never_reach_the_terminal() {
    if !test_guest::have_kvm() {
        return;
    }
    let _l = test_guest::kvm_lock();
    let e = Env::new();
    let pid = heartbeat(&e, "plain");
    let planted = e.run_dir().join("evil\x1b]0;owned\x07");
    std::fs::create_dir(&planted).unwrap();
    std::fs::copy(
        e.run_dir().join("plain/state.json"),
        planted.join("state.json"),
    )
    .unwrap();
    forge_pid(&planted, u32::MAX - 1);
    // Human output is for terminals: run `list` on one (script(1)'s pty).
    let out = std::process::Command::new("script")
        .args(["-q", "-e", "-c"])
        .arg(format!("{} list", env!("CARGO_BIN_EXE_vm-run")))
        .arg("/dev/null")
        .env("VMTOOLS_RUN_DIR", e.run_dir())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let (code, out, err) = common::decode(&out);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("evil\\x1b]0;owned\\x07"), "{out}");
    assert!(
        !out.contains('\x1b') && !err.contains('\x1b'),
        "{out:?} {err:?}"
    );
    let (code, _, err) = e.vm_run(&["status", "no\x1bsuch"]);
    assert_eq!(code, 1);
    assert!(!err.contains('\x1b') && err.contains("\\x1b"), "{err:?}");
    assert_eq!(e.vm_run(&["kill", "plain"]).0, 0);
    wait_dead(pid);
}

/// Specs and names are read as written: nothing after the JSON document,
/// no VM named `-` (stdin to every verb), too little memory blamed on
/// memory, a bare word always a VM's name (never a file that happens to
/// be in the current folder), a kernel with nothing to load refused
/// (here: a 10 GiB sparse file holding only an ELF header), and a "spec"
/// that never ends (/dev/zero) refused at 10 MiB.
#[test]
fn specs_and_names_are_read_as_written() {
    let e = Env::new();
    let d = e.dir.path();
    let s = e.spec("plain", "hello", &json!({}));
    let mut text = std::fs::read_to_string(&s).unwrap();
    text.push_str("{\"name\": \"second\"}");
    std::fs::write(&s, text).unwrap();
    let kernel = d.join("huge.elf");
    let mut head = vec![0u8; 64];
    head[..4].copy_from_slice(b"\x7fELF");
    head[4] = 2; // 64-bit
    head[5] = 1; // little endian
    head[6] = 1;
    head[16] = 2; // executable
    head[18] = 0x3e; // x86-64
    head[20] = 1;
    head[24..32].copy_from_slice(&0x10_0000u64.to_le_bytes());
    head[32..40].copy_from_slice(&64u64.to_le_bytes()); // program headers at 64
    head[52] = 64;
    head[54] = 56;
    head[56] = 1; // one, all zero: PT_NULL
    let f = std::fs::File::create(&kernel).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &head, 0).unwrap();
    f.set_len(10 << 30).unwrap();
    let cases = [
        (
            e.spec("dash", "hello", &json!({"name": "-"})),
            "must start with a letter or a digit",
        ),
        (
            e.spec("small", "hello", &json!({"memory": "512KiB"})),
            "memory: 512KiB is too little",
        ),
        (
            e.spec("elf", "hello", &json!({"boot": {"kernel": kernel}})),
            "no loadable segment",
        ),
        (s, "trailing characters"),
        // No document at all: read up to the cap, not until memory ends.
        ("/dev/zero".into(), "/dev/zero: larger than 10 MiB"),
    ];
    for (spec, want) in cases {
        let t0 = Instant::now();
        let (code, _, err) = e.vm_run(&["start", &spec]);
        assert_eq!(code, 1, "{want}: {err}");
        assert!(error_line(&err).contains(want), "{want}: {err}");
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{want}: refused at once"
        );
        nothing_left(&e, want);
    }
    // The same where a file names a VM (status, kill and the rest).
    let (code, _, err) = e.vm_run(&["status", "/dev/zero"]);
    assert_eq!(code, 1);
    assert!(error_line(&err).contains("larger than 10 MiB"), "{err}");
    // A file named like the VM in the current folder is not the VM.
    std::fs::write(d.join("filevm"), e.spec("other", "hello", &json!({}))).unwrap();
    let out = e
        .cmd()
        .args(["kill", "filevm"])
        .current_dir(d)
        .output()
        .unwrap();
    let (code, _, err) = common::decode(&out);
    assert_eq!(code, 1);
    assert!(error_line(&err).contains("no VM named 'filevm'"), "{err}");
}

/// A console socket's path that names something else (a typo naming a
/// disk image, a device node) is refused and left as it was; only a stale
/// socket, whose VM died, gives way; and a VM removes only its own socket.
#[test]
fn a_console_socket_never_replaces_what_is_there() {
    if !test_guest::have_kvm() {
        return;
    }
    let _l = test_guest::kvm_lock();
    let e = Env::new();
    let d = e.dir.path();
    let file = d.join("disk.img");
    std::fs::write(&file, b"the user's data").unwrap();
    let s = e.spec(
        "sock",
        "heartbeat",
        &json!({"serial": {"mode": "socket", "path": file}}),
    );
    let (code, _, err) = e.vm_run(&["start", "--detach", &s]);
    assert_eq!(code, 1, "{err}");
    assert!(
        error_line(&err).contains("exists and is not a socket"),
        "{err}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"the user's data");
    nothing_left(&e, "a console path that is a file");
    // A stale socket gives way; a live one (this VM's) is not taken by a
    // second VM.
    let sock = d.join("console.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let s = e.spec(
        "sock",
        "heartbeat",
        &json!({"serial": {"mode": "socket", "path": sock}}),
    );
    let (code, _, err) = e.vm_run(&["start", "--detach", &s]);
    assert_eq!(code, 0, "{err}");
    let other = e.spec(
        "sock2",
        "heartbeat",
        &json!({"serial": {"mode": "socket", "path": sock}}),
    );
    let (code, _, err) = e.vm_run(&["start", "--detach", &other]);
    assert_eq!(code, 1, "{err}");
    assert!(error_line(&err).contains("listens on it already"), "{err}");
    // Put a file where its socket was: the VM ending leaves it.
    std::fs::remove_file(&sock).unwrap();
    std::fs::write(&sock, b"moved in").unwrap();
    assert_eq!(e.vm_run(&["kill", "sock"]).0, 0);
    assert_eq!(std::fs::read(&sock).unwrap(), b"moved in");
}
