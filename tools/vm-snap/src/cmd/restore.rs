//! `vm-snap restore FILE` (virsh restore): vm-run starts the VM from the
//! file, detached, and this returns once it runs, printing its state as
//! `vm-run start --detach` does (vm-run is exec'd in this process).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

#[derive(Debug)]
pub struct Options<'a> {
    pub file: &'a Path,
    pub paused: bool,
    pub name: Option<&'a str>,
    pub spec: Option<&'a str>,
    pub console: Option<&'a Path>,
    /// `--disk` and `--nic` overrides, passed on to vm-run as given.
    pub disks: &'a [String],
    pub nics: &'a [String],
}

pub fn run(o: &Options<'_>) -> Result<i32> {
    let mut cmd = Command::new(vm_control::sibling_tool("vm-run"));
    cmd.arg("--json")
        .arg("start")
        .arg("--detach")
        .arg("--restore")
        .arg(o.file);
    if o.paused {
        cmd.arg("--paused");
    }
    if let Some(n) = o.name {
        cmd.arg("--name").arg(n);
    }
    if let Some(s) = o.spec {
        cmd.arg("--spec").arg(s);
    }
    if let Some(c) = o.console {
        cmd.arg("--console").arg(c);
    }
    for d in o.disks {
        cmd.arg("--disk").arg(d);
    }
    for n in o.nics {
        cmd.arg("--nic").arg(n);
    }
    // vm-run takes this process's place: its output and exit code are the
    // restore's, and no process waits in between.
    let e = cmd.exec();
    Err(e).context("running vm-run")
}
