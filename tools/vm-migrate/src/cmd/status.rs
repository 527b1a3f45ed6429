//! `vm-migrate status VM` (virsh domjobinfo): the migration's progress.

use std::time::Duration;

use anyhow::Result;
use vm_control::Request;

pub fn run(vm: &str) -> Result<i32> {
    let (name, sock) = super::control_socket(vm)?;
    let reply = vm_control::call(&sock, &Request::MigrateStatus, Duration::from_secs(10))?;
    super::print_report(name, reply)
}
