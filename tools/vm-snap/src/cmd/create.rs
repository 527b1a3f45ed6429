//! `vm-snap create VM` (virsh snapshot-create-as --disk-only --atomic):
//! each chosen disk gets a new qcow2 overlay on its current top. For a
//! running VM the overlays are handed to it and it switches every disk at
//! once, paused for the switch only; for a stopped, defined VM its
//! definition is changed. All disks or none: a failure removes the
//! overlays made so far and leaves every disk as it was.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use vm_control::{DiskSnapshot, Lookup, Request, Session};
use vm_image::qcow2::writer::{CreateOptions, Qcow2Writer};
use vm_image::{Block, Format, Image, OpenOptions};
use vm_spec::{DiskFormat, IoMode, VmSpec};

use crate::meta::{self, SnapDisk, Snapshot};

/// One `--disk` (virsh's `--diskspec`): `ID[,snapshot=external][,file=PATH]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskArg {
    pub id: String,
    pub file: Option<PathBuf>,
}

pub fn parse_disk(s: &str) -> Result<DiskArg, String> {
    let mut parts = s.split(',');
    let id = parts.next().unwrap_or_default().to_string();
    if id.is_empty() {
        return Err("a disk id first (vda, or vda,file=PATH)".into());
    }
    let mut file = None;
    for p in parts {
        match p.split_once('=') {
            Some(("file", v)) if !v.is_empty() => file = Some(PathBuf::from(v)),
            Some(("snapshot", "external")) => {}
            _ => return Err(format!("'{p}': takes file=PATH (and snapshot=external)")),
        }
    }
    Ok(DiskArg { id, file })
}

/// A disk about to be snapshotted.
struct Plan {
    index: usize,
    id: String,
    top: PathBuf,
    format: DiskFormat,
    overlay: PathBuf,
}

pub fn run(vm: &str, name: Option<&str>, disks: &[DiskArg]) -> Result<i32> {
    let vm = vm_control::vm_name(vm)?;
    let (live, spec, socket) = match vm_control::lookup(&vm)? {
        Lookup::Running { state, .. } => {
            let mut spec = state.spec.clone();
            // The VM's own record of its tops (earlier snapshots moved them).
            for d in &state.disks {
                if let Some(s) = spec.disks.iter_mut().find(|s| s.id == d.id) {
                    s.path.clone_from(&d.top);
                    s.format = d.format;
                }
            }
            (true, spec, Some(state.control_socket))
        }
        _ => (false, defined(&vm)?, None),
    };
    let mut records = meta::load(&vm)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let snap = name.map_or_else(|| now.to_string(), str::to_string);
    if snap.is_empty() || snap.contains(['/', '\0']) || snap.starts_with('.') {
        bail!("snapshot name '{snap}': not usable in a file name");
    }
    if records.snapshots.iter().any(|s| s.name == snap) {
        bail!("VM '{vm}' already has a snapshot named '{snap}'");
    }
    let plans = plan(&spec, &snap, disks)?;
    let mut made = Made(Vec::new());
    let mut files = Vec::new();
    for p in &plans {
        files.push(make_overlay(p).with_context(|| p.overlay.display().to_string())?);
        made.0.push(p.overlay.clone());
    }
    let mut pause_us = None;
    if let Some(sock) = socket {
        let req = Request::SnapshotDisks {
            disks: plans
                .iter()
                .map(|p| DiskSnapshot {
                    id: p.id.clone(),
                    overlay: p.overlay.clone(),
                })
                .collect(),
        };
        let fds: Vec<_> = files.iter().map(AsRawFd::as_raw_fd).collect();
        let reply = Session::connect(&sock)?.call(&req, &fds, None)?;
        if !reply.ok {
            bail!(
                "{}",
                reply.error.unwrap_or_else(|| "the snapshot failed".into())
            );
        }
        pause_us = reply.snapshot.map(|s| s.pause_us);
    }
    // The definition follows the disks (for a running VM too: its next
    // start runs on the overlays, as virsh's domain XML does).
    if let Ok(mut def) = defined(&vm) {
        for p in &plans {
            if let Some(d) = def.disks.iter_mut().find(|d| d.id == p.id) {
                d.path.clone_from(&p.overlay);
                d.format = DiskFormat::Qcow2;
                if d.io == IoMode::IoUring {
                    d.io = IoMode::Threads;
                }
            }
        }
        vm_control::save_definition(&def)?;
    }
    let rec = Snapshot {
        name: snap,
        created: now,
        live,
        deleting: false,
        disks: plans
            .iter()
            .map(|p| SnapDisk {
                id: p.id.clone(),
                base: p.top.clone(),
                base_format: format_name(p.format).into(),
                overlay: p.overlay.clone(),
            })
            .collect(),
    };
    records.snapshots.push(rec.clone());
    meta::store(&vm, &records)?;
    made.0.clear();
    super::print_json(&serde_json::json!({
        "vm": vm,
        "name": rec.name,
        "live": live,
        "pause_us": pause_us,
        "disks": rec.disks,
    }));
    Ok(0)
}

