//! One module per subcommand (vm-img's layout), and what they share:
//! finding a VM and asking it over its control socket.

pub mod console;
pub mod control;
pub mod define;
pub mod devices;
pub mod kill;
pub mod list;
pub mod shutdown;
pub mod start;
pub mod stats;
pub mod status;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use vm_control::{Liveness, Lookup, Request};
use vm_spec::{RunState, VmState};

/// Whether a definition of `name` exists.
pub(super) fn is_defined(name: &str) -> bool {
    vm_control::defined_spec_path(name).is_ok_and(|p| p.exists())
}

/// A VM's state: a running VM's (its pid is the process that holds the
/// VM's folder, as the kernel says), or a dead one's as `crashed`.
pub fn current_state(name: &str) -> Result<VmState> {
    match vm_control::lookup(name)? {
        Lookup::Running { state, .. } => Ok(state),
        Lookup::Dead { mut state, .. } => {
            state.state = RunState::Crashed;
            state.reason = "the VM process died".into();
            Ok(state)
        }
        Lookup::Absent { .. } if is_defined(name) => bail!("VM '{name}' is not running"),
        Lookup::Absent { .. } => bail!("no VM named '{name}'"),
    }
}

/// A running VM's folder and state, or why there is none.
pub(super) fn running(name: &str) -> Result<(PathBuf, VmState)> {
    match vm_control::lookup(name)? {
        Lookup::Running { dir, state } => Ok((dir, state)),
        Lookup::Dead { state, .. } => bail!(
            "VM '{name}' is not running: its process (pid {}) died",
            state.pid
        ),
        Lookup::Absent { .. } if is_defined(name) => bail!("VM '{name}' is not running"),
        Lookup::Absent { .. } => bail!("no VM named '{name}'"),
    }
}

pub(super) fn running_state(name: &str) -> Result<VmState> {
    running(name).map(|(_, st)| st)
}

/// Sends one request to the VM and returns its new state.
pub fn request(name: &str, req: &Request) -> Result<Option<VmState>> {
    let (dir, _) = running(name)?;
    send(&dir, req)
}

pub(super) fn send(dir: &Path, req: &Request) -> Result<Option<VmState>> {
    let reply = vm_control::call(&dir.join("control.sock"), req, Duration::from_secs(30))?;
    if !reply.ok {
        bail!("{}", reply.error.unwrap_or_else(|| "the VM refused".into()));
    }
    Ok(reply.state.map(|b| *b))
}

pub(super) fn is_refused(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<vm_control::Error>(),
        Some(vm_control::Error::Refused(_))
    )
}

/// The VM ended while we asked it (see `vm_control::Error::Gone`).
pub(super) fn is_gone(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<vm_control::Error>(),
        Some(vm_control::Error::Gone(_))
    )
}

/// Waits until the VM process `pid` no longer holds `dir` and has ended
/// (its disks and taps are closed).
pub(super) fn wait_released(dir: &Path, pid: u32, timeout: Duration) -> bool {
    let t0 = Instant::now();
    while vm_control::holder(dir) == Some(pid) || Liveness::of(pid) == Liveness::Alive {
        if t0.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// How long a killed VM may take to let go of its folder.
pub(super) const KILL_WAIT: Duration = Duration::from_secs(10);
