//! The COPIED-flag half of `check`: every active L1 and L2 entry says
//! whether its cluster is the active image's alone (refcount 1), and
//! `check -r` sets the flags right.

use super::check::{CheckReport, Repair};
use super::header::{COPIED, OFFSET_MASK};
use super::meta::{L2Entry, Meta};
use crate::{Error, Result};

/// The COPIED flag must be set exactly on L1/L2 entries whose cluster has
/// refcount 1 (qemu-img's OFLAG_COPIED check), in the active tables.
pub(super) fn check_copied(meta: &Meta, repair: Repair, report: &mut CheckReport) -> Result<()> {
    // -r leaks repairs flags only when the refcounts it relies on are sound.
    let fix = match repair {
        Repair::All => true,
        Repair::Leaks => report.check_errors == 0 && report.corruptions == 0 && report.leaks == 0,
        Repair::None => false,
    };
    let word = if fix { "Repairing" } else { "ERROR" };
    let cs = meta.cluster_size();
    let per_block = meta.refblock_entries();
    let mut block_cache: Option<(u64, Vec<u64>)> = None;
    let mut refcount = |off: u64| -> Option<u64> {
        let cl = off / cs;
        let bi = (cl / per_block) as usize;
        let block = meta.reftable.get(bi)? & OFFSET_MASK;
        if block == 0 {
            return Some(0);
        }
        if block_cache.as_ref().is_none_or(|(b, _)| *b != block) {
            block_cache = Some((block, meta.read_refblock(block).ok()?));
        }
        block_cache
            .as_ref()?
            .1
            .get((cl % per_block) as usize)
            .copied()
    };
    let mut l1_fixed = false;
    let mut l1 = meta.l1.clone();
    for (index, l1e) in l1.iter_mut().enumerate() {
        let l2_off = *l1e & OFFSET_MASK;
        if l2_off == 0 || !meta.cluster_in_file(l2_off) {
            continue;
        }
        let rc = refcount(l2_off);
        let want = rc == Some(1);
        if want != (*l1e & COPIED != 0) && rc.is_some() {
            report.messages.push(format!(
                "{word} OFLAG_COPIED L2 cluster: l1_index={index} l1_entry={:x} refcount={}",
                *l1e,
                rc.unwrap_or(0)
            ));
            if fix {
                *l1e ^= COPIED;
                l1_fixed = true;
                report.corruptions_fixed += 1;
            } else {
                report.corruptions += 1;
            }
        }
        let mut l2_raw = meta.read_table(l2_off, cs / 8)?;
        let step = (meta.header.l2_entry_size() / 8) as usize;
        let mut l2_fixed = false;
        for e in l2_raw.iter_mut().step_by(step) {
            let (L2Entry::Data { host, .. } | L2Entry::Zero { host: Some(host) }) =
                meta.decode_l2(*e)
            else {
                continue;
            };
            // Clusters of an external data file have no refcount to match.
            if meta.header.has_data_file() {
                continue;
            }
            let Some(rc) = refcount(host) else { continue };
            let want = rc == 1;
            if want != (*e & COPIED != 0) {
                report.messages.push(format!(
                    "{word} OFLAG_COPIED data cluster: l2_entry={:x} refcount={rc}",
                    *e
                ));
                if fix {
                    *e ^= COPIED;
                    l2_fixed = true;
                    report.corruptions_fixed += 1;
                } else {
                    report.corruptions += 1;
                }
            }
        }
        if l2_fixed {
            let bytes: Vec<u8> = l2_raw.iter().flat_map(|v| v.to_be_bytes()).collect();
            meta.file
                .write_all_at(&bytes, l2_off)
                .map_err(|e| Error::io(&meta.path, e))?;
        }
    }
    if l1_fixed {
        let bytes: Vec<u8> = l1.iter().flat_map(|v| v.to_be_bytes()).collect();
        meta.file
            .write_all_at(&bytes, meta.header.l1_table_offset)
            .map_err(|e| Error::io(&meta.path, e))?;
    }
    Ok(())
}
