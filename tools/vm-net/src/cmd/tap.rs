//! `vm-net tap`: persistent taps for VMs (ip tuntap).

use anyhow::{bail, Result};
use vm_host::netlink::{Netlink, VMTOOLS_ALIAS};
use vm_host::tap::{self, TapFlags};

use super::{check_name, delete, find, find_bridge, is_tap, need_net_admin, netlink, show};
use crate::cli::Tap;

pub(crate) fn tap_cmd(t: &Tap, json: bool) -> Result<()> {
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
