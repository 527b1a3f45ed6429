//! How a new image is laid out when its stream ends: the refcounts, the
//! L1 table and the header placed and written (`finish`), qemu-img's own
//! layout for an image with nothing in it (`finish_empty`) and for a
//! preallocated one (`finish_preallocated`, `preallocate_metadata`).

use std::io;

use super::Qcow2Writer;
use crate::host::Host;
use crate::qcow2::header::COPIED;
use crate::qcow2::meta::encode_refcount;

impl Qcow2Writer {
    /// Allocates host clusters for every guest cluster without writing them
    /// (preallocation=metadata; the file stays sparse).
    pub fn preallocate_metadata(&mut self) -> io::Result<()> {
        let cs = self.cs();
        let n = self.header.size.div_ceil(cs);
        let per_l2 = self.header.l2_entries();
        let mut g = 0;
        while g < n {
            let run = (per_l2 - g % per_l2).min(n - g);
            for k in g..g + run {
                self.check_order(k)?;
            }
            self.l2_slot(g)?;
            // With a data file, a guest cluster lives at its own offset there.
            let host = if self.header.data_file.is_some() {
                g * cs
            } else {
                self.alloc_clusters(run)
            };
            // Extended entries keep an empty bitmap, as QEMU's preallocation
            // leaves them: the cluster is mapped, no subcluster allocated.
            for k in 0..run {
                self.set_entry(g + k, (host + k * cs) | COPIED, 0)?;
            }
            g += run;
        }
        Ok(())
    }

    /// The fixed part of qemu-img's layout: the refcount table (one
    /// cluster, at cluster `reftable_at`) naming one refcount block (cluster
    /// 2) that counts clusters `0..used` once, then the header naming them
    /// and the L1 table at `l1_at`.
    fn write_head(&mut self, reftable_at: u64, used: u64, l1_at: u64) -> io::Result<()> {
        let cs = self.cs();
        let mut table = vec![0u8; cs as usize];
        table[..8].copy_from_slice(&(2 * cs).to_be_bytes());
        self.file.write_all_at(&table, reftable_at * cs)?;
        let mut block = vec![0u8; cs as usize];
        for c in 0..used {
            encode_refcount(&mut block, self.header.refcount_order, c as usize, 1);
        }
        self.file.write_all_at(&block, 2 * cs)?;
        self.header.refcount_table_offset = reftable_at * cs;
        self.header.refcount_table_clusters = 1;
        self.header.l1_table_offset = l1_at;
        let mut h = self.header.serialize()?;
        h.resize(cs as usize, 0);
        self.file.write_all_at(&h, 0)
    }

    /// Lays out a new image with preallocated metadata as `qemu-img create
    /// -o preallocation=...` does: the header, the refcount table, one
    /// refcount block, the L1 table, then each L2 table followed by the
    /// clusters it maps (none with an external data file, where a guest
    /// cluster sits at its own offset); the file ends after the last, its
    /// unwritten clusters holes. Hands the writer back where this does not
    /// apply (something was written, or one refcount block cannot count
    /// every cluster); then `preallocate_metadata` and `finish` lay it out
    /// their own way. With `whole` (falloc and full), QEMU first moves the
    /// refcount table past the L1 table to cover the whole file, and the
    /// first L2 table takes the table's old cluster: so here too (for one
    /// L2 table; QEMU places more after all the data).
    pub fn finish_preallocated(mut self, whole: bool) -> io::Result<Result<Host, Self>> {
        self.refuse_encrypted()?;
        let cs = self.cs();
        let per_block = cs * 8 / u64::from(self.header.refcount_bits());
        let l1_entries = self.l1.len() as u64;
        let l1_clusters = (l1_entries * 8).div_ceil(cs);
        let n = self.header.size.div_ceil(cs);
        let per_l2 = self.header.l2_entries();
        let tables = n.div_ceil(per_l2);
        let data_file = self.header.data_file.is_some();
        let total = 3 + l1_clusters + tables + if data_file { 0 } else { n };
        if self.next != (1 + l1_clusters) * cs
            || self.l2.is_some()
            || self.l1.iter().any(|&e| e != 0)
            || self.header.extended_l2()
            || l1_entries == 0
            || total > per_block
            // QEMU puts later tables of falloc/full after all the data.
            || (whole && tables > 1)
        {
            return Ok(Err(self));
        }
        let reftable_at = if whole { 3 + l1_clusters } else { 1 };
        let mut at = if whole {
            4 + l1_clusters
        } else {
            3 + l1_clusters
        };
        let mut l1 = vec![0u8; (l1_clusters * cs) as usize];
        let mut l2 = vec![0u8; cs as usize];
        for t in 0..tables {
            let table_at = if whole && t == 0 { 1 } else { at };
            if table_at == at {
                at += 1;
            }
            let first = t * per_l2;
            let count = per_l2.min(n - first);
            l2.fill(0);
            for k in 0..count {
                let host = if data_file {
                    (first + k) * cs
                } else {
                    (at + k) * cs
                };
                let e = host | COPIED;
                l2[(k * 8) as usize..(k * 8 + 8) as usize].copy_from_slice(&e.to_be_bytes());
            }
            if !data_file {
                at += count;
            }
            self.file.write_all_at(&l2, table_at * cs)?;
            let e = (table_at * cs) | COPIED;
            l1[(t * 8) as usize..(t * 8 + 8) as usize].copy_from_slice(&e.to_be_bytes());
        }
        self.file.write_all_at(&l1, 3 * cs)?;
        self.write_head(reftable_at, total, 3 * cs)?;
        if !self.file.keeps_size()? {
            self.file.set_len(total * cs)?;
        }
        Ok(Ok(self.file))
    }

