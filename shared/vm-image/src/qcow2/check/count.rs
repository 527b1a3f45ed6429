//! The counting half of a check: every reference to every cluster of the
//! file, from the header, the tables, the snapshots, the bitmaps and the
//! refcount structure itself.

use super::{CheckReport, Repair};
use crate::qcow2::header::OFFSET_MASK;
use crate::qcow2::meta::{L1Fault, L2Entry, Meta, SnapshotTable};
use crate::{Error, Result};

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
            crate::qcow2::header::ZERO
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
        let dir = match crate::qcow2::bitmaps::directory(meta) {
            Ok(Some(d)) => d,
            Ok(None) => return,
            Err(e) => {
                corrupt(self, e);
                return;
            }
        };
        self.add("bitmap directory", dir.offset, dir.size);
        let list = match crate::qcow2::bitmaps::list(meta) {
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
            match crate::qcow2::bitmaps::read_table(meta, bm) {
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

/// Counts every reference to every cluster of the file (tables, data,
/// snapshots, bitmaps, the refcount structure itself), with the
/// allocation statistics and the problems found on the way.
pub(super) fn count(
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
        if off % cs != 0 {
            // qemu-img's words; its refcounts are unreadable (compare says
            // so per cluster) and only a new structure mends it.
            c.report.corruptions += 1;
            c.report.messages.push(format!(
                "ERROR refcount block {i} is not cluster aligned; refcount table entry corrupted"
            ));
            c.rebuild = true;
            continue;
        }
        if off != 0 {
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
    // Past the last cluster in use, leaving out those whose refcount block
    // cannot be read (qemu-img's image end only counts what it compared).
    let per_block = meta.refblock_entries();
    let unreadable = |c: usize| {
        usize::try_from(c as u64 / per_block)
            .ok()
            .and_then(|b| meta.reftable.get(b))
            .is_some_and(|e| (e & OFFSET_MASK) % cs != 0)
    };
    report.image_end_offset = (counts.iter().enumerate().rev())
        .find(|&(c, &n)| n > 0 && !unreadable(c))
        .map_or(cs, |(c, _)| (c as u64 + 1) * cs);
    Ok((counts, report, rebuild))
}
