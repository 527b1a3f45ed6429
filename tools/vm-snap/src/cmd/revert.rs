//! `vm-snap revert VM NAME [--force] [--running]` (virsh snapshot-revert)
//! on a defined VM: each disk of the snapshot goes back to how it was
//! when the snapshot was taken. The snapshot's overlay is made anew,
//! empty, on its base; the snapshots taken after it, and what the disks
//! got since, are discarded, as a revert does. A running VM is refused
//! unless `--force` says to end it first (what it has not written is
//! lost, as with virsh destroy); `--running` boots it again afterwards,
//! `--paused` boots it paused.

use std::path::Path;
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use vm_control::Lookup;
use vm_image::qcow2::writer::{CreateOptions, Qcow2Writer};
use vm_image::{Block, Format, Image, OpenOptions};
use vm_spec::{DiskFormat, IoMode, VmSpec};

use crate::meta;

#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    pub vm: &'a str,
    pub snap: &'a str,
    /// End a running VM first.
    pub force: bool,
    /// Boot the VM from its definition once its disks are back.
    pub boot: Option<Boot>,
}

/// How the VM starts again after a revert (virsh's --running, --paused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boot {
    Running,
    Paused,
}

pub fn run(o: &Options<'_>) -> Result<i32> {
    let vm = vm_control::vm_name(o.vm)?;
    let live = matches!(vm_control::lookup(&vm)?, Lookup::Running { .. });
    if live && !o.force {
        bail!(
            "VM '{vm}' is running: a revert ends it and loses what it has not written; \
             stop it first, or give --force"
        );
    }
    // Everything is checked before a running VM is ended, so a revert
    // that would be refused ends nothing.
    let mut plan = Plan::make(&vm, o.snap)?;
    if live {
        stop(&vm)?;
        // It may have taken a snapshot meanwhile: check again.
        plan = Plan::make(&vm, o.snap)?;
    }
    let later = plan.apply()?;
    let mut record = serde_json::json!({
        "vm": vm,
        "reverted_to": o.snap,
        "discarded": later,
        "disks": plan.target.disks,
        "stopped": live,
    });
    if let Some(boot) = o.boot {
        record["state"] = start(&vm, boot).with_context(|| {
            format!("the disks are back at '{}', but starting VM '{vm}'", o.snap)
        })?;
    }
    super::print_json(&record);
    Ok(0)
}

/// A checked revert, not yet done.
struct Plan {
    vm: String,
    def: VmSpec,
    records: meta::Records,
    /// The snapshot's index in the records.
    k: usize,
    target: meta::Snapshot,
}

impl Plan {
    /// Reads the definition and the records and checks that what a revert
    /// discards is ours: the later snapshots touch only the snapshot's
    /// disks, and each disk's top is the newest overlay the records know.
    fn make(vm: &str, snap: &str) -> Result<Self> {
        let def_path = vm_control::defined_spec_path(vm)?;
        let text = std::fs::read_to_string(&def_path)
            .map_err(|_| anyhow!("VM '{vm}' is not defined (revert changes its definition)"))?;
        let def = VmSpec::from_json(&text).map_err(|e| anyhow!("{}: {e}", def_path.display()))?;
        let records = meta::load(vm)?;
        let k = records
            .snapshots
            .iter()
            .position(|s| s.name == snap)
            .ok_or_else(|| anyhow!("VM '{vm}' has no snapshot named '{snap}'"))?;
        let target = records.snapshots[k].clone();
        if target.deleting {
            bail!("snapshot '{snap}' is half deleted (its base may hold later data): delete it again to finish");
        }
        let later = &records.snapshots[k + 1..];
        for s in later {
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
        Ok(Self {
            vm: vm.to_string(),
            def,
            records,
            k,
            target,
        })
    }

    /// Makes the fresh overlays, points the definition at them, drops the
    /// later snapshots from the records and then removes their overlays.
    /// Returns the later snapshots' names.
    fn apply(&mut self) -> Result<Vec<String>> {
        let later = self.records.snapshots[self.k + 1..].to_vec();
        // A fresh, empty overlay on each base, in place of the snapshot's.
        for t in &self.target.disks {
            fresh_overlay(&t.base, &t.base_format, &t.overlay)
                .with_context(|| t.overlay.display().to_string())?;
        }
        for t in &self.target.disks {
            if let Some(d) = self.def.disks.iter_mut().find(|d| d.id == t.id) {
                d.path.clone_from(&t.overlay);
                d.format = DiskFormat::Qcow2;
                if d.io == IoMode::IoUring {
                    d.io = IoMode::Threads;
                }
            }
        }
        vm_control::save_definition(&self.def)?;
        self.records.snapshots.truncate(self.k + 1);
        meta::store(&self.vm, &self.records)?;
        // Only now, with nothing naming them, the discarded overlays go.
        for s in &later {
            for d in &s.disks {
                let _ = std::fs::remove_file(&d.overlay);
            }
        }
        Ok(later.into_iter().map(|s| s.name).collect())
    }
}

/// Ends the running VM (`vm-run kill`, which waits until its process has
/// gone and its image locks with it).
fn stop(vm: &str) -> Result<()> {
    vm_run(&["kill", vm]).context("ending the running VM")?;
    if let Lookup::Running { .. } = vm_control::lookup(vm)? {
        bail!("VM '{vm}' is still running after vm-run kill");
    }
    Ok(())
}

/// Boots the VM from its definition, detached (and paused, if asked);
/// its state as vm-run prints it.
fn start(vm: &str, boot: Boot) -> Result<serde_json::Value> {
    let out = match boot {
        Boot::Running => vm_run(&["start", "--detach", vm])?,
        Boot::Paused => vm_run(&["start", "--detach", "--paused", vm])?,
    };
    serde_json::from_str(out.trim()).map_err(|e| anyhow!("vm-run printed no state: {e}"))
}

/// Runs vm-run (--json) with `args`; its output, or its error line.
fn vm_run(args: &[&str]) -> Result<String> {
    let o = Command::new(vm_control::sibling_tool("vm-run"))
        .arg("--json")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .context("running vm-run")?;
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        let line = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        bail!("vm-run {}: {}", args[0], line.trim());
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Replaces `overlay` with an empty qcow2 on `base` (written beside it,
/// then renamed over it). The old overlay is write-locked meanwhile: a
/// VM or qemu-img still using it (a VM started since the checks) makes
/// the revert fail, instead of running on on a file that is gone.
fn fresh_overlay(base: &Path, base_format: &str, overlay: &Path) -> Result<()> {
    let _in_use = vm_image::lock::ImageLock::acquire(overlay, vm_image::lock::LockMode::Write)?;
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
