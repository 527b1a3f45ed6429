//! The comparing half of a check: the stored refcounts against the
//! counted references, fixing what a repair may fix in place.

use super::{CheckReport, Repair, Signal};
use crate::qcow2::corrupt::{self, hex};
use crate::qcow2::header::OFFSET_MASK;
use crate::qcow2::meta::{decode_refblock, encode_refcount, Meta};
use crate::{Error, Result};

/// How a comparison runs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pass {
    /// What it fixes.
    pub fix: Repair,
    /// Whether the image is open for writing (a corruption event then
    /// marks it corrupt).
    pub writable: bool,
    /// Says what it would fix without writing it (the image was marked
    /// corrupt: QEMU's repair can no longer write its fixes).
    pub dry: bool,
}

impl Pass {
    /// A comparison that fixes nothing.
    pub fn look(writable: bool) -> Self {
        Self {
            fix: Repair::None,
            writable,
            dry: false,
        }
    }
}

/// Compares stored refcounts with the counted references. Leaks are fixed
/// with any repair, under-counts with `All`; a cluster in use with no
/// refcount at all (0, or no refcount block) cannot be fixed in place and
/// sets `rebuild`. Fixed problems are counted only as fixed, as qemu-img.
pub(super) fn compare_refcounts(
    meta: &Meta,
    counts: &[u32],
    pass: Pass,
    report: &mut CheckReport,
    rebuild: &mut bool,
) -> Result<()> {
    let repair = pass.fix;
    let cs = meta.cluster_size();
    let per_block = meta.refblock_entries();
    let order = meta.header.refcount_order;
    let max_ref = if order == 6 {
        u64::MAX
    } else {
        (1u64 << (1 << order)) - 1
    };
    let nb_clusters = counts.len() as u64;
    let mut unrecorded_block = false;
    let mut unrecorded = |cl: u64, real: u64, report: &mut CheckReport| {
        *rebuild = true;
        report.corruptions += 1;
        report
            .messages
            .push(format!("ERROR cluster {cl} refcount=0 reference={real}"));
    };
    for (bi, &rbe) in meta.reftable.iter().enumerate() {
        let first = bi as u64 * per_block;
        let block_off = rbe & OFFSET_MASK;
        if block_off % cs != 0 {
            // QEMU cannot read such a block: one corruption event, then an
            // I/O error for every cluster of the file it would describe.
            signal(
                meta,
                pass.writable,
                report,
                &format!(
                    "Refblock offset {} unaligned (reftable index: {})",
                    hex(block_off),
                    hex(bi as u64)
                ),
            )?;
            for cl in first..(first + per_block).min(nb_clusters) {
                report.check_errors += 1;
                report.messages.push(format!(
                    "Can't get refcount for cluster {cl}: Input/output error"
                ));
            }
            unrecorded_block = true;
            continue;
        }
        if block_off == 0 || !meta.cluster_in_file(block_off) {
            // Every cluster this block should describe is unrecorded.
            for cl in first..(first + per_block).min(nb_clusters) {
                let real = u64::from(counts[cl as usize]);
                if real > 0 {
                    unrecorded(cl, real, report);
                }
            }
            // A block outside the image (reported by `count`) needs a new
            // one, whatever it counts.
            if block_off != 0 {
                unrecorded_block = true;
            }
            continue;
        }
        let mut raw = vec![0u8; cs as usize];
        crate::qcow2::meta::read_exact_at(&meta.file, &meta.path, &mut raw, block_off)?;
        let stored = decode_refblock(&raw, order);
        let mut dirty = false;
        let mut freed = Vec::new();
        // Only clusters of the file (or referenced past its end) are
        // compared, as qemu-img does: a refcount past both is no leak.
        let in_file = stored.len().min(nb_clusters.saturating_sub(first) as usize);
        for (i, &have) in stored[..in_file].iter().enumerate() {
            let cl = first + i as u64;
            let real = u64::from(counts[cl as usize]);
            // qemu-img's image end: past the last cluster that is in use
            // or has a refcount (leaked clusters count).
            if have > 0 {
                report.image_end_offset = report.image_end_offset.max((cl + 1) * cs);
            }
            if have == real {
                continue;
            }
            if have == 0 {
                unrecorded(cl, real, report);
                continue;
            }
            let fix = if have > real {
                repair != Repair::None
            } else {
                repair == Repair::All && real <= max_ref
            };
            let word = match (fix, have > real) {
                (true, _) => "Repairing",
                (false, true) => "Leaked",
                (false, false) => "ERROR",
            };
            report.messages.push(format!(
                "{word} cluster {cl} refcount={have} reference={real}"
            ));
            if fix {
                encode_refcount(&mut raw, order, i, real);
                dirty = true;
                if real == 0 {
                    freed.push(cl * cs);
                }
                if have > real {
                    report.leaks_fixed += 1;
                } else {
                    report.corruptions_fixed += 1;
                }
            } else if have > real {
                report.leaks += 1;
            } else {
                report.corruptions += 1;
            }
        }
        if pass.dry {
            continue;
        }
        if dirty {
            meta.file
                .write_all_at(&raw, block_off)
                .map_err(|e| Error::io(&meta.path, e))?;
        }
        // Freed clusters go from the disk too, as QEMU discards them.
        for at in freed.drain(..) {
            meta.file.punch(at, cs);
        }
    }
    // Clusters past the last refcount block have no refcount at all.
    let covered = meta.reftable.len() as u64 * per_block;
    for cl in covered..nb_clusters {
        let real = u64::from(counts[cl as usize]);
        if real > 0 {
            unrecorded(cl, real, report);
        }
    }
    if unrecorded_block {
        *rebuild = true;
    }
    Ok(())
}

/// QEMU's corruption event, said once per check: with the image open for
/// writing, its corrupt bit is set first.
fn signal(meta: &Meta, writable: bool, report: &mut CheckReport, what: &str) -> Result<()> {
    if report.signalled != Signal::None {
        return Ok(());
    }
    if writable {
        corrupt::set_bit(meta)?;
        report.messages.push(format!(
            "qcow2: Marking image as corrupt: {what}; further corruption events will be \
             suppressed"
        ));
        report.signalled = Signal::Marked;
    } else {
        report.messages.push(format!(
            "qcow2: Image is corrupt: {what}; further non-fatal corruption events will be \
             suppressed"
        ));
        report.signalled = Signal::Said;
    }
    Ok(())
}
