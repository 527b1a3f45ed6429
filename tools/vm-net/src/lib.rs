//! vm-net: bridges, taps and addresses through netlink; Open vSwitch
//! through ovs-vsctl; MAC addresses.

pub mod cli;
mod ovs;

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::net::IpAddr;

use anyhow::{anyhow, bail, Context, Result};
use cli::{Bridge, Cli, Command, Tap};
use vm_host::netlink::{Link, Netlink, VMTOOLS_ALIAS};
use vm_host::tap::{self, TapFlags};
use vm_spec::MacAddr;

pub fn run(cli: &Cli) -> i32 {
    let json = cli.json || !std::io::stdout().is_terminal();
    let r = match &cli.command {
        Command::Bridge(b) => bridge(b, json),
        Command::Tap(t) => tap_cmd(t, json),
        Command::Link { state, name } => link_state(name, state == "up", json),
        Command::Addr {
            action,
            name,
            address,
        } => addr(name, action == "add", address, json),
        Command::Mac { name, index } => mac(name.as_deref(), *index, json),
        Command::List => list(json),
        Command::Ovs(o) => ovs::run(o, json),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("vm-net: error: {}", vm_spec::text::one_line(e.as_ref()));
            1
        }
    }
}

/// Changing links needs CAP_NET_ADMIN: say so before trying anything.
fn need_net_admin() -> Result<()> {
    if !vm_host::capabilities::has_net_admin() {
        bail!("changing network links needs CAP_NET_ADMIN (run as root or grant the capability)");
    }
    Ok(())
}

fn check_name(name: &str) -> Result<()> {
    vm_spec::check_ifname(name).map_err(|e| anyhow!("{e}"))
}

fn netlink() -> Result<Netlink> {
    Netlink::open().context("opening a netlink socket")
}

fn find(nl: &mut Netlink, name: &str) -> Result<Link> {
    nl.link(name)?
        .ok_or_else(|| anyhow!("no interface named '{name}'"))
}

fn is_bridge(l: &Link) -> bool {
    l.kind.as_deref() == Some("bridge")
}

fn is_tap(l: &Link) -> bool {
    l.kind.as_deref() == Some("tun")
}

fn find_bridge(nl: &mut Netlink, name: &str) -> Result<Link> {
    let b = nl
        .link(name)?
        .ok_or_else(|| anyhow!("no bridge named '{name}'"))?;
    if !is_bridge(&b) {
        bail!("'{name}' is not a bridge");
    }
    Ok(b)
}

/// A link as JSON, in `ip -j link`'s names where it has them.
fn record(l: &Link, all: &[Link], addresses: Option<&[(IpAddr, u8)]>) -> serde_json::Value {
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

fn text(v: &serde_json::Value) -> String {
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

fn print_records(v: &[serde_json::Value], json: bool, one: bool) {
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
fn show(nl: &mut Netlink, name: &str, json: bool) -> Result<()> {
    let all = nl.links()?;
    let l = all
        .iter()
        .find(|l| l.name == name)
        .ok_or_else(|| anyhow!("no interface named '{name}'"))?;
    let addrs = nl.addresses(l.index)?;
    print_records(&[record(l, &all, Some(&addrs))], json, true);
    Ok(())
}

fn bridge(b: &Bridge, json: bool) -> Result<()> {
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

fn tap_cmd(t: &Tap, json: bool) -> Result<()> {
    match t {
        Tap::Add {
            name,
            bridge,
            owner,
            queues,
            may_exist,
        } => {
            check_name(name)?;
            if let Some(b) = bridge {
                check_name(b)?;
            }
            need_net_admin()?;
            let mut nl = netlink()?;
            // Everything is checked before anything is made.
            let br = bridge
                .as_deref()
                .map(|b| find_bridge(&mut nl, b))
                .transpose()?;
            if let Some(l) = nl.link(name)? {
                if !(is_tap(&l) && *may_exist) {
                    bail!(
                        "'{name}' exists ({})",
                        l.kind.as_deref().unwrap_or("a device")
                    );
                }
                if let Some(b) = &br {
                    nl.set_master(l.index, Some(b.index), &format!("attaching {name}"))?;
                }
                return show(&mut nl, name, json);
            }
            let flags = TapFlags {
                vnet_hdr: true,
                multi_queue: *queues > 1,
            };
            tap::create_persistent(name, *owner, flags)?;
            let made = find(&mut nl, name)?;
            let finish = |nl: &mut Netlink| -> Result<()> {
                nl.set_alias(made.index, VMTOOLS_ALIAS, &format!("marking {name}"))?;
                if let Some(b) = &br {
                    nl.set_master(made.index, Some(b.index), &format!("attaching {name}"))?;
                }
                Ok(())
            };
            if let Err(e) = finish(&mut nl) {
                let _ = nl.delete_link(made.index, name);
                return Err(e);
            }
            show(&mut nl, name, json)
        }
        Tap::Del { name, if_exists } => delete(name, *if_exists, "tap", is_tap),
    }
}

/// Removes link `name` if it is of the kind `is_kind` accepts.
fn delete(name: &str, if_exists: bool, kind: &str, is_kind: fn(&Link) -> bool) -> Result<()> {
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

fn link_state(name: &str, up: bool, json: bool) -> Result<()> {
    check_name(name)?;
    need_net_admin()?;
    let mut nl = netlink()?;
    let l = find(&mut nl, name)?;
    nl.set_up(
        l.index,
        up,
        &format!("setting {name} {}", if up { "up" } else { "down" }),
    )?;
    show(&mut nl, name, json)
}

fn addr(name: &str, add: bool, address: &str, json: bool) -> Result<()> {
    check_name(name)?;
    let (ip, prefix) = address.split_once('/').ok_or_else(|| {
        anyhow!("'{address}': give the address with its prefix length, e.g. 192.168.122.1/24")
    })?;
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| anyhow!("'{ip}' is not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= max)
        .ok_or_else(|| anyhow!("'{prefix}': prefix length must be 0 to {max}"))?;
    need_net_admin()?;
    let mut nl = netlink()?;
    let l = find(&mut nl, name)?;
    if add {
        nl.add_address(l.index, ip, prefix, &format!("adding {address} to {name}"))?;
    } else {
        nl.del_address(
            l.index,
            ip,
            prefix,
            &format!("removing {address} from {name}"),
        )?;
    }
    show(&mut nl, name, json)
}

fn mac(name: Option<&str>, index: Option<u32>, json: bool) -> Result<()> {
    let m = match (name, index) {
        (Some(n), Some(i)) => {
            n.parse::<vm_spec::VmName>().map_err(|e| anyhow!("{e}"))?;
            MacAddr::for_nic(n, i)
        }
        _ => MacAddr::random().context("reading /dev/urandom")?,
    };
    if json {
        println!("{}", serde_json::json!({"mac": m.to_string()}));
    } else {
        println!("{m}");
    }
    Ok(())
}

fn list(json: bool) -> Result<()> {
    let mut nl = netlink()?;
    let all = nl.links()?;
    let rows: Vec<_> = all
        .iter()
        .filter(|l| l.alias.as_deref() == Some(VMTOOLS_ALIAS))
        .map(|l| record(l, &all, None))
        .collect();
    print_records(&rows, json, false);
    Ok(())
}
