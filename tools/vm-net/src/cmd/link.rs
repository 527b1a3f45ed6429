//! `vm-net link up|down` (ip link set).

use anyhow::Result;

use super::{check_name, find, need_net_admin, netlink, show};

pub(crate) fn link_state(name: &str, up: bool, json: bool) -> Result<()> {
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
