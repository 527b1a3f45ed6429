//! `vm-snap list VM` (virsh snapshot-list): the VM's disk snapshots, oldest
//! first, as one JSON record.

use anyhow::Result;

pub fn run(vm: &str) -> Result<i32> {
    let vm = vm_control::vm_name(vm)?;
    let records = crate::meta::load(&vm)?;
    super::print_json(&serde_json::json!({
        "vm": vm,
        "snapshots": records.snapshots,
    }));
    Ok(0)
}
