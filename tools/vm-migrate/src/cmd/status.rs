//! `vm-migrate status VM` (virsh domjobinfo): the migration's progress.

use std::time::Duration;

use anyhow::{bail, Result};
use vm_control::Request;

pub fn run(vm: &str) -> Result<i32> {
    let (name, sock) = super::control_socket(vm)?;
    let reply = vm_control::call(&sock, &Request::MigrateStatus, Duration::from_secs(10))?;
    if !reply.ok {
        bail!("{}", reply.error.unwrap_or_default());
    }
    let mut v = serde_json::to_value(reply.migration.unwrap_or_default())?;
    v["vm"] = name.into();
    println!("{v}");
    Ok(0)
}
