//! `vm-run stats` (virsh domblkstat and domifstat).

use std::time::Duration;

use anyhow::{bail, Result};
use vm_control::Request;

use super::running_state;
use crate::output;

/// virsh domblkstat and domifstat: each device's counters, `ID name value`
/// per line.
pub fn stats(vm: &str, disk: Option<&str>, iface: Option<&str>, json: bool) -> Result<i32> {
    let name = crate::resolve::vm_name(vm)?;
    let st = running_state(&name)?;
    let reply = vm_control::call(&st.control_socket, &Request::Stats, Duration::from_secs(30))?;
    if !reply.ok {
        bail!("{}", reply.error.unwrap_or_else(|| "the VM refused".into()));
    }
    let mut stats = reply.stats.unwrap_or_default();
    if let Some(id) = disk {
        stats.disks.retain(|d| d.id == id);
        stats.nets.clear();
        if stats.disks.is_empty() {
            bail!("VM '{name}' has no disk '{id}'");
        }
    }
    if let Some(id) = iface {
        stats.nets.retain(|n| n.id == id);
        stats.disks.clear();
        if stats.nets.is_empty() {
            bail!("VM '{name}' has no network interface '{id}'");
        }
    }
    if output::json_wanted(json) {
        println!("{}", serde_json::to_string(&stats)?);
        return Ok(0);
    }
    for d in &stats.disks {
        let v = serde_json::to_value(d)?;
        for key in [
            "rd_req",
            "rd_bytes",
            "wr_req",
            "wr_bytes",
            "flush_operations",
            "rd_total_times",
            "wr_total_times",
            "flush_total_times",
            "errs",
        ] {
            println!("{} {key} {}", d.id, v[key]);
        }
    }
    for n in &stats.nets {
        let v = serde_json::to_value(n)?;
        for key in [
            "rx_bytes",
            "rx_packets",
            "rx_errs",
            "rx_drop",
            "tx_bytes",
            "tx_packets",
            "tx_errs",
            "tx_drop",
        ] {
            println!("{} {key} {}", n.id, v[key]);
        }
    }
    Ok(0)
}
