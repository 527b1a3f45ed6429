//! `vm-snap delete VM NAME` (virsh snapshot-delete for disk-only
//! snapshots): the snapshot's overlay is merged down into its base, as
//! blockcommit does, and leaves the chain. The disk reads the same before
//! and after; what goes is the way back to the moment of the snapshot.
//!
//! For a running VM, vm-run copies while the guest runs and changes the
//! chain in one short pause (`commit-disk`); for a stopped, defined VM the
//! images and the definition are changed here. The snapshot is marked
//! first, so a delete cut short is finished by running it again and is
//! never reverted to.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use vm_control::{Lookup, Request, Session};
use vm_image::lock::{ImageLock, LockMode};
use vm_image::qcow2::l2prep::prepare_l2_tables;
use vm_image::{commit, Block, Format, Image, OpenOptions};
use vm_spec::DiskFormat;

use super::create::defined;
use crate::meta::{self, SnapDisk};

/// One disk of the snapshot, placed in its chain.
struct Step {
    disk: SnapDisk,
    /// The overlay of a later snapshot that reads from this one's
    /// overlay; none when the overlay is the disk's top.
    upper: Option<PathBuf>,
    /// An earlier delete already took the overlay out of the chain.
    done: bool,
}

pub fn run(vm: &str, snap: &str) -> Result<i32> {
    let vm = vm_control::vm_name(vm)?;
    let (socket, tops): (_, Vec<(String, PathBuf)>) =
        if let Lookup::Running { state, .. } = vm_control::lookup(&vm)? {
            let tops = state.disks.iter().map(|d| (d.id.clone(), d.top.clone()));
            (Some(state.control_socket.clone()), tops.collect())
        } else {
            let def = defined(&vm)?;
            let tops = def.disks.iter().map(|d| (d.id.clone(), d.path.clone()));
            (None, tops.collect())
        };
    let mut records = meta::load(&vm)?;
    let k = records
        .snapshots
        .iter()
        .position(|s| s.name == snap)
        .ok_or_else(|| anyhow!("VM '{vm}' has no snapshot named '{snap}'"))?;
    let steps = plan(&records, k, &tops)?;
    records.snapshots[k].deleting = true;
    meta::store(&vm, &records)?;
    let mut reports = Vec::new();
    for s in &steps {
        let r = match &socket {
            _ if s.done => Ok(vm_control::CommitReport::default()),
            Some(sock) => live(sock, &s.disk),
            None => offline(s),
        };
        let r = r.with_context(|| {
            format!(
                "disk {}: snapshot '{snap}' is not deleted (run the delete again to finish it)",
                s.disk.id
            )
        })?;
        reports.push(serde_json::json!({
            "id": s.disk.id,
            "overlay": s.disk.overlay,
            "base": s.disk.base,
            "copied_bytes": r.copied_bytes,
            "rounds": r.rounds,
            "pause_us": r.pause_us,
            "total_ms": r.total_ms,
        }));
    }
    // The definition follows: a disk whose top was the overlay now starts
    // on the base (a running VM's too, for its next start).
    if let Ok(mut def) = defined(&vm) {
        let mut changed = false;
        for s in steps.iter().filter(|s| s.upper.is_none()) {
            if let Some(d) = def.disks.iter_mut().find(|d| d.id == s.disk.id) {
                if vm_image::same_file(&d.path, &s.disk.overlay) {
                    d.path.clone_from(&s.disk.base);
                    d.format = parse_format(&s.disk.base_format)?;
                    changed = true;
                }
            }
        }
        if changed {
            vm_control::save_definition(&def)?;
        }
    }
    let gone = records.snapshots.remove(k);
    for d in &gone.disks {
        if let Some(next) = records.snapshots[k..]
            .iter_mut()
            .find_map(|s| s.disks.iter_mut().find(|n| n.id == d.id))
        {
            next.base.clone_from(&d.base);
            next.base_format.clone_from(&d.base_format);
        }
    }
    meta::store(&vm, &records)?;
    for d in &gone.disks {
        let _ = std::fs::remove_file(&d.overlay);
    }
    super::print_json(&serde_json::json!({
        "vm": vm,
        "deleted": snap,
        "live": socket.is_some(),
        "disks": reports,
    }));
    Ok(0)
}

fn parse_format(s: &str) -> Result<DiskFormat> {
    match s {
        "raw" => Ok(DiskFormat::Raw),
        "qcow2" => Ok(DiskFormat::Qcow2),
        other => bail!("unknown base format '{other}' in the records"),
    }
}

