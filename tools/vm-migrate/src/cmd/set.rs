//! `vm-migrate set VM [--max-downtime MS] [--bandwidth MIB_S|unlimited]`
//! (virsh migrate-setmaxdowntime and migrate-setspeed on a running job):
//! the migration in progress goes by the new knobs from its next record
//! or round; prints its progress with them, as `status` does.

use std::time::Duration;

use anyhow::Result;
use vm_control::Request;

use crate::cli::{Cap, SetArgs};

pub fn run(a: &SetArgs) -> Result<i32> {
    let (name, sock) = super::control_socket(&a.vm)?;
    let req = Request::MigrateSet {
        max_downtime_ms: a.max_downtime,
        bandwidth_mib: a.bandwidth.map(|c| match c {
            Cap::MibPerSec(n) => n,
            Cap::Unlimited => 0,
        }),
    };
    let reply = vm_control::call(&sock, &req, Duration::from_secs(10))?;
    super::print_report(name, reply)
}
