//! `vm-run kill` (virsh destroy) and `vm-run wait`.

use std::time::Duration;

use anyhow::{bail, Result};
use vm_control::{Lookup, Request};
use vm_spec::RunState;

use super::{is_gone, is_refused, running, send, wait_released, KILL_WAIT};
use crate::output;

pub fn kill(vm: &str, json: bool) -> Result<i32> {
    let name = crate::resolve::vm_name(vm)?;
    let (dir, st) = match vm_control::lookup(&name)? {
        Lookup::Running { dir, state } => (dir, state),
        Lookup::Dead { dir, mut state } => {
            // Its process is gone: clear what it left, if it is ours.
            vm_control::remove_if_dead(&dir)?;
            crate::placement::remove_stale_groups();
            state.state = RunState::Shutoff;
            state.reason = "destroyed".into();
            output::print_state(&state, json);
            return Ok(0);
        }
        Lookup::Absent { .. } => return running(&name).map(|_| 0),
    };
    match send(&dir, &Request::Kill) {
        Ok(Some(s)) => {
            wait_released(&dir, st.pid, KILL_WAIT);
            output::print_state(&s, json);
        }
        // Another user's VM (the peer check said no): leave it alone.
        Err(e) if is_refused(&e) => return Err(e),
        // It ended meanwhile (another client's save or migration): there
        // is nothing to kill, and its pid is no longer proof of anything.
        Err(e) if is_gone(&e) && vm_control::holder(&dir) != Some(st.pid) => {
            wait_released(&dir, st.pid, KILL_WAIT);
            bail!("VM '{name}' ended before it could be killed");
        }
        _ => {
            // The VM does not answer: end the process that provably holds
            // its folder, then clear the folder once nobody holds it.
            vm_control::signal_vm(&dir, st.pid, libc::SIGKILL)?;
            if !wait_released(&dir, st.pid, KILL_WAIT) {
                bail!("VM '{name}' (pid {}) did not end after SIGKILL", st.pid);
            }
            vm_control::remove_if_dead(&dir)?;
            // Killed outright, it left its groups (as far as the kernel
            // lets them go before the process is reaped).
            crate::placement::remove_stale_groups();
        }
    }
    Ok(0)
}

pub fn wait(vm: &str) -> Result<i32> {
    let name = crate::resolve::vm_name(vm)?;
    let (dir, st) = running(&name)?;
    wait_released(&dir, st.pid, Duration::MAX);
    Ok(0)
}
