//! `vm-migrate recv`: waits for one incoming migration and starts the VM
//! from it: `vm-run start --detach --incoming` takes the connection (as
//! its descriptor 3), checks the arriving hello against this host, and
//! returns once the guest runs here, printing its state.

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use crate::cli::RecvArgs;
use crate::transport::{self, Target};

/// Where vm-run finds the stream.
const STREAM_FD: i32 = 3;

pub fn run(a: &RecvArgs) -> Result<i32> {
    let target: Target = a.at.as_deref().unwrap_or(&a.listen).parse()?;
    let stdio = target == Target::Stdio;
    let (conn, relay) = transport::accept(&target)?;
    let mut cmd = Command::new(vm_control::sibling_tool("vm-run"));
    cmd.arg("--json")
        .arg("start")
        .arg("--detach")
        .arg("--incoming")
        .arg(STREAM_FD.to_string());
    if let Some(s) = &a.spec {
        cmd.arg("--spec").arg(s);
    }
    if let Some(n) = &a.name {
        cmd.arg("--name").arg(n);
    }
    for d in &a.disk {
        cmd.arg("--disk").arg(d);
    }
    for n in &a.nic {
        cmd.arg("--nic").arg(n);
    }
    if let Some(c) = &a.console {
        cmd.arg("--console").arg(c);
    }
    if a.paused {
        cmd.arg("--paused");
    }
    cmd.stdin(Stdio::null());
    if stdio {
        // stdout carries the replies to the source: vm-run's record goes
        // to stderr instead.
        cmd.stdout(Stdio::from(std::io::stderr().as_fd().try_clone_to_owned()?));
    }
    let fd = conn.as_raw_fd();
    // SAFETY: in the child before exec: the connection is put at
    // STREAM_FD without close-on-exec (dup2 clears it; the same number
    // needs the flag cleared by hand). Async-signal-safe calls only.
    unsafe {
        cmd.pre_exec(move || {
            let r = if fd == STREAM_FD {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, STREAM_FD)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = cmd.status().context("running vm-run")?;
    // Ours goes: the stream's end is now the VM process's alone.
    drop(conn);
    if let Some(r) = relay {
        // The replies' relay ends when the VM process closes the stream.
        let _ = r.join();
    }
    Ok(status.code().unwrap_or(1))
}
