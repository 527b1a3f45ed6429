//! `vm-snap revert VM NAME` (virsh snapshot-revert) for a stopped, defined
//! VM: each disk of the snapshot goes back to how it was when the snapshot
//! was taken. The snapshot's overlay is made anew, empty, on its base; the
//! snapshots taken after it, and what the disks got since, are discarded,
//! as a revert does. A running VM is refused (stop it first).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use vm_control::Lookup;
use vm_image::qcow2::writer::{CreateOptions, Qcow2Writer};
use vm_image::{Block, Format, Image, OpenOptions};
use vm_spec::{DiskFormat, IoMode, VmSpec};

use crate::meta;

pub fn run(vm: &str, snap: &str) -> Result<i32> {
    let vm = vm_control::vm_name(vm)?;
    if let Lookup::Running { .. } = vm_control::lookup(&vm)? {
        bail!("VM '{vm}' is running: stop it first (reverting a running VM is not there yet)");
    }
    let def_path = vm_control::defined_spec_path(&vm)?;
    let text = std::fs::read_to_string(&def_path)
        .map_err(|_| anyhow!("VM '{vm}' is not defined (revert changes its definition)"))?;
    let mut def = VmSpec::from_json(&text).map_err(|e| anyhow!("{}: {e}", def_path.display()))?;
    let mut records = meta::load(&vm)?;
    let k = records
        .snapshots
        .iter()
        .position(|s| s.name == snap)
        .ok_or_else(|| anyhow!("VM '{vm}' has no snapshot named '{snap}'"))?;
    let target = records.snapshots[k].clone();
    if target.deleting {
        bail!("snapshot '{snap}' is half deleted (its base may hold later data): delete it again to finish");
    }
    let later = records.snapshots[k + 1..].to_vec();
    // What a revert discards must be ours: the later snapshots touch only
    // the snapshot's disks, and each disk's top is the newest overlay
    // the records know for it.
    for s in &later {
        if let Some(d) = s
            .disks
            .iter()
            .find(|d| !target.disks.iter().any(|t| t.id == d.id))
        {
            bail!(
                "snapshot '{}' (after '{snap}') also has disk {}, which '{snap}' lacks: \
                 reverting would lose it",
                s.name,
                d.id
            );
        }
    }
    for t in &target.disks {
        let newest = later
            .iter()
            .rev()
            .find_map(|s| s.disks.iter().find(|d| d.id == t.id))
            .map_or(&t.overlay, |d| &d.overlay);
        let top = def
            .disks
            .iter()
            .find(|d| d.id == t.id)
            .map(|d| d.path.clone())
            .ok_or_else(|| anyhow!("the definition has no disk {}", t.id))?;
        if !vm_image::same_file(&top, newest) {
            bail!(
                "disk {}: the definition's {} is not the snapshots' newest overlay {}; \
                 reverting would lose it",
                t.id,
                top.display(),
                newest.display()
            );
        }
    }
    // A fresh, empty overlay on each base, in place of the snapshot's.
    for t in &target.disks {
        fresh_overlay(&t.base, &t.base_format, &t.overlay)
            .with_context(|| t.overlay.display().to_string())?;
    }
    for t in &target.disks {
        if let Some(d) = def.disks.iter_mut().find(|d| d.id == t.id) {
            d.path.clone_from(&t.overlay);
            d.format = DiskFormat::Qcow2;
            if d.io == IoMode::IoUring {
                d.io = IoMode::Threads;
            }
        }
    }
    vm_control::save_definition(&def)?;
    records.snapshots.truncate(k + 1);
    meta::store(&vm, &records)?;
    // Only now, with nothing naming them, the discarded overlays go.
    for s in &later {
        for d in &s.disks {
            let _ = std::fs::remove_file(&d.overlay);
        }
    }
    super::print_json(&serde_json::json!({
        "vm": vm,
        "reverted_to": snap,
        "discarded": later.iter().map(|s| &s.name).collect::<Vec<_>>(),
        "disks": target.disks,
    }));
    Ok(0)
}

/// Replaces `overlay` with an empty qcow2 on `base` (written beside it,
/// then renamed over it).
fn fresh_overlay(base: &Path, base_format: &str, overlay: &Path) -> Result<()> {
    let format: Format = base_format.parse().map_err(|m: String| anyhow!(m))?;
    let img = Image::open(
        base,
        &OpenOptions {
            format: Some(format),
            write: false,
            lock: true,
            direct: false,
            backing: false,
            probe_backing: false,
            faults: None,
        },
    )?;
    let size = img.size();
    drop(img);
    let tmp = overlay.with_extension(format!("revert{}", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    let o = CreateOptions {
        size,
        backing_file: Some(base.display().to_string()),
        backing_format: Some(base_format.to_string()),
        ..CreateOptions::default()
    };
    let done = Qcow2Writer::new(f, &o)
        .and_then(Qcow2Writer::finish)
        .and_then(|f| f.sync_all());
    if let Err(e) = done.and_then(|()| std::fs::rename(&tmp, overlay)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    Ok(())
}