/// Removes the overlays made so far unless the snapshot took.
struct Made(Vec<PathBuf>);

impl Drop for Made {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn format_name(f: DiskFormat) -> &'static str {
    match f {
        DiskFormat::Raw => "raw",
        DiskFormat::Qcow2 => "qcow2",
    }
}

/// A stopped VM's snapshot needs its definition.
pub(crate) fn defined(vm: &str) -> Result<VmSpec> {
    let p = vm_control::defined_spec_path(vm)?;
    let text = std::fs::read_to_string(&p)
        .map_err(|_| anyhow!("VM '{vm}' is neither running nor defined"))?;
    VmSpec::from_json(&text).map_err(|e| anyhow!("{}: {e}", p.display()))
}

fn plan(spec: &VmSpec, snap: &str, wanted: &[DiskArg]) -> Result<Vec<Plan>> {
    let chosen: Vec<DiskArg> = if wanted.is_empty() {
        spec.disks
            .iter()
            .filter(|d| !d.readonly)
            .map(|d| DiskArg {
                id: d.id.clone(),
                file: None,
            })
            .collect()
    } else {
        wanted.to_vec()
    };
    if chosen.is_empty() {
        bail!("the VM has no writable disk to snapshot");
    }
    let mut out: Vec<Plan> = Vec::new();
    for a in chosen {
        let index = spec
            .disks
            .iter()
            .position(|d| d.id == a.id)
            .ok_or_else(|| anyhow!("the VM has no disk {}", a.id))?;
        if out.iter().any(|p| p.index == index) {
            bail!("disk {} is named twice", a.id);
        }
        let d = &spec.disks[index];
        if d.readonly {
            bail!("disk {} is read-only: it needs no snapshot", a.id);
        }
        let md = std::fs::metadata(&d.path).with_context(|| d.path.display().to_string())?;
        if md.file_type().is_block_device() {
            bail!(
                "disk {}: {} is a block device; snapshots are qcow2 overlays on image files",
                a.id,
                d.path.display()
            );
        }
        let top = std::path::absolute(&d.path)?;
        let overlay = if let Some(f) = a.file {
            std::path::absolute(f)?
        } else {
            let stem = top
                .file_stem()
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
            top.with_file_name(format!("{stem}.{snap}.qcow2"))
        };
        out.push(Plan {
            index,
            id: a.id,
            top,
            format: d.format,
            overlay,
        });
    }
    Ok(out)
}

/// Makes `p.overlay` (it must not exist): qcow2, the top's size, the top
/// as its backing file with its format recorded, on stable storage.
fn make_overlay(p: &Plan) -> Result<File> {
    let format = match p.format {
        DiskFormat::Raw => Format::Raw,
        DiskFormat::Qcow2 => Format::Qcow2,
    };
    let top = Image::open(
        &p.top,
        &OpenOptions {
            format: Some(format),
            write: false,
            lock: false,
            direct: false,
            backing: false,
            probe_backing: false,
            faults: None,
        },
    )?;
    let size = top.size();
    drop(top);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&p.overlay)
        .map_err(|e| anyhow!("{e} (an overlay is never written over an existing file)"))?;
    let o = CreateOptions {
        size,
        backing_file: Some(p.top.display().to_string()),
        backing_format: Some(format_name(p.format).into()),
        ..CreateOptions::default()
    };
    Qcow2Writer::new(f.try_clone()?, &o)?.finish()?.sync_all()?;
    if let Some(dir) = p.overlay.parent() {
        File::open(dir).and_then(|d| d.sync_all()).ok();
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_args() {
        assert_eq!(
            parse_disk("vda").unwrap(),
            DiskArg {
                id: "vda".into(),
                file: None
            }
        );
        assert_eq!(
            parse_disk("vdb,snapshot=external,file=/x/y.qcow2")
                .unwrap()
                .file,
            Some(PathBuf::from("/x/y.qcow2"))
        );
        assert!(parse_disk("vda,snapshot=internal").is_err());
        assert!(parse_disk(",file=x").is_err());
        assert!(parse_disk("vda,file=").is_err());
    }
}
