//! `vm-net bridge`: Linux bridges and their ports (brctl, ip link).

use anyhow::{bail, Result};
use vm_host::netlink::{Link, Netlink, VMTOOLS_ALIAS};

use super::{
    check_name, delete, find, find_bridge, is_bridge, need_net_admin, netlink, record, show,
};
use crate::cli::Bridge;

pub(crate) fn bridge(b: &Bridge, json: bool) -> Result<()> {
    match b {
        Bridge::Add { name, may_exist } => {
            check_name(name)?;
            need_net_admin()?;
            let mut nl = netlink()?;
            if let Some(l) = nl.link(name)? {
                if !(is_bridge(&l) && *may_exist) {
                    bail!(
                        "'{name}' exists ({})",
                        l.kind.as_deref().unwrap_or("a device")
                    );
                }
            } else {
                nl.add_bridge(name)?;
                let l = find(&mut nl, name)?;
                if let Err(e) = nl.set_alias(l.index, VMTOOLS_ALIAS, &format!("marking {name}")) {
                    let _ = nl.delete_link(l.index, name);
                    return Err(e.into());
                }
            }
            show(&mut nl, name, json)
        }
        Bridge::Del { name, if_exists } => delete(name, *if_exists, "bridge", is_bridge),
        Bridge::List => {
            let mut nl = netlink()?;
            let all = nl.links()?;
            let rows: Vec<_> = all
                .iter()
                .filter(|l| is_bridge(l))
                .map(|b| {
                    let mut v = record(b, &all, None);
                    v["ports"] = all
                        .iter()
                        .filter(|p| p.master == Some(b.index))
                        .map(|p| p.name.clone())
                        .collect();
                    v
                })
                .collect();
            if json {
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!(
                    "{:<16}{:<8}{:<8}interfaces",
                    "bridge name", "index", "state"
                );
                for r in &rows {
                    let ports: Vec<_> = r["ports"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p.as_str())
                        .collect();
                    println!(
                        "{:<16}{:<8}{:<8}{}",
                        vm_spec::text::escape(r["ifname"].as_str().unwrap_or("")),
                        r["ifindex"],
                        if r["up"] == true { "up" } else { "down" },
                        vm_spec::text::escape(&ports.join(" "))
                    );
                }
            }
            Ok(())
        }
        Bridge::Attach { bridge, iface } => {
            let (mut nl, b, i) = bridge_and_port(bridge, iface)?;
            if i.index == b.index {
                bail!("a bridge cannot be its own port");
            }
            nl.set_master(
                i.index,
                Some(b.index),
                &format!("attaching {iface} to {bridge}"),
            )?;
            show(&mut nl, iface, json)
        }
        Bridge::Detach { bridge, iface } => {
            let (mut nl, b, i) = bridge_and_port(bridge, iface)?;
            if i.master != Some(b.index) {
                bail!("'{iface}' is not a port of '{bridge}'");
            }
            nl.set_master(i.index, None, &format!("detaching {iface} from {bridge}"))?;
            show(&mut nl, iface, json)
        }
    }
}

/// For attach / detach: the checks, then the bridge and the interface.
fn bridge_and_port(bridge: &str, iface: &str) -> Result<(Netlink, Link, Link)> {
    check_name(bridge)?;
    check_name(iface)?;
    need_net_admin()?;
    let mut nl = netlink()?;
    let b = find_bridge(&mut nl, bridge)?;
    let i = find(&mut nl, iface)?;
    Ok((nl, b, i))
}
