//! `vm-run disks` and `vm-run ifaces` (virsh domblklist and domiflist).

use anyhow::{anyhow, Result};
use vm_spec::VmSpec;

use super::{current_state, running_state};
use crate::output;

/// virsh domiflist: a running VM's NICs with their taps and MACs.
pub fn ifaces(vm: &str, json: bool) -> Result<i32> {
    let name = crate::resolve::vm_name(vm)?;
    let st = running_state(&name)?;
    // The tap's state as the host sees it (this network namespace's):
    // taps report no operational state, so up means up with a carrier.
    let mut nl = vm_host::netlink::Netlink::open().ok();
    let rows: Vec<_> = st
        .spec
        .nets
        .iter()
        .zip(&st.nets)
        .map(|(n, s)| {
            let state = nl
                .as_mut()
                .and_then(|nl| nl.link(&s.tap).ok().flatten())
                .map_or("unknown", |l| match (l.up, l.lower_up) {
                    (true, true) => "up",
                    (true, false) => "no-carrier",
                    (false, _) => "down",
                });
            serde_json::json!({
                "state": state,
                "id": n.id,
                "interface": s.tap,
                "type": if n.bridge.is_some() { "bridge" } else { "ethernet" },
                "source": n.bridge,
                "model": "virtio",
                "mac": s.mac.to_string(),
                "queues": n.queues,
            })
        })
        .collect();
    if output::json_wanted(json) {
        println!("{}", serde_json::Value::Array(rows));
        return Ok(0);
    }
    println!(
        " {:<10} {:<9} {:<10} {:<7} MAC",
        "Interface", "Type", "Source", "Model"
    );
    println!("{}", "-".repeat(64));
    for r in &rows {
        println!(
            " {:<10} {:<9} {:<10} {:<7} {}",
            output::escape(r["interface"].as_str().unwrap_or("")),
            r["type"].as_str().unwrap_or(""),
            output::escape(r["source"].as_str().unwrap_or("-")),
            "virtio",
            r["mac"].as_str().unwrap_or("")
        );
    }
    Ok(0)
}

/// virsh domblklist: a running VM's disks with their current top image,
/// or a defined VM's from its spec.
pub fn disks(vm: &str, json: bool) -> Result<i32> {
    let name = crate::resolve::vm_name(vm)?;
    let spec = match current_state(&name) {
        Ok(st) => {
            let mut spec = st.spec;
            for (d, s) in spec.disks.iter_mut().zip(&st.disks) {
                d.path.clone_from(&s.top);
            }
            spec
        }
        Err(e) => {
            let path = vm_control::defined_spec_path(&name)?;
            if !path.exists() {
                return Err(e);
            }
            VmSpec::from_json(&std::fs::read_to_string(&path)?).map_err(|e| anyhow!("{e}"))?
        }
    };
    if output::json_wanted(json) {
        let rows: Vec<_> = spec
            .disks
            .iter()
            .map(|d| {
                serde_json::json!({
                    "id": d.id, "source": d.path, "format": d.format.as_str(),
                    "readonly": d.readonly, "cache": d.cache.as_str(),
                    "iothread": d.iothread, "serial": d.serial,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(0);
    }
    println!(" {:<8} Source", "Target");
    println!("{}", "-".repeat(48));
    for d in &spec.disks {
        println!(
            " {:<8} {}",
            d.id,
            output::escape(&d.path.display().to_string())
        );
    }
    Ok(0)
}
