//! `vm-migrate cancel VM` (virsh domjobabort): the migration stops, the
//! VM runs on here and the destination discards what it got.

use std::time::Duration;

use anyhow::{bail, Result};
use vm_control::Request;

pub fn run(vm: &str) -> Result<i32> {
    let (name, sock) = super::control_socket(vm)?;
    let reply = vm_control::call(&sock, &Request::MigrateCancel, Duration::from_secs(10))?;
    if !reply.ok {
        bail!("{}", reply.error.unwrap_or_default());
    }
    println!("{}", serde_json::json!({"vm": name, "cancelled": true}));
    Ok(0)
}
