//! Helpers shared by vm-run's integration tests: a private run and config
//! folder per test, running vm-run, and reading its output.

#![allow(dead_code)]

pub mod disk;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use test_guest::GUEST_ELF;

pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vm-run"));
        c.env("VMTOOLS_RUN_DIR", self.run_dir())
            .env("VMTOOLS_CONFIG_DIR", self.dir.path().join("defs"));
        c
    }
    pub fn vm_run(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.cmd().args(args).stdin(Stdio::null()).output().unwrap();
        decode(&out)
    }
    /// Writes a spec for the test guest in `mode`, with `extra` fields.
    pub fn spec(&self, name: &str, mode: &str, extra: &serde_json::Value) -> String {
        let mut v = serde_json::json!({
            "name": name, "vcpus": 1, "memory": "64MiB",
            "boot": {"kernel": GUEST_ELF, "cmdline": format!("mode={mode}")},
            "on_reboot": "destroy"
        });
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        let p = self.dir.path().join(format!("{name}.json"));
        std::fs::write(&p, v.to_string()).unwrap();
        p.to_str().unwrap().to_string()
    }
    pub fn console(&self, name: &str) -> String {
        std::fs::read_to_string(self.run_dir().join(name).join("console.log")).unwrap_or_default()
    }
    pub fn ticks(&self, name: &str) -> usize {
        self.console(name).matches("tick").count()
    }
    pub fn wait_ticks(&self, name: &str, n: usize) {
        let t0 = Instant::now();
        while self.ticks(name) < n {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "heartbeat stalled at {}",
                self.ticks(name)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Env {
    /// A failed test must not leave VMs running: kill what is left. The
    /// process is the one that holds each VM's folder (the kernel's lock
    /// table), never the pid in its state.json, which tests forge: a
    /// failed forged-pid test once left its VM running, unreachable once
    /// its folder was deleted, and killed a bystander instead.
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.run_dir()) else {
            return;
        };
        for e in entries.flatten() {
            if let Some(pid) = vm_control::holder(&e.path()) {
                // SAFETY: killing a VM process this test started.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

/// The hierarchy holding the cpu controller (v1 on the development
/// machine; v2 in scripts/test's second pass), or None with a note.
pub fn cpu_hierarchy() -> Option<vm_host::cgroup::Hierarchy> {
    use vm_host::cgroup::Hierarchy;
    if let Some(h @ (Hierarchy::V1 { cpu: Some(_), .. } | Hierarchy::V2(_))) = Hierarchy::detect() {
        return Some(h);
    }
    eprintln!("SKIP (cgroup placement check): no cpu controller here");
    None
}

/// Every thread of `pid` whose name starts with `prefix` (`vcpu`,
/// `iothread`) carries two seccomp filters (the process's and its own)
/// within a few seconds.
pub fn assert_confined(pid: u64, prefix: &str) {
    let filters = || -> Vec<(String, String)> {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
            .filter_map(|t| {
                let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
                let comm = comm.trim().to_string();
                comm.starts_with(prefix).then(|| {
                    let st = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
                    let n = st
                        .lines()
                        .find_map(|l| l.strip_prefix("Seccomp_filters:"))
                        .unwrap_or("?")
                        .trim()
                        .to_string();
                    (comm, n)
                })
            })
            .collect()
    };
    let t0 = Instant::now();
    loop {
        let f = filters();
        if !f.is_empty() && f.iter().all(|(_, n)| n == "2") {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{prefix} filters: {f:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn decode(out: &Output) -> (i32, String, String) {
    let r = (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(!r.2.contains("panicked"), "vm-run panicked: {}", r.2);
    r
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

pub fn error_line(err: &str) -> String {
    let lines: Vec<_> = err
        .lines()
        .filter(|l| l.starts_with("vm-run: error: "))
        .collect();
    assert_eq!(lines.len(), 1, "one error line expected: {err}");
    lines[0].to_string()
}

/// Polls `f` every 20 ms until it holds; fails the test after a minute.
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a heartbeat guest, detached; returns its pid.
pub fn heartbeat(e: &Env, name: &str) -> u32 {
    let s = e.spec(name, "heartbeat", &serde_json::json!({}));
    let (code, out, err) = e.vm_run(&["start", "--detach", &s]);
    assert_eq!(code, 0, "{err}");
    e.wait_ticks(name, 1);
    json(&out)["pid"].as_u64().unwrap() as u32
}

/// Whether the process runs (not gone, not a zombie).
pub fn alive(pid: u32) -> bool {
    vm_control::Liveness::of(pid) == vm_control::Liveness::Alive
}

/// Waits up to 20 s for the process to end; fails the test otherwise.
pub fn wait_dead(pid: u32) {
    let t0 = Instant::now();
    while alive(pid) {
        assert!(t0.elapsed() < Duration::from_secs(20), "pid {pid} lives on");
        std::thread::sleep(Duration::from_millis(20));
    }
}
