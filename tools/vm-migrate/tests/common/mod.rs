//! What the vm-migrate tests share: a run folder, a receiving
//! vm-migrate in the background and its listening address.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use test_guest::rundir::{contiguous, counts_in, json, RunDir};

pub fn env() -> RunDir {
    RunDir::new(Path::new(env!("CARGO_BIN_EXE_vm-migrate")))
}

/// `vm-migrate recv` in the background, its state record on stdout.
pub fn recv(env: &RunDir, listen: &str, name: &str) -> Child {
    let console = env.console_path(name);
    env.command("vm-migrate")
        .args(["recv", "--listen", listen, "--name", name, "--console"])
        .arg(&console)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for the listening line on `child`'s stderr; returns its address.
pub fn listening(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stderr.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim()
        .strip_prefix("vm-migrate: listening on ")
        .unwrap_or_else(|| panic!("no listening line: {line}"))
        .to_string()
}

pub fn finish(child: Child) -> (i32, String, String) {
    test_guest::rundir::decode(&child.wait_with_output().unwrap())
}

/// A stream record made by hand: kind, CRC-32, length, payload.
pub fn record(kind: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u64;
    let mut summed = kind.to_le_bytes().to_vec();
    summed.extend_from_slice(&len.to_le_bytes());
    summed.extend_from_slice(payload);
    let mut r = kind.to_le_bytes().to_vec();
    r.extend_from_slice(&test_guest::crc32(&summed).to_le_bytes());
    r.extend_from_slice(&len.to_le_bytes());
    r.extend_from_slice(payload);
    r
}

/// A page record made by hand: its checksum covers kind, length, address
/// and each page's own CRC-32 (`sums`, one per page of `data`).
pub fn page_record(gpa: u64, data: &[u8], sums: &[u32]) -> Vec<u8> {
    let len = (8 + 4 * sums.len() + data.len()) as u64;
    let mut summed = 2u32.to_le_bytes().to_vec();
    summed.extend_from_slice(&len.to_le_bytes());
    summed.extend_from_slice(&gpa.to_le_bytes());
    for s in sums {
        summed.extend_from_slice(&s.to_le_bytes());
    }
    let mut r = 2u32.to_le_bytes().to_vec();
    r.extend_from_slice(&test_guest::crc32(&summed).to_le_bytes());
    r.extend_from_slice(&summed[4..]);
    r.extend_from_slice(data);
    r
}

/// Feeds a stream made by hand (`body`: the records after the header) to
/// a real `vm-migrate recv` (with `args`), which must answer `ready`
/// first when `ready` says so, then an error line naming `expect`, exit
/// non-zero and leave no VM behind.
pub fn feed_hostile(
    env: &RunDir,
    tag: &str,
    args: &[&str],
    body: &[u8],
    ready: bool,
    what: &str,
    expect: &str,
) {
    let sock = env.path(&format!("{tag}.sock"));
    let listen = format!("unix:{}", sock.display());
    let mut r = env
        .command("vm-migrate")
        .args(["recv", "--listen", &listen, "--name", "h", "--console"])
        .arg(env.console_path("h"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    listening(&mut r);
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut stream = header();
    stream.extend_from_slice(body);
    // The destination may stop reading at the first bad record; the
    // end of what is sent is the end of the stream.
    let _ = s.write_all(&stream);
    let _ = s.shutdown(std::net::Shutdown::Write);
    refused(env, &mut s, r, ready, what, expect);
}

/// A stream's header, as the source writes it.
pub fn header() -> Vec<u8> {
    let mut h = b"VMTMIGR\n".to_vec();
    h.extend_from_slice(&2u32.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h
}

/// The destination at the far end of `s` (the `vm-migrate recv` `r`)
/// answers `ready` first when `ready` says so, then an error naming
/// `expect`; it exits non-zero and leaves no VM behind.
pub fn refused(
    env: &RunDir,
    s: &mut std::os::unix::net::UnixStream,
    r: Child,
    ready: bool,
    what: &str,
    expect: &str,
) {
    let mut replies = String::new();
    let _ = s.read_to_string(&mut replies);
    let mut lines = replies.lines();
    if ready {
        assert_eq!(
            lines.next(),
            Some("{\"reply\":\"ready\"}"),
            "{what}: {replies}"
        );
    }
    let err = lines
        .next()
        .unwrap_or_else(|| panic!("{what}: no error reply: {replies}"));
    assert!(err.starts_with("{\"reply\":\"error\""), "{what}: {err}");
    assert!(err.contains(expect), "{what}: {err}");
    let (code, _, rerr) = finish(r);
    assert_ne!(code, 0, "{what}: {rerr}");
    assert!(env.running().is_empty(), "{what}: a VM was left");
}

/// The guest's disk (`image`, any format) as raw bytes, after checking
/// that it holds every sector the blk-crash guest `vm` reported flushed,
/// each with its own pattern.
pub fn flushed_sectors_hold(env: &RunDir, vm: &str, image: &Path) -> Vec<u8> {
    let raw = image.with_extension("flushed.raw");
    let o = std::process::Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(image)
        .arg(&raw)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let data = std::fs::read(&raw).unwrap();
    let flushed = *env.counts(vm, "flushed ").last().unwrap();
    for i in 0..=flushed {
        let at = i as usize * 512;
        assert_eq!(
            &data[at..at + 512],
            &test_guest::pattern(0xc0de_0000 + i, 512)[..],
            "sector {i} of {flushed}"
        );
    }
    data
}

/// The memory-checking guest goes on at the destination from where it
/// was: its rounds continue one by one across both consoles, and none
/// reports a memory error.
pub fn goes_on(env: &RunDir, from: &str, to: &str) {
    goes_on_after(env, env.console(from), to);
}

/// As [`goes_on`], from what the guest printed before (`before`).
pub fn goes_on_after(env: &RunDir, before: String, to: &str) {
    let last = *counts_in(&before, "round ").last().unwrap();
    env.wait_count(to, "round ", last + 3);
    let both = before + &env.console(to);
    assert!(!both.contains("MEMORY ERROR"), "{both}");
    contiguous(&both, "round ");
}

/// Waits (20 s at most) until `vm-migrate status VM` shows what `until`
/// looks for (`what` names it in the failure).
pub fn wait_for_status(
    env: &RunDir,
    vm: &str,
    what: &str,
    until: impl Fn(&serde_json::Value) -> bool,
) {
    let t0 = Instant::now();
    loop {
        let (code, out, _) = env.run("vm-migrate", &["status", vm]);
        if code == 0 && until(&json(&out)) {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
