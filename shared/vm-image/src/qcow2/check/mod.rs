//! `check`: rebuild every cluster's reference count from the tables and
//! compare it with the stored refcounts, as qemu-img check does. Optionally
//! repair leaks (stored > real) and, with `all`, under-counted clusters and
//! wrong COPIED flags.

mod compare;
mod count;

use super::header::{INCOMPAT_CORRUPT, INCOMPAT_DIRTY, OFFSET_MASK};
use super::meta::{Meta, SnapshotTable};
use crate::{Error, Result};
use compare::{compare_refcounts, Pass};
use count::count;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    None,
    Leaks,
    All,
}

/// The result of a check, with qemu-img's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub corruptions: u64,
    pub leaks: u64,
    pub check_errors: u64,
    pub corruptions_fixed: u64,
    pub leaks_fixed: u64,
    pub total_clusters: u64,
    pub allocated_clusters: u64,
    pub fragmented_clusters: u64,
    pub compressed_clusters: u64,
    pub image_end_offset: u64,
    /// One line per problem, in qemu-img's words.
    pub messages: Vec<String>,
    /// Whether the check met a refcount block it cannot read (one off its
    /// cluster boundary) and so said the image is corrupt; see [`Signal`].
    pub signalled: Signal,
}

/// QEMU's corruption event during a check: said once, and when the image
/// is open for writing (a repair), its corrupt bit is set and the repair
/// ends after the rebuild of the refcount structure, as qemu-img's does:
/// the old structure's clusters stay leaked and the check fails (`No
/// medium found`) until the next `check -r` frees them and clears the bit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Signal {
    #[default]
    None,
    /// Said, nothing written (a check without repair).
    Said,
    /// Said, and the corrupt bit set.
    Marked,
}

/// Runs the check, and repairs when asked, in qemu-img's order and words:
/// the refcounts are compared (ERROR and Leaked lines); with a repair they
/// are compared again, fixing what can be fixed in place (Repairing lines),
/// or, where a cluster in use has no refcount at all, the whole refcount
/// structure is rebuilt (`-r all`); then the COPIED flags are checked. The
/// file must be open for writing when `repair` is not [`Repair::None`].
pub fn check(meta: &Meta, repair: Repair) -> Result<CheckReport> {
    // The snapshot table first, as QEMU reads it: a table past QEMU's
    // limits fails the check, unless `-r all` cuts it back.
    let table = meta.snapshot_table(repair == Repair::All)?;
    if table.overhanging > 0 {
        // The header's count at once (QEMU writes it before the refcounts
        // are counted, so what was left out shows as leaks).
        let count = table.snapshots.len() as u32;
        meta.file
            .write_all_at(&count.to_be_bytes(), 60)
            .map_err(|e| Error::io(&meta.path, e))?;
        sync(meta)?;
    }
    // v3 snapshot entries need both sizes in their extra data.
    let incomplete: Vec<usize> = if meta.header.version >= 3 {
        (table.snapshots.iter().enumerate())
            .filter(|(_, s)| s.extra_len < 16)
            .map(|(i, _)| i)
            .collect()
    } else {
        Vec::new()
    };
    let word = if repair == Repair::All {
        "Repairing"
    } else {
        "ERROR"
    };
    let early: Vec<String> = (table.messages.iter().cloned())
        .chain(
            (incomplete.iter()).map(|i| format!("{word} snapshot table entry {i} is incomplete")),
        )
        .collect();
    let mut report = check_refcounts(meta, repair, &table)?;
    report.messages.splice(0..0, early);
    report.corruptions_fixed += table.overhanging;
    // Entries to write anew (after the refcounts, as qemu-img).
    let mend = table.extra_dropped + incomplete.len() as u64;
    if mend == 0 {
        return Ok(report);
    }
    if repair == Repair::All {
        crate::qcow2::snapshot::rewrite_table(&meta.path, &table.snapshots)?;
        report.corruptions_fixed += mend;
    } else {
        report.corruptions += mend;
    }
    Ok(report)
}

