//! `check`: rebuild every cluster's reference count from the tables and
//! compare it with the stored refcounts, as qemu-img check does. Optionally
//! repair leaks (stored > real) and, with `all`, under-counted clusters and
//! wrong COPIED flags.

use super::header::{INCOMPAT_CORRUPT, INCOMPAT_DIRTY, OFFSET_MASK};
use super::meta::{decode_refblock, encode_refcount, L1Fault, L2Entry, Meta, SnapshotTable};
use crate::{Error, Result};

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
}

struct Counter<'a> {
    meta: &'a Meta,
    counts: Vec<u32>,
    report: CheckReport,
    /// Found something only a new refcount structure fixes.
    rebuild: bool,
    /// What the walk may fix as it goes (misaligned zero clusters).
    repair: Repair,
}

impl Counter<'_> {
    /// Adds a reference to every cluster in `[offset, offset + len)`. A
    /// region ending a cluster or more past the file's end is corrupt
    /// (qemu-img's rule and words); less than that is tolerated.
    fn add(&mut self, _what: &str, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let cs = self.meta.cluster_size();
        let end = offset.saturating_add(len);
        if end.saturating_sub(self.meta.file_len) >= cs {
            self.report.corruptions += 1;
            self.report.messages.push(format!(
                "ERROR: counting reference for region exceeding the end of the file by one \
                 cluster or more: offset 0x{offset:x} size 0x{len:x}"
            ));
            return;
        }
        let first = offset / cs;
        let last = (end - 1) / cs;
        if self.counts.len() <= last as usize {
            self.counts.resize(last as usize + 1, 0);
        }
        // A reference more than the image's refcount width can count is
        // an error of its own, as qemu-img reports it (and not counted).
        let order = self.meta.header.refcount_order;
        let max = if order >= 5 {
            u32::MAX
        } else {
            (1u32 << (1u32 << order)) - 1
        };
        for c in first..=last {
            let n = &mut self.counts[c as usize];
            if *n >= max {
                self.report.corruptions += 1;
                self.report
                    .messages
                    .push(format!("ERROR: overflow cluster offset=0x{:x}", c * cs));
                self.report.messages.push(
                    "Use qemu-img amend to increase the refcount entry width or qemu-img convert \
                     to create a clean copy if the image cannot be opened for writing"
                        .into(),
                );
                continue;
            }
            *n += 1;
        }
    }

    /// qemu-img's fragmentation count: a cluster not right after the
    /// previous one in the file.
    fn count_allocated(&mut self, host: u64, next_contiguous: &mut u64) {
        self.report.allocated_clusters += 1;
        if *next_contiguous != 0 && host != *next_contiguous {
            self.report.fragmented_clusters += 1;
        }
        *next_contiguous = host + self.meta.cluster_size();
    }

    /// Makes entry `i` of the L2 table at `l2_off` a plain zero cluster
    /// (the repair file is open for writing).
    fn zero_entry(&mut self, l2_off: u64, i: usize) -> Result<()> {
        let at = l2_off + i as u64 * self.meta.header.l2_entry_size();
        // An extended entry keeps its bitmap (its zero bits say zero); the
        // descriptor loses the cluster, as QEMU's repair writes it.
        let desc = if self.meta.header.extended_l2() {
            0
        } else {
            super::header::ZERO
        };
        self.meta
            .file
            .write_all_at(&desc.to_be_bytes(), at)
            .map_err(|e| Error::io(&self.meta.path, e))
    }

    fn aligned(&mut self, what: &str, offset: u64) -> bool {
        if offset % self.meta.cluster_size() == 0 {
            return true;
        }
        self.report.corruptions += 1;
        if what == "L2 table" {
            self.report.messages.push(format!(
                "ERROR l2_offset={offset:x}: Table is not cluster aligned; L1 entry corrupted"
            ));
            return false;
        }
        self.report.messages.push(format!(
            "ERROR {what} offset=0x{offset:x} is not cluster aligned"
        ));
        false
    }

    /// Counts an L1 table, its L2 tables and their data clusters.
    fn walk_l1(&mut self, l1: &[u64], active: bool) -> Result<()> {
        let cs = self.meta.cluster_size();
        for &l1e in l1 {
            // qemu-img follows contiguity within each L2 table.
            let mut next_contiguous = 0u64;
            let l2_off = l1e & OFFSET_MASK;
            if l2_off == 0 {
                continue;
            }
            if !self.aligned("L2 table", l2_off) {
                continue;
            }
            self.add("L2 table", l2_off, cs);
            if l2_off >= self.meta.file_len {
                continue;
            }
            let data_file = self.meta.header.has_data_file();
            for (i, entry) in self.meta.read_l2_padded(l2_off)?.into_iter().enumerate() {
                match entry {
                    L2Entry::Unallocated | L2Entry::Zero { host: None } => {}
                    L2Entry::Zero { host: Some(h) } | L2Entry::Data { host: h, .. } => {
                        let zero = matches!(entry, L2Entry::Zero { .. });
                        if h % cs != 0 {
                            // qemu-img's words; a preallocated zero cluster
                            // is repaired into a plain one.
                            self.report.corruptions += 1;
                            if !zero {
                                self.report.messages.push(format!(
                                    "ERROR offset={h:x}: Data cluster is not properly aligned; \
                                     L2 entry corrupted."
                                ));
                            } else if self.repair == Repair::All {
                                self.report.messages.push(format!(
                                    "Repairing offset={h:x}: Preallocated cluster is not properly \
                                     aligned; L2 entry corrupted."
                                ));
                                self.zero_entry(l2_off, i)?;
                                self.report.corruptions -= 1;
                                self.report.corruptions_fixed += 1;
                                continue;
                            } else {
                                self.report.messages.push(format!(
                                    "ERROR offset={h:x}: Preallocated cluster is not properly \
                                     aligned; L2 entry corrupted."
                                ));
                            }
                        }
                        // An allocated zero cluster counts as data does.
                        if active {
                            self.count_allocated(h, &mut next_contiguous);
                        }
                        // In an external data file nothing is refcounted.
                        if !data_file {
                            self.add("data cluster", h, cs);
                        }
                    }
                    L2Entry::Compressed { host, len } => {
                        self.add("compressed cluster", host, len);
                        if active {
                            self.report.allocated_clusters += 1;
                            self.report.compressed_clusters += 1;
                            // Compressed clusters are fragmented by nature;
                            // the run of the clusters around them goes on.
                            self.report.fragmented_clusters += 1;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Counts the bitmap directory, tables and data, read with the same
    /// checked parser the bitmap edits use. As qemu-img: nothing when the
    /// autoclear bit says the extension is stale (its clusters are then
    /// leaks); a directory or table that does not parse is one corruption.
    fn walk_bitmaps(&mut self) {
        let meta = self.meta;
        let corrupt = |c: &mut Self, e: Error| {
            c.report.corruptions += 1;
            c.report.messages.push(format!("ERROR bitmaps: {e}"));
        };
        let dir = match super::bitmaps::directory(meta) {
            Ok(Some(d)) => d,
            Ok(None) => return,
            Err(e) => {
                corrupt(self, e);
                return;
            }
        };
        self.add("bitmap directory", dir.offset, dir.size);
        let list = match super::bitmaps::list(meta) {
            Ok(l) => l,
            Err(e) => {
                corrupt(self, e);
                return;
            }
        };
        for bm in &list {
            self.add(
                "bitmap table",
                bm.table_offset,
                u64::from(bm.table_size) * 8,
            );
            match super::bitmaps::read_table(meta, bm) {
                Ok(table) => {
                    for off in table.iter().map(|e| e & OFFSET_MASK).filter(|&o| o != 0) {
                        self.add("bitmap data", off, meta.cluster_size());
                    }
                }
                Err(e) => {
                    corrupt(self, e);
                    return;
                }
            }
        }
    }
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
        super::snapshot::rewrite_table(&meta.path, &table.snapshots)?;
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
    compare_refcounts(meta, &counts, Repair::None, &mut report, &mut rebuild)?;
    if rebuild && repair == Repair::All {
        report.messages.push("Rebuilding refcount structure".into());
        let old = report.clone();
        super::rebuild::rebuild(meta, &counts)?;
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
        compare_refcounts(&fresh_meta, &counts, Repair::Leaks, &mut pass, &mut still)?;
        if still {
            pass.messages
                .push("ERROR rebuilt refcount structure is still broken".into());
        }
        report = CheckReport {
            messages: pass.messages,
            ..walked
        };
        // What was fixed before the rebuild (a refcount block the file
        // was grown over) stays fixed.
        report.corruptions_fixed =
            old.corruptions_fixed + old.corruptions.saturating_sub(report.corruptions);
        report.leaks_fixed += old.leaks.saturating_sub(report.leaks);
        report.leaks += pass.leaks;
        super::copied::check_copied(&fresh_meta, repair, &mut report)?;
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
            compare_refcounts(meta, &counts, repair, &mut report, &mut rebuild)?;
        }
    }
    super::copied::check_copied(meta, repair, &mut report)?;
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

/// Counts every reference to every cluster of the file (tables, data,
/// snapshots, bitmaps, the refcount structure itself), with the
/// allocation statistics and the problems found on the way.
fn count(
    meta: &Meta,
    repair: Repair,
    table: &SnapshotTable,
) -> Result<(Vec<u32>, CheckReport, bool)> {
    let cs = meta.cluster_size();
    let nb_clusters = meta.file_len.div_ceil(cs);
    if nb_clusters > (1 << 32) {
        return Err(Error::unsupported(
            &meta.path,
            "image file is too large to check",
        ));
    }
    let mut c = Counter {
        meta,
        counts: vec![0u32; nb_clusters as usize],
        rebuild: false,
        repair,
        report: CheckReport {
            total_clusters: meta.header.size.div_ceil(cs),
            ..CheckReport::default()
        },
    };
    c.add("header", 0, cs);
    c.add(
        "L1 table",
        meta.header.l1_table_offset,
        u64::from(meta.header.l1_size) * 8,
    );
    c.walk_l1(&meta.l1, true)?;
    if !table.snapshots.is_empty() {
        c.add("snapshot table", meta.header.snapshots_offset, table.size);
    }
    for s in &table.snapshots {
        // A bad entry is a corruption, and its tables go uncounted (so
        // what only it used shows as leaked), in qemu-img's words.
        let bad = meta.snapshot_l1_fault(s).map(|f| match f {
            L1Fault::Misaligned => format!(
                "l1_offset={:#x}: L1 table is not cluster aligned",
                s.l1_table_offset
            ),
            L1Fault::TooLarge => format!("l1_size={:#x}: L1 table is too large", s.l1_size),
        });
        if let Some(what) = bad {
            c.report.corruptions += 1;
            c.report.messages.push(format!(
                "ERROR snapshot {} ({}) {what}; snapshot table entry corrupted",
                s.id, s.name
            ));
            continue;
        }
        c.add(
            "snapshot L1 table",
            s.l1_table_offset,
            u64::from(s.l1_size) * 8,
        );
        match meta.read_table(s.l1_table_offset, u64::from(s.l1_size)) {
            Ok(l1) => c.walk_l1(&l1, false)?,
            Err(e) => {
                c.report.corruptions += 1;
                c.report
                    .messages
                    .push(format!("ERROR snapshot {}: {e}", s.id));
            }
        }
    }
    c.walk_bitmaps();
    if let Some((off, len)) = meta.header.crypto_area() {
        c.add("LUKS header", off, len);
    }
    c.add(
        "refcount table",
        meta.header.refcount_table_offset,
        u64::from(meta.header.refcount_table_clusters) * cs,
    );
    for (i, &rb) in meta.reftable.iter().enumerate() {
        let off = rb & OFFSET_MASK;
        if off != 0 && off / cs >= nb_clusters {
            // qemu-img's words (a repair has grown the file over it, or
            // said why not: `refblocks_past_end`).
            if c.repair != Repair::All {
                c.report.corruptions += 1;
                c.report
                    .messages
                    .push(format!("ERROR refcount block {i} is outside image"));
            }
            continue;
        }
        if off != 0 && c.aligned("refcount block", off) {
            c.add("refcount block", off, cs);
            // Anything else pointing at a refcount block (a data cluster
            // mapped onto it) makes the structure unusable: rebuild.
            if let Some(&n) = c.counts.get((off / cs) as usize) {
                if n != 1 {
                    c.report.corruptions += 1;
                    c.report
                        .messages
                        .push(format!("ERROR refcount block {i} refcount={n}"));
                    c.rebuild = true;
                }
            }
        }
    }

    let Counter {
        counts,
        mut report,
        rebuild,
        ..
    } = c;
    report.image_end_offset = counts
        .iter()
        .rposition(|&n| n > 0)
        .map_or(cs, |i| (i as u64 + 1) * cs);
    Ok((counts, report, rebuild))
}

/// Compares stored refcounts with the counted references. Leaks are fixed
/// with any repair, under-counts with `All`; a cluster in use with no
/// refcount at all (0, or no refcount block) cannot be fixed in place and
/// sets `rebuild`. Fixed problems are counted only as fixed, as qemu-img.
fn compare_refcounts(
    meta: &Meta,
    counts: &[u32],
    repair: Repair,
    report: &mut CheckReport,
    rebuild: &mut bool,
) -> Result<()> {
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
        super::meta::read_exact_at(&meta.file, &meta.path, &mut raw, block_off)?;
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
