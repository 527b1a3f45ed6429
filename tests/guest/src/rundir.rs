//! A run folder per test for the tools' integration tests: the tools run
//! with it as their state and config folders, specs for the test guest,
//! its console read back, and every VM it started killed at the end.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::GUEST_ELF;

#[derive(Debug)]
pub struct RunDir {
    pub dir: tempfile::TempDir,
    /// Where the built tools are (the tested tool's folder).
    bin: PathBuf,
}

/// Exit code, stdout and stderr.
pub fn decode(o: &Output) -> (i32, String, String) {
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

pub fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The counts after `word` in `text`, asserted to go up one by one: a VM
/// saved or migrated mid-line finishes that line where it goes on, so
/// the consoles before and after read as one run.
pub fn contiguous(text: &str, word: &str) -> Vec<u32> {
    let c = counts_in(text, word);
    for w in c.windows(2) {
        assert_eq!(w[1], w[0] + 1, "counts go on one by one: {text}");
    }
    c
}

/// The counts after `word` on the finished lines of `text`. A console
/// read while the guest writes may end inside a line ("flushed 3" of
/// "flushed 34"): that line is left out until its newline arrives.
pub fn counts_in(text: &str, word: &str) -> Vec<u32> {
    text.split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n'))
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix(word))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect()
}

impl RunDir {
    /// `tool` is the tested tool's executable; vm-run must be beside it
    /// (`cargo test --workspace` builds both).
    pub fn new(tool: &Path) -> Self {
        let bin = tool.parent().expect("a folder").to_path_buf();
        assert!(
            bin.join("vm-run").is_file(),
            "{} is missing: build it first (cargo build -p vm-run)",
            bin.join("vm-run").display()
        );
        Self {
            dir: tempfile::tempdir().unwrap(),
            bin,
        }
    }
    /// The folder the tools are run from.
    pub fn bin(&self) -> &Path {
        &self.bin
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub fn run_dir(&self) -> PathBuf {
        self.path("run")
    }
    /// A tool (by name, beside the tested one) with this run folder.
    pub fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(self.bin.join(tool));
        c.env("VMTOOLS_RUN_DIR", self.run_dir())
            .env("VMTOOLS_CONFIG_DIR", self.path("defs"))
            .stdin(Stdio::null());
        c
    }
    pub fn run(&self, tool: &str, args: &[&str]) -> (i32, String, String) {
        decode(&self.command(tool).args(args).output().unwrap())
    }
    pub fn vm_run(&self, args: &[&str]) -> (i32, String, String) {
        self.run("vm-run", args)
    }
    /// A spec for the test guest in `mode`, with `extra` fields.
    pub fn spec(&self, name: &str, mode: &str, extra: &serde_json::Value) -> String {
        // The console outlives the VM's run folder (which goes with it).
        let mut v = serde_json::json!({
            "name": name, "vcpus": 1, "memory": "64MiB",
            "boot": {"kernel": GUEST_ELF, "cmdline": format!("mode={mode}")},
            "serial": {"mode": "file", "path": self.console_path(name)},
        });
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        let p = self.path(&format!("{name}.json"));
        std::fs::write(&p, v.to_string()).unwrap();
        p.to_str().unwrap().to_string()
    }
    pub fn start(&self, spec: &str) {
        let (code, _, err) = self.vm_run(&["start", "--detach", spec]);
        assert_eq!(code, 0, "{err}");
    }
    pub fn console_path(&self, name: &str) -> PathBuf {
        self.path(&format!("{name}.console"))
    }
    pub fn console(&self, name: &str) -> String {
        std::fs::read_to_string(self.console_path(name)).unwrap_or_default()
    }
    /// The counts after `word` in the VM's console, in order.
    pub fn counts(&self, name: &str, word: &str) -> Vec<u32> {
        counts_in(&self.console(name), word)
    }
    pub fn wait_count(&self, name: &str, word: &str, n: u32) {
        let t0 = Instant::now();
        while self.counts(name, word).last().is_none_or(|&c| c < n) {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "{name}: no {word}{n} in {}",
                self.console(name)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    /// Names of the running VMs.
    pub fn running(&self) -> Vec<String> {
        let (code, out, err) = self.vm_run(&["list", "--json"]);
        assert_eq!(code, 0, "{err}");
        let v: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        v.iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for RunDir {
    /// A failed test must not leave VMs running.
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
