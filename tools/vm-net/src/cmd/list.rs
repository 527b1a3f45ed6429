//! `vm-net list`: the bridges and taps vmtools made.

use anyhow::Result;
use vm_host::netlink::VMTOOLS_ALIAS;

use super::{netlink, print_records, record};

pub(crate) fn list(json: bool) -> Result<()> {
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