fn check_refcounts(meta: &Meta, repair: Repair, table: &SnapshotTable) -> Result<CheckReport> {
    let grown = if repair == Repair::All {
        refblocks_past_end(meta)
    } else {
        Grown::default()
    };
    // After growing the file, the tables are read again.
    let reopened;
    let meta = if grown.resized {
        let file = meta
            .file
            .try_clone()
            .map_err(|e| Error::io(&meta.path, e))?;
        reopened = Meta::open_for_repair(&meta.path, file)?;
        &reopened
    } else {
        meta
    };
    let (counts, mut report, mut rebuild) = count(meta, repair, table)?;
    report.messages.splice(0..0, grown.messages);
    report.corruptions += grown.corruptions;
    report.corruptions_fixed += grown.fixed;
    rebuild |= grown.rebuild;
    let pre = report.clone();
    let writable = repair != Repair::None;
    compare_refcounts(
        meta,
        &counts,
        Pass::look(writable),
        &mut report,
        &mut rebuild,
    )?;
    if rebuild && repair == Repair::All {
        report.messages.push("Rebuilding refcount structure".into());
        let old = report.clone();
        crate::qcow2::rebuild::rebuild(meta, &counts)?;
        let file = meta
            .file
            .try_clone()
            .map_err(|e| Error::io(&meta.path, e))?;
        let fresh_meta = Meta::open(&meta.path, file)?;
        // The old refcount structures are now leaks: free them.
        let (counts, walked, _) = count(&fresh_meta, Repair::None, table)?;
        let mut pass = CheckReport {
            messages: std::mem::take(&mut report.messages),
            ..CheckReport::default()
        };
        pass.messages.extend(walked.messages.iter().cloned());
        let mut still = false;
        let marked = report.signalled == Signal::Marked;
        let fix = Pass {
            fix: Repair::Leaks,
            writable,
            dry: marked,
        };
        compare_refcounts(&fresh_meta, &counts, fix, &mut pass, &mut still)?;
        if still {
            pass.messages
                .push("ERROR rebuilt refcount structure is still broken".into());
        }
        report = CheckReport {
            messages: pass.messages,
            signalled: report.signalled,
            ..walked
        };
        // What was fixed before the rebuild (a refcount block the file
        // was grown over) stays fixed.
        report.corruptions_fixed =
            old.corruptions_fixed + old.corruptions.saturating_sub(report.corruptions);
        report.leaks_fixed += old.leaks.saturating_sub(report.leaks);
        report.leaks += pass.leaks;
        if marked {
            // Nothing more is written: the corrupt bit stays, as QEMU's
            // repair leaves it once its image has become unusable.
            crate::qcow2::copied::check_copied(&fresh_meta, Repair::None, &mut report)?;
            sync(&fresh_meta)?;
            return Ok(report);
        }
        crate::qcow2::copied::check_copied(&fresh_meta, repair, &mut report)?;
        mark_clean(&fresh_meta, &report)?;
        sync(&fresh_meta)?;
        return Ok(report);
    }
    if repair != Repair::None {
        if rebuild {
            report
                .messages
                .push("ERROR need to rebuild refcount structures".into());
            report.check_errors += 1;
            return Ok(report);
        }
        if report.leaks > 0 || report.corruptions > 0 {
            report = CheckReport {
                messages: std::mem::take(&mut report.messages),
                ..pre
            };
            let fix = Pass {
                fix: repair,
                writable,
                dry: false,
            };
            compare_refcounts(meta, &counts, fix, &mut report, &mut rebuild)?;
        }
    }
    crate::qcow2::copied::check_copied(meta, repair, &mut report)?;
    if repair != Repair::None {
        mark_clean(meta, &report)?;
        if report.leaks_fixed > 0 || report.corruptions_fixed > 0 {
            sync(meta)?;
        }
    }
    Ok(report)
}

/// What `refblocks_past_end` did.
#[derive(Debug, Default)]
struct Grown {
    messages: Vec<String>,
    corruptions: u64,
    fixed: u64,
    rebuild: bool,
    resized: bool,
}

/// A repair's first step, as qemu-img takes it: a refcount block that
/// lies past the end of the file gets the file grown over it (reading as
/// zeroes); one too far out for that leaves a rebuild to do.
fn refblocks_past_end(meta: &Meta) -> Grown {
    let cs = meta.cluster_size();
    let mut g = Grown::default();
    let mut len = meta.file_len;
    for (i, &rb) in meta.reftable.iter().enumerate() {
        let off = rb & OFFSET_MASK;
        if off == 0 || off % cs != 0 || off / cs < len.div_ceil(cs) {
            continue;
        }
        g.messages
            .push(format!("Repairing refcount block {i} is outside image"));
        // The same bound as QEMU's (a signed 64-bit file size).
        let end = off.checked_add(cs).filter(|&e| i64::try_from(e).is_ok());
        if let Some(Ok(())) = end.map(|e| meta.file.set_len(e)) {
            len = off + cs;
            g.fixed += 1;
            g.resized = true;
        } else {
            g.corruptions += 1;
            g.rebuild = true;
            g.messages
                .push("ERROR could not resize image: Invalid argument".into());
        }
    }
    g
}

/// The autoclear bits QEMU knows: bitmaps, raw external data file.
const AUTOCLEAR_KNOWN: u64 = 0b11;

/// After a repair that left no corruption, the dirty and corrupt bits go,
/// as qemu-img clears them: the refcounts are now right, and nothing is
/// known to be broken.
fn mark_clean(meta: &Meta, report: &CheckReport) -> Result<()> {
    // Autoclear bits we do not know go on any writable open (QEMU's rule:
    // whatever they promised, we did not keep).
    let autoclear = meta.header.autoclear_features;
    if meta.header.version >= 3 && autoclear & !AUTOCLEAR_KNOWN != 0 {
        meta.file
            .write_all_at(&(autoclear & AUTOCLEAR_KNOWN).to_be_bytes(), 88)
            .map_err(|e| Error::io(&meta.path, e))?;
        sync(meta)?;
    }
    let bits = INCOMPAT_DIRTY | INCOMPAT_CORRUPT;
    let features = meta.header.incompatible_features;
    if meta.header.version < 3
        || features & bits == 0
        || report.corruptions > 0
        || report.check_errors > 0
    {
        return Ok(());
    }
    meta.file
        .write_all_at(&(features & !bits).to_be_bytes(), 72)
        .map_err(|e| Error::io(&meta.path, e))?;
    sync(meta)
}

fn sync(meta: &Meta) -> Result<()> {
    meta.file.sync_all().map_err(|e| Error::io(&meta.path, e))
}
