//! Disk snapshots' records: one JSON file per VM under the config folder
//! (`snapshots/NAME.json`), replaced atomically. The images themselves
//! are the snapshots; the records name them and say in which order.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Records {
    pub snapshots: Vec<Snapshot>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub name: String,
    /// Seconds since the epoch.
    pub created: u64,
    /// Taken while the VM ran.
    pub live: bool,
    pub disks: Vec<SnapDisk>,
    /// A delete began and did not finish: some of the overlay's data may
    /// be in the base already, so the snapshot cannot be reverted to;
    /// deleting it again finishes the job.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleting: bool,
}

/// One disk of a snapshot: `base` holds the disk as it was at the
/// snapshot (the top until then, read-only from then on); `overlay` took
/// the writes after it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapDisk {
    pub id: String,
    pub base: PathBuf,
    pub base_format: String,
    pub overlay: PathBuf,
}

fn path(vm: &str) -> PathBuf {
    vm_control::config_dir()
        .join("snapshots")
        .join(format!("{vm}.json"))
}

pub fn load(vm: &str) -> Result<Records> {
    let p = path(vm);
    match std::fs::read_to_string(&p) {
        Ok(text) => serde_json::from_str(&text).with_context(|| p.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Records::default()),
        Err(e) => Err(e).with_context(|| p.display().to_string()),
    }
}

pub fn store(vm: &str, r: &Records) -> Result<()> {
    let p = path(vm);
    let dir = p.parent().expect("has a folder");
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    vm_control::check_trusted(dir)?;
    let text = serde_json::to_string_pretty(r)? + "\n";
    vm_control::write_durable(&p, text.as_bytes(), 0o644)?;
    Ok(())
}
