//! `vm-img snapshot`: a qcow2 image's internal snapshots, listed (-l),
//! taken (-c), applied (-a) and deleted (-d) as qemu-img does.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use vm_image::qcow2::meta::{Meta, Snapshot};
use vm_image::qcow2::snapshot;
use vm_image::Format;

use crate::cli::SnapshotArgs;
use crate::input::{edit_target, EditTarget};
use crate::util;

enum Action<'a> {
    List,
    Create(&'a str),
    Apply(&'a str),
    Delete(&'a str),
}

pub fn run(a: &SnapshotArgs) -> Result<i32> {
    let EditTarget {
        path,
        format: format_name,
        faults,
    } = edit_target(&a.filename, a.common.format.as_deref(), a.common.image_opts)?;
    let faults = faults.as_ref();
    let path = &path;
    let action = match (&a.create, &a.apply, &a.delete) {
        (Some(n), _, _) => Action::Create(n),
        (_, Some(n), _) => Action::Apply(n),
        (_, _, Some(n)) => Action::Delete(n),
        _ => Action::List,
    };
    let format = util::parse_format(format_name.as_deref())?;
    if let Action::List = action {
        let img = util::open_read(path, format_name.as_deref(), a.force_share)?;
        // Formats without snapshots list nothing, as with qemu-img.
        if img.format() == Format::Qcow2 {
            let snaps: Vec<Value> = read_snapshots(path)?.iter().map(to_json).collect();
            print!("{}", table(&snaps));
        }
        return Ok(0);
    }
    if a.force_share {
        bail!("force-share=on can only be used with read-only images");
    }
    if let Action::Create(name) = action {
        // QEMU's first refusal, before it reads the table: a header that
        // already counts its limit of snapshots (its table may lie past
        // the end of the file, which QEMU reads as zeroes and vm-image
        // refuses to open).
        if full_table(path) {
            bail!(
                "Could not create snapshot '{name}': {}",
                errno_text(&snapshot::too_many(path))
            );
        }
    }
    let (_lock, img) = util::lock_for_edit(path, format)?;
    let qcow2 = img.format() == Format::Qcow2;
    drop(img);
    match action {
        Action::Create(name) => {
            if !qcow2 {
                bail!("Could not create snapshot '{name}': -95 (Operation not supported)");
            }
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let date = (now.as_secs() as u32, now.subsec_micros() * 1000);
            snapshot::create(path, name, date, faults)
                .map_err(|e| match e {
                    // qemu-img says these by their number.
                    vm_image::Error::Errno { .. } => anyhow!(errno_text(&e)),
                    e => anyhow!(e),
                })
                .with_context(|| format!("Could not create snapshot '{name}'"))?;
        }
        Action::Apply(name) => {
            if !qcow2 {
                bail!("Could not apply snapshot '{name}': Block driver does not support snapshots");
            }
            snapshot::apply(path, name, faults)
                .map_err(|e| util::qcow2_failure(e, "Failed to load snapshot"))
                .with_context(|| format!("Could not apply snapshot '{name}'"))?;
        }
        Action::Delete(name) => {
            if !qcow2 {
                bail!("Could not delete snapshot '{name}': snapshot not found");
            }
            snapshot::delete(path, name, faults)
                .map_err(|e| {
                    // QEMU says which step failed on a line of its own.
                    if let vm_image::Error::FreeFailed(io) = &e {
                        eprintln!("qcow2_free_clusters failed: {}", vm_image::os_text(io));
                    }
                    anyhow!(e)
                })
                .with_context(|| format!("Could not delete snapshot '{name}'"))?;
        }
        Action::List => unreachable!("listed above"),
    }
    Ok(0)
}

pub(crate) fn read_snapshots(path: &Path) -> Result<Vec<Snapshot>> {
    let file = std::fs::File::open(path).map_err(|e| crate::util::could_not_open(path, e))?;
    let meta = Meta::open(path, file)?;
    Ok(meta.snapshots()?)
}

/// One snapshot as `info --output json` shows it (qemu-img's names).
pub fn to_json(s: &Snapshot) -> Value {
    let mut v = json!({
        "id": s.id, "name": s.name,
        "vm-state-size": s.vm_state_size,
        "date-sec": s.date_sec, "date-nsec": s.date_nsec,
        "vm-clock-sec": s.vm_clock_nsec / 1_000_000_000,
        "vm-clock-nsec": s.vm_clock_nsec % 1_000_000_000,
    });
    if let Some(ic) = s.icount {
        v["icount"] = json!(ic);
    }
    v
}

/// The snapshot list in qemu-img's layout (`snapshot -l` and `info`), from
/// `to_json`'s records; empty when there are none.
pub fn table(snaps: &[Value]) -> String {
    let mut out = String::new();
    if snaps.is_empty() {
        return out;
    }
    out += "Snapshot list:\n";
    let _ = writeln!(
        out,
        "{:<10}{:<17}{:>8}{:>20}{:>13}{:>11}",
        "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT"
    );
    for sn in snaps {
        let g = |k: &str| sn.get(k).and_then(Value::as_u64).unwrap_or_default();
        let t = |k: &str| sn.get(k).and_then(Value::as_str).unwrap_or_default();
        let secs = g("vm-clock-sec");
        let clock = format!(
            "{:02}:{:02}:{:02}.{:03}",
            secs / 3600,
            (secs / 60) % 60,
            secs % 60,
            g("vm-clock-nsec") / 1_000_000
        );
        let _ = writeln!(
            out,
            "{:<9} {:<16} {:>8}{:>20}{:>13}{:>11}",
            // qemu-img's listing keeps 127 bytes of an ID, 255 of a name.
            clip(t("id"), 127),
            clip(t("name"), 255),
            util::human_size(g("vm-state-size")),
            vm_spec::text::date_time(g("date-sec")),
            clock,
            sn.get("icount")
                .and_then(Value::as_u64)
                .map(|i| i.to_string())
                .unwrap_or_default(),
        );
    }
    out
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn clip(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// An errno error as qemu-img prints it: `-N (text)`.
fn errno_text(e: &vm_image::Error) -> String {
    match e {
        vm_image::Error::Errno { errno, .. } => format!("-{errno} ({})", util::strerror(*errno)),
        e => e.to_string(),
    }
}

/// Whether `path` is a qcow2 image whose header already counts QEMU's
/// limit of snapshots (read from the header's fixed fields alone, through
/// the checked open: a FIFO is not waited on).
fn full_table(path: &Path) -> bool {
    use std::os::unix::fs::FileExt;
    use vm_image::qcow2::header::{MAGIC, MAX_SNAPSHOTS};
    let mut h = [0u8; 64];
    vm_image::open_image_file(path, false, false).is_ok_and(|f| f.read_exact_at(&mut h, 0).is_ok())
        && u32::from_be_bytes([h[0], h[1], h[2], h[3]]) == MAGIC
        && u32::from_be_bytes([h[60], h[61], h[62], h[63]]) >= MAX_SNAPSHOTS
}