/// Places each disk of snapshot `k` between its base and what reads from
/// its overlay, refusing anything the records do not account for.
fn plan(records: &meta::Records, k: usize, tops: &[(String, PathBuf)]) -> Result<Vec<Step>> {
    let target = &records.snapshots[k];
    let mut steps = Vec::new();
    for d in &target.disks {
        let upper = records.snapshots[k + 1..]
            .iter()
            .find_map(|s| s.disks.iter().find(|n| n.id == d.id));
        let done;
        let upper = if let Some(u) = upper {
            done = backing_of(&u.overlay).is_some_and(|b| vm_image::same_file(&b, &d.base));
            if !vm_image::same_file(&u.base, &d.overlay) {
                bail!(
                    "disk {}: the next snapshot's base {} is not this one's overlay {}",
                    d.id,
                    u.base.display(),
                    d.overlay.display()
                );
            }
            Some(u.overlay.clone())
        } else {
            let top = tops
                .iter()
                .find(|(id, _)| *id == d.id)
                .map(|(_, p)| p)
                .ok_or_else(|| anyhow!("the VM has no disk {} any more", d.id))?;
            done = vm_image::same_file(top, &d.base);
            if !done && !vm_image::same_file(top, &d.overlay) {
                bail!(
                    "disk {}: its top is {}, not the snapshot's overlay {}; \
                     deleting would lose what the records cannot name",
                    d.id,
                    top.display(),
                    d.overlay.display()
                );
            }
            None
        };
        let md = std::fs::metadata(&d.base).with_context(|| d.base.display().to_string())?;
        if md.file_type().is_block_device() {
            bail!(
                "disk {}: the base {} is a block device; it is not written into",
                d.id,
                d.base.display()
            );
        }
        steps.push(Step {
            disk: d.clone(),
            upper,
            done,
        });
    }
    Ok(steps)
}

/// The backing file an image's header names, resolved.
fn backing_of(image: &Path) -> Option<PathBuf> {
    let img = Image::open(
        image,
        &OpenOptions {
            format: Some(Format::Qcow2),
            write: false,
            lock: false,
            direct: false,
            backing: false,
            probe_backing: false,
            faults: None,
        },
    )
    .ok()?;
    let name = img.header()?.backing_file.clone()?;
    Some(vm_image::resolve_backing(image, &name))
}

/// A running VM commits the overlay itself.
fn live(sock: &Path, d: &SnapDisk) -> Result<vm_control::CommitReport> {
    // Our descriptor, open for writing, is the proof that we may write
    // the base: the VM may run with more rights than its caller.
    let base = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&d.base)
        .with_context(|| format!("cannot open {} for writing", d.base.display()))?;
    let req = Request::CommitDisk {
        id: d.id.clone(),
        overlay: d.overlay.clone(),
        base: d.base.clone(),
    };
    let reply = Session::connect(sock)?.call(&req, &[base.as_raw_fd()], None)?;
    if !reply.ok {
        bail!(
            "{}",
            reply.error.unwrap_or_else(|| "the commit failed".into())
        );
    }
    reply
        .commit
        .ok_or_else(|| anyhow!("the VM's reply carries no commit report"))
}

/// A stopped VM's chain changed here, under the images' locks.
fn offline(s: &Step) -> Result<vm_control::CommitReport> {
    let d = &s.disk;
    let t0 = std::time::Instant::now();
    let base_format: Format = d.base_format.parse().map_err(|m: String| anyhow!(m))?;
    let _locks = [
        ImageLock::acquire(&d.base, LockMode::Write),
        ImageLock::acquire(&d.overlay, LockMode::Write),
    ]
    .into_iter()
    .chain(
        s.upper
            .iter()
            .map(|u| ImageLock::acquire(u, LockMode::Write)),
    )
    .collect::<Result<Vec<_>, _>>()
    .context("an image of the chain is in use")?;
    let src = Image::open(
        &d.overlay,
        &OpenOptions {
            format: Some(Format::Qcow2),
            write: false,
            lock: false,
            direct: false,
            backing: true,
            probe_backing: false,
            faults: None,
        },
    )
    .with_context(|| d.overlay.display().to_string())?;
    match src.layers().get(1) {
        Some(b) if vm_image::same_file(&b.path, &d.base) => {}
        _ => bail!(
            "{}: its backing file is not {}",
            d.overlay.display(),
            d.base.display()
        ),
    }
    if src.layers()[1].size() < src.size() {
        bail!("{} is smaller than the disk", d.base.display());
    }
    let ranges = commit::above(&src, 1)?;
    if base_format == Format::Qcow2 {
        prepare_l2_tables(&d.base, &ranges)
            .with_context(|| format!("preparing {}", d.base.display()))?;
    }
    let base = Image::open(
        &d.base,
        &OpenOptions {
            format: Some(base_format),
            write: true,
            lock: false,
            direct: false,
            backing: true,
            probe_backing: false,
            faults: None,
        },
    )
    .with_context(|| d.base.display().to_string())?;
    let copied = commit::copy_down(&src, 1, &base, &ranges, |_| {})?;
    base.sync()?;
    drop(base);
    if let Some(upper) = &s.upper {
        let abs = std::fs::canonicalize(&d.base)?;
        vm_image::qcow2::set_backing(
            upper,
            Some(&abs.display().to_string()),
            Some(&d.base_format),
        )?;
    }
    sync_dir(&d.base);
    Ok(vm_control::CommitReport {
        copied_bytes: copied,
        rounds: 1,
        pause_us: 0,
        total_ms: t0.elapsed().as_millis() as u64,
    })
}

fn sync_dir(p: &Path) {
    if let Some(dir) = p.parent() {
        File::open(dir).and_then(|d| d.sync_all()).ok();
    }
}