    /// Lays out an image nothing was written to as `qemu-img create`
    /// does: the header, the refcount table (cluster 1), one refcount block
    /// (cluster 2), then the L1 table (cluster 3), the file ending where
    /// the table does. The same command then makes the same bytes, which
    /// scripts and QEMU's iotests that poke fixed offsets rely on. Hands
    /// the writer back when the layout does not apply (data was written,
    /// or the L1 table outgrows one refcount block, as with tiny clusters
    /// and huge disks); `finish` lays that out its own way.
    pub fn finish_empty(mut self) -> io::Result<Result<Host, Self>> {
        let cs = self.cs();
        let per_block = cs * 8 / u64::from(self.header.refcount_bits());
        let l1_bytes = self.l1.len() as u64 * 8;
        let luks_at = 3 + l1_bytes.div_ceil(cs);
        let luks_clusters = self
            .luks
            .as_ref()
            .map_or(0, |a| (a.len() as u64).div_ceil(cs));
        let used = luks_at + luks_clusters;
        if self.next != (1 + l1_bytes.div_ceil(cs)) * cs
            || self.l2.is_some()
            || self.l1.iter().any(|&e| e != 0)
            || used > per_block
        {
            self.refuse_encrypted()?;
            return Ok(Err(self));
        }
        let keeps_size = self.file.keeps_size()?;
        if let Some(area) = self.luks.take() {
            let mut clusters = area;
            let len = clusters.len() as u64;
            clusters.resize((luks_clusters * cs) as usize, 0);
            self.file.write_all_at(&clusters, luks_at * cs)?;
            let mut ext = (luks_at * cs).to_be_bytes().to_vec();
            ext.extend_from_slice(&len.to_be_bytes());
            self.header
                .other_extensions
                .push(crate::qcow2::header::Extension {
                    kind: crate::qcow2::header::EXT_CRYPTO,
                    data: ext,
                });
            if l1_bytes > 0 {
                self.file
                    .write_all_at(&vec![0u8; l1_bytes as usize], 3 * cs)?;
            }
        } else if !keeps_size {
            // The L1 table is all zeroes: the file's end makes it.
            self.file.set_len(3 * cs + l1_bytes)?;
        } else if l1_bytes > 0 {
            self.file
                .write_all_at(&vec![0u8; l1_bytes as usize], 3 * cs)?;
        }
        self.write_head(1, used, if l1_bytes == 0 { 0 } else { 3 * cs })?;
        Ok(Ok(self.file))
    }

    /// Writes the remaining L2 table, refcounts, L1 and header. The caller
    /// fsyncs (or not, for `-t unsafe`).
    pub fn finish(mut self) -> io::Result<Host> {
        self.refuse_encrypted()?;
        self.flush_l2()?;
        self.align_next();
        let cs = self.cs();
        let used = self.next / cs;
        let per_block = cs * 8 / u64::from(self.header.refcount_bits());
        // The refcount structures must count themselves too.
        let (mut rb, mut rt) = (0u64, 0u64);
        loop {
            let total = used + rb + rt;
            let nrb = total.div_ceil(per_block);
            let nrt = (nrb * 8).div_ceil(cs).max(1);
            if (nrb, nrt) == (rb, rt) {
                break;
            }
            (rb, rt) = (nrb, nrt);
        }
        let rb_start = self.next;
        let rt_start = rb_start + rb * cs;
        self.refcounts.resize((used + rb + rt) as usize, 0);
        for c in used..used + rb + rt {
            self.refcounts[c as usize] = 1;
        }
        let max = if self.header.refcount_order == 6 {
            u64::MAX
        } else {
            (1u64 << self.header.refcount_bits()) - 1
        };
        let mut table = vec![0u8; (rt * cs) as usize];
        for b in 0..rb {
            let mut block = vec![0u8; cs as usize];
            let first = b * per_block;
            for i in 0..per_block {
                let c = (first + i) as usize;
                match self.refcounts.get(c) {
                    Some(&v) => encode_refcount(
                        &mut block,
                        self.header.refcount_order,
                        i as usize,
                        v.min(max),
                    ),
                    None => break,
                }
            }
            let off = rb_start + b * cs;
            self.file.write_all_at(&block, off)?;
            table[(b * 8) as usize..(b * 8 + 8) as usize].copy_from_slice(&off.to_be_bytes());
        }
        self.file.write_all_at(&table, rt_start)?;
        let l1: Vec<u8> = self.l1.iter().flat_map(|e| e.to_be_bytes()).collect();
        if !l1.is_empty() {
            self.file.write_all_at(&l1, self.header.l1_table_offset)?;
        }
        self.header.refcount_table_offset = rt_start;
        self.header.refcount_table_clusters = rt as u32;
        let mut h = self.header.serialize()?;
        h.resize(cs as usize, 0);
        self.file.write_all_at(&h, 0)?;
        // A block device keeps its size (the image ends where its metadata
        // says); a file ends at the last cluster.
        if !self.file.keeps_size()? {
            self.file.set_len(rt_start + rt * cs)?;
        }
        Ok(self.file)
    }
}
