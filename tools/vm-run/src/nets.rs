//! A spec's NICs on the host side: an existing tap the spec names, or a
//! tap vm-run makes on the spec's bridge (libvirt's vnetN), which goes
//! away with the VM's last descriptor of it, even after kill -9.

use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use vm_host::netlink::{Link, Netlink};
use vm_host::tap::{self, TapError, TapFlags};
use vm_spec::{MacAddr, Net, NetState, VmSpec};
use vmm::devices::virtio::net::NetCounters;
use vmm::NetConfig;

#[derive(Debug)]
pub struct OpenNet {
    pub config: NetConfig,
    pub state: NetState,
}

pub fn open_all(spec: &VmSpec) -> Result<Vec<OpenNet>> {
    if spec.nets.is_empty() {
        return Ok(Vec::new());
    }
    let mut nl = Netlink::open().context("opening a netlink socket")?;
    spec.nets
        .iter()
        .enumerate()
        .map(|(i, n)| {
            open(&mut nl, &spec.name.to_string(), i as u32, n)
                .with_context(|| format!("net {}", n.id))
        })
        .collect()
}

fn kind_is(l: &Link, kind: &str) -> bool {
    l.kind.as_deref() == Some(kind)
}

fn open(nl: &mut Netlink, vm: &str, index: u32, n: &Net) -> Result<OpenNet> {
    let flags = TapFlags {
        vnet_hdr: true,
        multi_queue: n.queues > 1,
    };
    let queues = n.queues as usize;
    // The bridge a made tap joins, checked before anything is made.
    let bridge = match (&n.tap, &n.bridge) {
        (Some(t), _) => {
            // Opening a name that does not exist would make a new tap: the
            // spec names one that must be there.
            let l = nl.link(t)?.ok_or_else(|| anyhow!("no tap named '{t}'"))?;
            if !kind_is(&l, "tun") {
                bail!("'{t}' is not a tap");
            }
            None
        }
        (None, Some(b)) => {
            // Said before anything is tried, as vm-net does.
            if !vm_host::capabilities::has_net_admin() {
                bail!("making a tap on bridge {b} needs CAP_NET_ADMIN (run as root, or name a tap made with vm-net tap add --owner)");
            }
            let br = nl
                .link(b)?
                .ok_or_else(|| anyhow!("no bridge named '{b}'"))?;
            if !kind_is(&br, "bridge") {
                bail!("'{b}' is not a bridge");
            }
            Some(br)
        }
        (None, None) => bail!("names neither a tap nor a bridge"),
    };
    let wanted = n.tap.as_deref().unwrap_or("vnet%d");
    let (name, files) = tap::open(wanted, queues, flags).map_err(|e| match e {
        TapError::Busy(t) => anyhow!("tap {t} is in use"),
        e => e.into(),
    })?;
    let l = nl
        .link(&name)?
        .ok_or_else(|| anyhow!("tap {name} vanished"))?;
    if let Some(br) = &bridge {
        nl.set_master(
            l.index,
            Some(br.index),
            &format!("attaching {name} to {}", br.name),
        )?;
    }
    if !l.up {
        nl.set_up(l.index, true, &format!("setting {name} up"))?;
    }
    let mac = n.mac.unwrap_or_else(|| MacAddr::for_nic(vm, index));
    Ok(OpenNet {
        config: NetConfig {
            id: n.id.clone(),
            taps: files.into_iter().map(Arc::new).collect(),
            mac: mac.0,
            counters: Arc::new(NetCounters::default()),
        },
        state: NetState {
            id: n.id.clone(),
            tap: name,
            mac,
        },
    })
}
