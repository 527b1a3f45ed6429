//! `vm-snap verify FILE`: the header, the state and every page of memory
//! checked against their checksums, without starting anything.

use std::path::Path;

use anyhow::{Context, Result};

pub fn run(path: &Path) -> Result<i32> {
    let f = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let opened = vmm::state::file::open(f).with_context(|| format!("{}", path.display()))?;
    let pages =
        vmm::state::file::verify_memory(&opened).with_context(|| format!("{}", path.display()))?;
    super::print_json(&serde_json::json!({
        "file": path,
        "ok": true,
        "name": opened.saved.spec.name.to_string(),
        "vcpus": opened.saved.machine.vcpus.len(),
        "memory_bytes": opened.runs.iter().map(|r| r.len).sum::<u64>(),
        "data_pages": pages,
        "devices": opened.saved.machine.devices.iter().map(|d| &d.identity.id).collect::<Vec<_>>(),
    }));
    Ok(0)
}
