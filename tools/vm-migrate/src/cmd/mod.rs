//! One module per subcommand.

pub mod cancel;
pub mod recv;
pub mod send;
pub mod set;
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

/// Prints the migration report a reply carries, named for its VM, or
/// fails with the reply's error.
pub(crate) fn print_report(name: String, reply: vm_control::Reply) -> Result<i32> {
    if !reply.ok {
        bail!("{}", reply.error.unwrap_or_default());
    }
    let mut v = serde_json::to_value(reply.migration.unwrap_or_default())?;
    v["vm"] = name.into();
    println!("{v}");
    Ok(0)
}
