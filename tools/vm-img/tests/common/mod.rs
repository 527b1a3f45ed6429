//! Helpers for vm-img's end-to-end tests: run the built binary and qemu-img
//! (the independent judge) on real files.
#![allow(dead_code)]

pub mod fake_nbd;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn vm_img() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vm-img"))
}

/// Runs vm-img; returns (exit code, stdout, stderr). Fails the test on a panic.
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = vm_img().args(args).output().expect("vm-img runs");
    let r = decode(&out);
    assert!(
        !r.2.contains("panicked") && !r.2.contains("RUST_BACKTRACE"),
        "vm-img {args:?} panicked: {}",
        r.2
    );
    r
}

/// Runs vm-img and requires success.
pub fn ok(args: &[&str]) -> String {
    let (code, out, err) = run(args);
    assert_eq!(code, 0, "vm-img {args:?} failed: {err}");
    out
}

pub fn decode(out: &Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// True when `tool` runs; otherwise the test skips with a printed reason,
/// unless VMTOOLS_REQUIRE names it (CI), where it fails.
pub fn have(tool: &str) -> bool {
    test_guest::have_tool(tool, tool)
}

pub fn qemu_img(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img runs");
    decode(&out)
}

pub fn qemu_ok(args: &[&str]) -> String {
    let (code, out, err) = qemu_img(args);
    assert_eq!(code, 0, "qemu-img {args:?} failed: {out}{err}");
    out
}

/// qemu-io commands on an image (writes patterns, zeroes, discards).
pub fn qemu_io(img: &Path, fmt: &str, cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    c.args(["-f", fmt]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = c.arg(img).output().expect("qemu-io runs");
    let (code, o, e) = decode(&out);
    assert!(
        code == 0 && !o.contains("failed") && e.is_empty(),
        "qemu-io {cmds:?}: {o}{e}"
    );
}

/// `qemu-img check` must find no errors and no leaks.
pub fn qemu_clean(img: &Path) {
    let p = img.to_str().unwrap();
    let (code, out, err) = qemu_img(&["check", p]);
    assert_eq!(code, 0, "qemu-img check {p}: {out}{err}");
    assert!(out.contains("No errors were found"), "{out}");
}

/// `qemu-img compare` must call the two images identical.
pub fn qemu_same(a: &Path, b: &Path) {
    let (code, out, err) = qemu_img(&["compare", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(
        code,
        0,
        "qemu-img compare {} {}: {out}{err}",
        a.display(),
        b.display()
    );
}

pub struct Dir(pub tempfile::TempDir);

impl Dir {
    pub fn new() -> Self {
        Self(tempfile::tempdir().expect("temp dir"))
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
    pub fn s(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A qemu-nbd serving one image on a unix socket to one client after
/// another (`args` before the image: read-only, format, ...), killed on
/// drop.
pub struct NbdServer {
    child: Child,
    pub uri: String,
    pub socket: String,
}

impl NbdServer {
    pub fn start(d: &Dir, img: &str, args: &[&str]) -> Self {
        let socket = d.s("nbd.sock");
        let _ = std::fs::remove_file(&socket);
        let child = Command::new("qemu-nbd")
            .args(["-k", &socket, "-x", "exp", "-t"])
            .args(args)
            .arg(img)
            .stdout(Stdio::null())
            .spawn()
            .expect("qemu-nbd runs");
        let t0 = Instant::now();
        while !Path::new(&socket).exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "qemu-nbd did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            uri: format!("nbd+unix:///exp?socket={socket}"),
            socket,
        }
    }
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs each command on a copy of `img` (`IMG` in it) with vm-img and with
/// qemu-img, in turn: each must say the same (stdout, stderr with the
/// program's name aside, exit code), and with `identical` the two files
/// must end byte for byte the same (without it, the image's end is not
/// compared). Returns vm-img's copy.
pub fn same_as_qemu_img(d: &Dir, img: &Path, commands: &[&[&str]], identical: bool) -> PathBuf {
    let ours = d.path("ours.qcow2");
    let theirs = d.path("theirs.qcow2");
    std::fs::copy(img, &ours).unwrap();
    std::fs::copy(img, &theirs).unwrap();
    let with = |cmd: &[&str], p: &Path| -> Vec<String> {
        (cmd.iter())
            .map(|s| s.replace("IMG", p.to_str().unwrap()))
            .collect()
    };
    for cmd in commands {
        let a = with(cmd, &ours);
        let (code, out, err) = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
        let b = with(cmd, &theirs);
        let (qcode, qout, qerr) = qemu_img(&b.iter().map(String::as_str).collect::<Vec<_>>());
        let names = |s: &str, p: &Path| {
            (s.replace(p.to_str().unwrap(), "IMG").lines())
                .filter(|l| identical || !l.starts_with("Image end offset"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(
            (
                code,
                names(&out, &ours),
                names(&err, &ours).replace("vm-img:", "qemu-img:")
            ),
            (qcode, names(&qout, &theirs), names(&qerr, &theirs)),
            "{cmd:?}"
        );
    }
    assert!(
        !identical || std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
        "the images differ after {commands:?}"
    );
    ours
}

/// The big-endian 64-bit value at `at` in a file (a qcow2 header field or
/// table entry).
pub fn be64(path: &Path, at: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 8];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut b, at)
        .unwrap();
    u64::from_be_bytes(b)
}

/// Writes `value` big-endian at `at` in a file (forging a field or entry).
pub fn poke64(path: &Path, at: u64, value: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&value.to_be_bytes(), at).unwrap();
}

/// `info --output json` of `img` by qemu-img (`tool` "qemu") or by us.
pub fn info_json(tool: &str, img: &str) -> serde_json::Value {
    let out = if tool == "qemu" {
        qemu_ok(&["info", "--output", "json", img])
    } else {
        ok(&["info", "--output", "json", img])
    };
    serde_json::from_str(&out).expect("info prints JSON")
}
