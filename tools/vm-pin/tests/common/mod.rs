//! What vm-pin's tests share: a private run and definitions folder per
//! test, the VM's threads and cgroup files as the kernel shows them.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use test_guest::{have_kvm, GUEST_ELF};
use vm_host::cgroup::Hierarchy;

pub struct Env(pub tempfile::TempDir);

impl Env {
    pub fn cmd(&self, bin: &str) -> Command {
        let mut c = Command::new(bin);
        c.env("VMTOOLS_RUN_DIR", self.0.path().join("run"))
            .env("VMTOOLS_CONFIG_DIR", self.0.path().join("defs"))
            .stdin(Stdio::null());
        c
    }
    pub fn run(&self, bin: &str, args: &[&str]) -> (i32, String, String) {
        let o = self.cmd(bin).args(args).output().unwrap();
        let r = (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        );
        assert!(!r.2.contains("panicked"), "{}", r.2);
        r
    }
    pub fn pin(&self, args: &[&str]) -> (i32, String, String) {
        self.run(env!("CARGO_BIN_EXE_vm-pin"), args)
    }
    pub fn vm_run(&self, args: &[&str]) -> (i32, String, String) {
        self.run(&vm_run_bin(), args)
    }
    pub fn spec(&self, name: &str) -> String {
        let v = serde_json::json!({"name": name, "vcpus": 2, "memory": "64MiB",
            "boot": {"kernel": GUEST_ELF, "cmdline": "mode=heartbeat"}});
        let p = self.0.path().join(format!("{name}.json"));
        std::fs::write(&p, v.to_string()).unwrap();
        p.to_str().unwrap().to_string()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for name in ["pinned", "defd"] {
            let _ = self.vm_run(&["kill", name]);
        }
    }
}

/// vm-run, built beside vm-pin in the same target folder.
pub fn vm_run_bin() -> String {
    let me = PathBuf::from(env!("CARGO_BIN_EXE_vm-pin"));
    me.with_file_name("vm-run").to_str().unwrap().to_string()
}

pub fn allowed(pid: u64, tid: u64) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string()
}

/// The host's online CPUs, as the kernel lists them.
pub fn online() -> String {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .unwrap()
        .trim()
        .to_string()
}

/// Where a VM's groups are, by the hierarchy that holds each controller.
pub enum Group {
    V1(PathBuf),
    V2(PathBuf),
}

impl Group {
    /// The VM's group with the `controller`'s files (`cpu` or `cpuset`).
    pub fn of(controller: &str, name: &str, pid: u64) -> Option<Self> {
        let leaf = format!("vmtools/{name}.{pid}");
        let g = match Hierarchy::detect()? {
            Hierarchy::V1 { cpu, cpuset, .. } => {
                let m = if controller == "cpu" { cpu } else { cpuset };
                Group::V1(m?.join(leaf))
            }
            Hierarchy::V2(root) => Group::V2(root.join(leaf)),
        };
        if g.dir().exists() {
            Some(g)
        } else {
            eprintln!("SKIP (cgroup files): no {controller} group for {name}");
            None
        }
    }
    pub fn dir(&self) -> &PathBuf {
        match self {
            Group::V1(d) | Group::V2(d) => d,
        }
    }
    pub fn read(&self, file: &str) -> String {
        let p = self.dir().join(file);
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .trim()
            .to_string()
    }
    /// The thread ids in a child group.
    pub fn threads(&self, child: &str) -> Vec<u64> {
        let file = match self {
            Group::V1(_) => "tasks",
            Group::V2(_) => "cgroup.threads",
        };
        self.read(&format!("{child}/{file}"))
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    }
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

pub fn usable() -> bool {
    if !have_kvm() {
        return false;
    }
    let ok = std::path::Path::new(&vm_run_bin()).exists();
    if !ok {
        eprintln!("SKIP: vm-run is not built beside vm-pin (cargo test --workspace builds both)");
    }
    ok
}
