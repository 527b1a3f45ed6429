//! One module per subcommand.

pub mod cancel;
pub mod recv;
pub mod send;
pub mod status;

use std::path::PathBuf;

use anyhow::{bail, Result};
use vm_control::Lookup;

/// A running VM's control socket.
pub(crate) fn control_socket(vm: &str) -> Result<(String, PathBuf)> {
    let name = vm_control::vm_name(vm)?;
    match vm_control::lookup(&name)? {
        Lookup::Running { state, .. } => Ok((name, state.control_socket)),
        _ => bail!("VM '{name}' is not running"),
    }
}
