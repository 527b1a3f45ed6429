//! `vm-run shutdown` (virsh shutdown): ask the guest, wait, and with --force end it.

use std::time::Duration;

use anyhow::{bail, Result};
use vm_control::Request;

use super::{running, send, wait_released, KILL_WAIT};
use crate::output;

pub fn shutdown(
    vm: &str,
    mode: vm_control::ShutdownMode,
    timeout: u64,
    force: bool,
    json: bool,
) -> Result<i32> {
    let name = crate::resolve::vm_name(vm)?;
    let (dir, st) = running(&name)?;
    send(&dir, &Request::Shutdown { mode })?;
    if wait_released(&dir, st.pid, Duration::from_secs(timeout)) {
        if output::json_wanted(json) {
            println!(
                "{}",
                serde_json::json!({"name": name, "state": "shutoff", "reason": "shutdown"})
            );
        }
        return Ok(0);
    }
    if force {
        if send(&dir, &Request::Kill).is_err() || !wait_released(&dir, st.pid, KILL_WAIT) {
            vm_control::signal_vm(&dir, st.pid, libc::SIGKILL)?;
            wait_released(&dir, st.pid, KILL_WAIT);
            vm_control::remove_if_dead(&dir)?;
        }
        return Ok(0);
    }
    bail!("VM '{name}' did not shut down within {timeout} s (use --force to kill it)")
}
