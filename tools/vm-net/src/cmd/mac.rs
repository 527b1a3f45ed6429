//! `vm-net mac`: a MAC address for a VM's NIC, stable for a name and index.

use anyhow::{anyhow, Context, Result};
use vm_spec::MacAddr;

pub(crate) fn mac(name: Option<&str>, index: Option<u32>, json: bool) -> Result<()> {
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
