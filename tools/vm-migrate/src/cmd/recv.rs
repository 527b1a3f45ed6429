//! `vm-migrate recv`: waits for one incoming migration and starts the VM
//! from it: `vm-run start --detach --incoming` takes the connection (as
//! its descriptor 3) and the listener (as 4, for further streams), checks the arriving hello against this host, and
//! returns once the guest runs here, printing its state.

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use crate::cli::RecvArgs;
use crate::transport::{self, Target};

/// Where vm-run finds the stream, and the listener the source's further
/// streams connect to.
const STREAM_FD: i32 = 3;
const LISTENER_FD: i32 = 4;

pub fn run(a: &RecvArgs) -> Result<i32> {
    let target: Target = a.at.as_deref().unwrap_or(&a.listen).parse()?;
    let stdio = target == Target::Stdio;
    let transport::Accepted {
        conn,
        listener,
        relay,
        bound,
    } = transport::accept(&target)?;
    let mut cmd = Command::new(vm_control::sibling_tool("vm-run"));
    cmd.arg("--json")
        .arg("start")
        .arg("--detach")
        .arg("--incoming")
        .arg(STREAM_FD.to_string());
    if listener.is_some() {
        cmd.arg("--incoming-listener").arg(LISTENER_FD.to_string());
    }
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
    let lfd = listener.as_ref().map(AsRawFd::as_raw_fd);
    // SAFETY: in the child before exec: the connection goes to STREAM_FD
    // and the listener to LISTENER_FD, both without close-on-exec. Each
    // is first copied above both numbers (close-on-exec), so neither
    // dup2 can close the other's source; dup2 clears the flag on its
    // copy. Async-signal-safe calls only.
    unsafe {
        cmd.pre_exec(move || {
            let high = |fd: i32| libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 64);
            let moves = [(Some(fd), STREAM_FD), (lfd, LISTENER_FD)];
            let mut copies = [-1; 2];
            for (i, (from, _)) in moves.iter().enumerate() {
                if let Some(from) = *from {
                    copies[i] = high(from);
                    if copies[i] < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
            for (i, (_, to)) in moves.iter().enumerate() {
                if copies[i] >= 0 && libc::dup2(copies[i], *to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let status = cmd.status().context("running vm-run")?;
    // Ours go: the stream's end is now the VM process's alone.
    drop(conn);
    drop(listener);
    drop(bound);
    if let Some(r) = relay {
        // The replies' relay ends when the VM process closes the stream.
        let _ = r.join();
    }
    Ok(status.code().unwrap_or(1))
}
