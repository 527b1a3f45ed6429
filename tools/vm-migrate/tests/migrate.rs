//! vm-migrate between two vm-run processes on this host, with the test
//! guest counting and checksumming its memory (and reading its disk in a
//! loop, so the device writes guest memory): over unix, tcp on loopback
//! and exec; and the faults: a destination that dies, a corrupt stream,
//! a cancel. Every failure leaves the source running as it was.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Stdio;

mod common;

use common::{
    env, finish, flushed_sectors_hold, goes_on, goes_on_after, listening, recv, wait_for_status,
};
use test_guest::rundir::{contiguous, json};
use test_guest::{have_kvm, kvm_lock};

#[test]
fn migrate_over_unix_tcp_and_exec() {
    if !have_kvm() {
        return;
    }
    let _lock = kvm_lock();
    let env = env();
    // With an entropy device, which must be found at the destination too.
    env.start(&env.spec("a", "memcount pages=64", &serde_json::json!({"rng": true})));
    env.wait_count("a", "round ", 2);

    // unix: a to b
    let sock = env.path("m.sock");
    let listen = format!("unix:{}", sock.display());
    let mut r = recv(&env, &listen, "b");
    assert_eq!(listening(&mut r), listen);
    let (code, out, err) = env.run("vm-migrate", &["send", "a", &listen]);
    assert_eq!(code, 0, "{err}");
    let rep = json(&out);
    for k in [
        "total_ms",
        "downtime_ms",
        "bytes",
        "rounds",
        "dirty_rate",
        "throttle",
    ] {
        assert!(rep[k].is_u64(), "{k} in {rep}");
    }
    assert_eq!(rep["status"], "completed");
    assert!(rep["rounds"].as_u64().unwrap() >= 2, "{rep}");
    let (code, out, err) = finish(r);
    assert_eq!(code, 0, "{err}");
    let st = json(&out);
    assert_eq!(st["name"], "b");
    assert_eq!(st["state"], "running");
    assert_eq!(env.running(), ["b"], "the source ended");
    assert!(!sock.exists(), "the listening socket is removed");
    goes_on(&env, "a", "b");

    // tcp on loopback, any free port: b to c
    let mut r = recv(&env, "tcp:127.0.0.1:0", "c");
    let addr = listening(&mut r);
    assert!(addr.starts_with("tcp:127.0.0.1:"), "{addr}");
    let (code, _, err) = env.run("vm-migrate", &["send", "b", &addr]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(finish(r).0, 0);
    assert_eq!(env.running(), ["c"]);
    goes_on(&env, "b", "c");

    // exec: c to d through a command's stdin and stdout, as over ssh
    let me = Path::new(env!("CARGO_BIN_EXE_vm-migrate"));
    let cmd = format!(
        "exec:{} recv - --name d --console {}",
        me.display(),
        env.console_path("d").display()
    );
    let (code, out, err) = env.run("vm-migrate", &["send", "c", &cmd]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["status"], "completed");
    assert_eq!(env.running(), ["d"]);
    goes_on(&env, "c", "d");

    // A migrated guest's memory is anonymous (no memfd, whose holes say
    // what was never written): saved and restored, it still goes on with
    // every page it had.
    let snap = env.bin().join("vm-snap");
    assert!(
        snap.is_file(),
        "build vm-snap first (cargo build -p vm-snap)"
    );
    let file = env.path("d.save");
    let (code, _, err) = env.run("vm-snap", &["save", "d", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let saved = env.console("d");
    std::fs::remove_file(env.console_path("d")).unwrap();
    let console = env.console_path("d");
    let (code, _, err) = env.run(
        "vm-snap",
        &[
            "restore",
            "--console",
            console.to_str().unwrap(),
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    goes_on_after(&env, saved, "d");
    env.vm_run(&["kill", "d"]);
}

/// A guest that reads its disk in a loop, two halves by turns into one
/// buffer: only the device writes those pages (KVM's dirty log never sees
/// them). Migrated back and forth, slowly enough that reads land during
/// the copy, every sum the guest prints matches the half it read.
#[test]
fn device_writes_reach_the_destination() {
    if !have_kvm() {
        return;
    }
    let _lock = kvm_lock();
    let env = env();
    let disk = env.path("d.raw");
    let data = test_guest::pattern(0x1234_5678, 1 << 20);
    std::fs::write(&disk, &data).unwrap();
    let sums = [
        format!("at=0 sum={:08x}", test_guest::fnv(&data[..64 * 512])),
        format!(
            "at=64 sum={:08x}",
            test_guest::fnv(&data[64 * 512..128 * 512])
        ),
    ];
    let disks = serde_json::json!({"disks": [{"id": "vda", "path": disk, "format": "raw", "readonly": true}]});
    env.start(&env.spec("h0", "blk-loop sector=0 count=64", &disks));
    env.wait_count("h0", "pass ", 4);
    let hops = ["h0", "h1", "h2", "h3", "h4"];
    for w in hops.windows(2) {
        let mut r = recv(&env, "tcp:127.0.0.1:0", w[1]);
        let addr = listening(&mut r);
        let (code, _, err) = env.run("vm-migrate", &["send", w[0], &addr, "--bandwidth", "2"]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(finish(r).0, 0);
        let last = *env.counts(w[0], "pass ").last().unwrap();
        env.wait_count(w[1], "pass ", last + 4);
    }
    let all: String = hops.iter().map(|h| env.console(h)).collect();
    assert!(!all.contains("blk: error"), "{all}");
    // Whole lines only: the last VM is writing its last one.
    for l in all
        .split_inclusive('\n')
        .filter(|l| l.starts_with("pass ") && l.ends_with('\n'))
    {
        assert!(
            sums.iter().any(|s| l.trim_end().ends_with(s.as_str())),
            "{l}: want {sums:?}"
        );
    }
    contiguous(&all, "pass ");
    env.vm_run(&["kill", "h4"]);
}

/// Shared storage: a guest writing and flushing its qcow2 disk moves to
/// another vm-run on the same image (the source lets go of its locks in
/// its last pause), goes on writing there, and the image is clean and
/// holds every sector the guest flushed. A destination that cannot open
/// the disk fails the migration late: the source takes its disk back and
/// goes on writing.
#[test]
fn shared_disk_moves_with_the_guest() {
    if !have_kvm() || !test_guest::have_tool("qemu-img", "qemu-img") {
        return;
    }
    let _lock = kvm_lock();
    let env = env();
    let img = env.path("shared.qcow2");
    let p = img.to_str().unwrap();
    let o = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", p, "16M"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let disks = serde_json::json!({"disks": [{"id": "vda", "path": img, "format": "qcow2"}]});
    env.start(&env.spec("a", "blk-crash", &disks));
    env.wait_count("a", "flushed ", 5);

    // Late failure: the destination's disk is not there.
    let mut r = env
        .command("vm-migrate")
        .args([
            "recv",
            "--listen",
            "tcp:127.0.0.1:0",
            "--name",
            "x",
            "--disk",
        ])
        .arg(format!("vda={}", env.path("missing.qcow2").display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = listening(&mut r);
    let (code, _, err) = env.run("vm-migrate", &["send", "a", &addr]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("missing.qcow2"), "{err}");
    assert_ne!(finish(r).0, 0);
    assert_eq!(env.running(), ["a"]);
    let now = *env.counts("a", "flushed ").last().unwrap();
    env.wait_count("a", "flushed ", now + 5);

    let mut r = recv(&env, "tcp:127.0.0.1:0", "b");
    let addr = listening(&mut r);
    let (code, _, err) = env.run("vm-migrate", &["send", "a", &addr]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(finish(r).0, 0);
    let last = *env.counts("a", "flushed ").last().unwrap();
    env.wait_count("b", "flushed ", last + 5);
    env.vm_run(&["kill", "b"]);
    let both = env.console("a") + &env.console("b");
    assert!(!both.contains("blk: error"), "{both}");
    let o = std::process::Command::new("qemu-img")
        .args(["check", "-q", p])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    flushed_sectors_hold(&env, "b", &img);
}

/// A guest that dirties 32 MiB of pages a pass, sent at 64 MiB/s with a
/// 20 ms budget, cannot converge on its own: with --auto-converge its
/// vCPUs are held back more each round that does not shrink, and it
/// arrives whole, well before the round limit.
#[test]
fn auto_converge_holds_the_vcpus_back() {
    if !have_kvm() {
        return;
    }
    let _lock = kvm_lock();
    let env = env();
    env.start(&env.spec("a", "memtouch pages=8192", &serde_json::json!({})));
    env.wait_count("a", "touch ", 1);
    let mut r = recv(&env, "tcp:127.0.0.1:0", "b");
    let addr = listening(&mut r);
    let (code, out, err) = env.run(
        "vm-migrate",
        &[
            "send",
            "a",
            &addr,
            "--auto-converge",
            "--bandwidth",
            "64",
            "--max-downtime",
            "20",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let rep = json(&out);
    assert!(rep["throttle"].as_u64().unwrap() > 0, "{rep}");
    // It converged because the vCPUs were held back, not at the 30-round
    // stop (which a throttle that only shows in the report would reach).
    assert!(rep["rounds"].as_u64().unwrap() < 30, "{rep}");
    assert_eq!(finish(r).0, 0);
    let last = *env.counts("a", "touch ").last().unwrap();
    env.wait_count("b", "touch ", last + 2);
    let both = env.console("a") + &env.console("b");
    assert!(!both.contains("MEMORY ERROR"), "{both}");
    contiguous(&both, "touch ");
    env.vm_run(&["kill", "b"]);
}

/// The faults: a destination that takes the hello and dies, one that
/// dies mid-stream, a stream corrupted on the way, a cancel. Each time
/// the send fails with one line, the source runs on with its memory
/// whole, and nothing is left at the destination.
#[test]
fn failures_leave_the_source_running() {
    if !have_kvm() {
        return;
    }
    let _lock = kvm_lock();
    let env = env();
    env.start(&env.spec("a", "memcount pages=64", &serde_json::json!({})));
    env.wait_count("a", "round ", 2);
    let still_runs = |what: &str| {
        assert_eq!(env.running(), ["a"], "{what}");
        let (_, out, _) = env.vm_run(&["state", "a"]);
        assert!(out.contains("running"), "{what}: {out}");
        let now = *env.counts("a", "round ").last().unwrap();
        env.wait_count("a", "round ", now + 2);
        assert!(!env.console("a").contains("MEMORY ERROR"));
    };

    // A fake destination: answers `ready`, reads `cut` bytes, closes.
    for cut in [0usize, 4096, 1 << 20] {
        let sock = env.path(&format!("fake{cut}.sock"));
        let l = UnixListener::bind(&sock).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.write_all(b"{\"reply\":\"ready\"}\n").unwrap();
            let mut buf = vec![0u8; cut];
            let _ = s.read_exact(&mut buf);
        });
        let (code, _, err) = env.run(
            "vm-migrate",
            &[
                "send",
                "a",
                &format!("unix:{}", sock.display()),
                "--streams",
                "1",
            ],
        );
        t.join().unwrap();
        assert_eq!(code, 1, "cut at {cut}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        still_runs(&format!("destination gone after {cut} bytes"));
    }

    // A destination that refuses at once.
    let sock = env.path("refuse.sock");
    let l = UnixListener::bind(&sock).unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.write_all(b"{\"reply\":\"error\",\"error\":\"no room\"}\n")
            .unwrap();
    });
    let (code, _, err) = env.run(
        "vm-migrate",
        &[
            "send",
            "a",
            &format!("unix:{}", sock.display()),
            "--streams",
            "1",
        ],
    );
    t.join().unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("no room"), "{err}");
    still_runs("refused");

    // A byte flipped on the way, past the hello, in a page the guest
    // does not write again: the real destination holds that page owed,
    // refuses the stream when the state comes first, and keeps nothing.
    let mut r = recv(&env, "tcp:127.0.0.1:0", "b");
    let real = listening(&mut r);
    let proxy = env.path("proxy.sock");
    let l = UnixListener::bind(&proxy).unwrap();
    let to = real.trim_start_matches("tcp:").to_string();
    let t = std::thread::spawn(move || {
        let (mut src, _) = l.accept().unwrap();
        let mut dst = std::net::TcpStream::connect(to).unwrap();
        let mut back = dst.try_clone().unwrap();
        let mut src2 = src.try_clone().unwrap();
        let replies = std::thread::spawn(move || {
            let _ = std::io::copy(&mut back, &mut src2);
            let _ = src2.shutdown(std::net::Shutdown::Both);
        });
        let mut buf = vec![0u8; 1 << 16];
        let mut seen = 0usize;
        while let Ok(n) = src.read(&mut buf) {
            if n == 0 {
                break;
            }
            // One bit in the 200 000th byte (in guest memory's pages).
            if (seen..seen + n).contains(&200_000) {
                buf[200_000 - seen] ^= 0x10;
            }
            seen += n;
            if dst.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = dst.shutdown(std::net::Shutdown::Write);
        let _ = replies.join();
    });
    let (code, _, err) = env.run(
        "vm-migrate",
        &[
            "send",
            "a",
            &format!("unix:{}", proxy.display()),
            "--streams",
            "1",
        ],
    );
    t.join().unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("checksum"), "{err}");
    let (code, _, rerr) = finish(r);
    assert_ne!(code, 0, "the destination kept a corrupt VM: {rerr}");
    still_runs("corrupt stream");

    // A cancel while it crawls at 1 MiB/s.
    let mut r = recv(&env, "tcp:127.0.0.1:0", "c");
    let addr = listening(&mut r);
    let send = env
        .command("vm-migrate")
        .args(["send", "a", &addr, "--bandwidth", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_status(&env, "a", "never active", |s| s["status"] == "active");
    let (code, out, err) = env.run("vm-migrate", &["cancel", "a"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["cancelled"], true);
    let (code, _, err) = finish(send);
    assert_eq!(code, 1);
    assert!(err.contains("cancelled"), "{err}");
    // The destination hears it from the stream, not as a cut.
    let (code, _, err) = finish(r);
    assert_ne!(code, 0);
    assert!(
        err.contains("the source ended the migration: cancelled"),
        "{err}"
    );
    still_runs("cancelled");
    // No migration to ask about or cancel now.
    let (code, _, err) = env.run("vm-migrate", &["status", "a"]);
    assert_eq!(code, 1);
    assert!(err.contains("no migration"), "{err}");
    env.vm_run(&["kill", "a"]);
}

/// Kills the VMs started in these run folders (each "host" of the
/// namespace test has its own), for a test that fails half way.
struct Reap(Vec<std::path::PathBuf>);
impl Drop for Reap {
    fn drop(&mut self) {
        for dir in &self.0 {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if let Some(pid) = vm_control::holder(&e.path()) {
                    // SAFETY: killing a VM process this test started.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
            }
        }
    }
}

/// Two network namespaces stand for two hosts, joined by a veth pair:
/// vm-run and vm-migrate recv run in one (with a run folder of its own),
/// the source VM and vm-migrate send in the other, and the guest moves
/// over TCP between their addresses.
#[test]
fn between_two_network_namespaces() {
    if !have_kvm() {
        return;
    }
    let Some(host1) = test_guest::netns::Netns::new("mig1") else {
        return;
    };
    let Some(host2) = test_guest::netns::Netns::new("mig2") else {
        return;
    };
    let _lock = kvm_lock();
    let env = env();
    let (v1, v2) = (
        format!("m1-{}", std::process::id() % 10000),
        format!("m2-{}", std::process::id() % 10000),
    );
    let ok = |o: std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    ok(host1.ip(&[
        "link",
        "add",
        &v1,
        "type",
        "veth",
        "peer",
        "name",
        &v2,
        "netns",
        &host2.name,
    ]));
    ok(host1.ip(&["addr", "add", "10.77.0.1/24", "dev", &v1]));
    ok(host2.ip(&["addr", "add", "10.77.0.2/24", "dev", &v2]));
    for (ns, dev) in [(&host1, &v1), (&host2, &v2)] {
        ok(ns.ip(&["link", "set", dev, "up"]));
        ok(ns.ip(&["link", "set", "lo", "up"]));
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_vm-migrate")).with_file_name("vm-run");
    let me = Path::new(env!("CARGO_BIN_EXE_vm-migrate"));
    let _reap = Reap(vec![env.path("run1"), env.path("run2")]);
    let on = |ns: &test_guest::netns::Netns, prog: &Path, run: &str| {
        let mut c = ns.exec(prog.to_str().unwrap());
        c.env("VMTOOLS_RUN_DIR", env.path(run))
            .env("VMTOOLS_CONFIG_DIR", env.path("defs"))
            .stdin(Stdio::null());
        c
    };
    let spec = env.spec("a", "memcount pages=64", &serde_json::json!({}));
    let o = on(&host1, &bin, "run1")
        .args(["start", "--detach", &spec])
        .output()
        .unwrap();
    ok(o);
    env.wait_count("a", "round ", 2);
    let mut r = on(&host2, me, "run2")
        .args([
            "recv",
            "--listen",
            "tcp:10.77.0.2:0",
            "--name",
            "b",
            "--console",
        ])
        .arg(env.console_path("b"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = listening(&mut r);
    assert!(addr.starts_with("tcp:10.77.0.2:"), "{addr}");
    let o = on(&host1, me, "run1")
        .args(["send", "a", &addr])
        .output()
        .unwrap();
    let (code, out, err) = test_guest::rundir::decode(&o);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["status"], "completed");
    assert_eq!(finish(r).0, 0);
    goes_on(&env, "a", "b");
    let o = on(&host2, &bin, "run2")
        .args(["kill", "b"])
        .output()
        .unwrap();
    ok(o);
    let o = on(&host1, &bin, "run1")
        .args(["list", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "[]",
        "the source ended"
    );
}
