//! `vm-net addr add|del` (ip addr).

use std::net::IpAddr;

use anyhow::{anyhow, Result};

use super::{check_name, find, need_net_admin, netlink, show};

pub(crate) fn addr(name: &str, add: bool, address: &str, json: bool) -> Result<()> {
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
