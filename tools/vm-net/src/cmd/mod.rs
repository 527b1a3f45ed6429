//! One module per subcommand (vm-img's layout), and what they share:
//! netlink, link lookups and the records they print.

pub mod addr;
pub mod bridge;
pub mod link;
pub mod list;
pub mod mac;
pub mod ovs;
pub mod tap;

use anyhow::{anyhow, bail, Context, Result};
use std::fmt::Write as _;
use std::net::IpAddr;
use vm_host::netlink::{Link, Netlink, VMTOOLS_ALIAS};
use vm_spec::MacAddr;

/// Changing links needs CAP_NET_ADMIN: say so before trying anything.
pub(crate) fn need_net_admin() -> Result<()> {
    if !vm_host::capabilities::has_net_admin() {
        bail!("changing network links needs CAP_NET_ADMIN (run as root or grant the capability)");
    }
    Ok(())
}

pub(crate) fn check_name(name: &str) -> Result<()> {
    vm_spec::check_ifname(name).map_err(|e| anyhow!("{e}"))
}

pub(crate) fn netlink() -> Result<Netlink> {
    Netlink::open().context("opening a netlink socket")
}

pub(crate) fn find(nl: &mut Netlink, name: &str) -> Result<Link> {
    nl.link(name)?
        .ok_or_else(|| anyhow!("no interface named '{name}'"))
}

pub(crate) fn is_bridge(l: &Link) -> bool {
    l.kind.as_deref() == Some("bridge")
}

pub(crate) fn is_tap(l: &Link) -> bool {
    l.kind.as_deref() == Some("tun")
}

pub(crate) fn find_bridge(nl: &mut Netlink, name: &str) -> Result<Link> {
    let b = nl
        .link(name)?
        .ok_or_else(|| anyhow!("no bridge named '{name}'"))?;
    if !is_bridge(&b) {
        bail!("'{name}' is not a bridge");
    }
    Ok(b)
}

/// A link as JSON, in `ip -j link`'s names where it has them.
pub(crate) fn record(
    l: &Link,
    all: &[Link],
    addresses: Option<&[(IpAddr, u8)]>,
) -> serde_json::Value {
    let master = l
        .master
        .and_then(|m| all.iter().find(|x| x.index == m))
        .map(|m| m.name.clone());
    let mut v = serde_json::json!({
        "ifname": l.name,
        "ifindex": l.index,
        "kind": l.kind,
        "master": master,
        "up": l.up,
        "operstate": l.oper_state,
        "address": l.mac.map(|m| MacAddr(m).to_string()),
        "mtu": l.mtu,
        "vmtools": l.alias.as_deref() == Some(VMTOOLS_ALIAS),
    });
    if let Some(a) = addresses {
        v["addresses"] = a.iter().map(|(ip, p)| format!("{ip}/{p}")).collect();
    }
    v
}

pub(crate) fn text(v: &serde_json::Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
    let mut line = format!(
        "{} ({}) index {} {} {} mac {}",
        s("ifname"),
        v["kind"].as_str().unwrap_or("device"),
        v["ifindex"],
        if v["up"] == true { "up" } else { "down" },
        s("operstate"),
        s("address"),
    );
    if let Some(m) = v["master"].as_str() {
        let _ = write!(line, " master {m}");
    }
    if let Some(a) = v["addresses"].as_array() {
        for x in a {
            let _ = write!(line, " inet {}", x.as_str().unwrap_or(""));
        }
    }
    line
}

pub(crate) fn print_records(v: &[serde_json::Value], json: bool, one: bool) {
    if json {
        if one && v.len() == 1 {
            println!("{}", v[0]);
        } else {
            println!("{}", serde_json::Value::Array(v.to_vec()));
        }
    } else {
        // Links others made may carry any byte in their names.
        for r in v {
            println!("{}", vm_spec::text::escape(&text(r)));
        }
    }
}

/// Prints the link `name` as it is now.
pub(crate) fn show(nl: &mut Netlink, name: &str, json: bool) -> Result<()> {
    let all = nl.links()?;
    let l = all
        .iter()
        .find(|l| l.name == name)
        .ok_or_else(|| anyhow!("no interface named '{name}'"))?;
    let addrs = nl.addresses(l.index)?;
    print_records(&[record(l, &all, Some(&addrs))], json, true);
    Ok(())
}

/// Removes link `name` if it is of the kind `is_kind` accepts.
pub(crate) fn delete(
    name: &str,
    if_exists: bool,
    kind: &str,
    is_kind: fn(&Link) -> bool,
) -> Result<()> {
    check_name(name)?;
    need_net_admin()?;
    let mut nl = netlink()?;
    match nl.link(name)? {
        None if if_exists => Ok(()),
        None => bail!("no {kind} named '{name}'"),
        Some(l) if !is_kind(&l) => bail!("'{name}' is not a {kind}"),
        Some(l) => Ok(nl.delete_link(l.index, name)?),
    }
}
