//! Internal qcow2 snapshots: create, apply (revert to) and delete, as
//! `qemu-img snapshot -c/-a/-d` make them.
//!
//! A snapshot is an entry in the snapshot table naming a copy of the L1
//! table; the L2 tables and data clusters it shares with the active image
//! carry one reference more, and the active tables' COPIED flags say which
//! clusters are still the active image's alone (refcount 1, so written in
//! place rather than copied first).
//!
//! Every edit keeps the image consistent at each step a crash could stop
//! it: counts are raised and synced before a table points at a cluster,
//! the header moves to a new snapshot table in one sector write, and counts
//! are lowered only once nothing points at the cluster any more. A crash
//! leaves at most leaked clusters, which `check -r leaks` frees. The caller
//! holds the image's write lock.

use std::path::Path;
use std::sync::Arc;

use super::header::{
    COPIED, INCOMPAT_DATA_FILE, MAX_SNAPSHOTS, MAX_SNAPSHOT_EXTRA as MAX_EXTRA,
    MAX_SNAPSHOT_TABLE_BYTES as MAX_TABLE_BYTES, OFFSET_MASK,
};
use super::meta::{c_str, read_exact_at, L2Entry, Meta, Snapshot};
use super::refcounts::Refcounts;
use crate::host::{Faults, Host};
use crate::{Error, Result};

/// QEMU keeps at most 255 bytes of a snapshot's name.
const MAX_NAME: usize = 255;
/// Extra data we write: VM state size (64-bit), disk size, icount.
const EXTRA_LEN: usize = 24;

/// Takes a snapshot of the image's current state under `name`, dated
/// `date` (seconds and nanoseconds since the epoch); returns its ID.
pub fn create(
    path: &Path,
    name: &str,
    date: (u32, u32),
    faults: Option<&Arc<dyn Faults>>,
) -> Result<String> {
    let meta = open(path, faults)?;
    let snaps = meta.snapshots()?;
    if snaps.len() >= MAX_SNAPSHOTS as usize {
        return Err(too_many(path));
    }
    let table = raw_table(&meta, &snaps)?;
    // QEMU's order: the copy of the L1 table is allocated, written and
    // counted first; a failure raising the counts below leaves it leaked
    // (`check -r leaks` frees it), as qemu-img leaves it.
    let mut rc = Refcounts::new(&meta);
    let l1_copy = if meta.l1.is_empty() {
        0
    } else {
        let at = rc.alloc(&meta, meta.l1.len() as u64 * 8)?;
        rc.flush(&meta)?;
        write_table(&meta, at, &meta.l1)?;
        sync(&meta)?;
        at
    };
    // The flush may have moved the refcount table.
    let meta = if rc.table_location()
        == (
            meta.header.refcount_table_offset,
            meta.header.refcount_table_clusters,
        ) {
        meta
    } else {
        let m = open(path, faults)?;
        rc = Refcounts::new(&m);
        m
    };
    add_tree(&meta, &mut rc, &meta.l1, 1, true)?;
    let id = next_id(&snaps);
    let mut cut = name.len().min(MAX_NAME);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let name = &name[..cut];
    let entries: Vec<&[u8]> = table.iter().map(Vec::as_slice).collect();
    let new = encode_entry(
        l1_copy,
        meta.l1.len() as u32,
        &id,
        name,
        date,
        meta.header.size,
    );
    let mut all = entries;
    all.push(&new);
    let (at, _) = write_snapshot_table(&meta, &mut rc, &all)?;
    rc.flush(&meta)?;
    let mut l1 = meta.l1.clone();
    fix_copied(&meta, &mut rc, meta.header.l1_table_offset, &mut l1)?;
    sync(&meta)?;
    set_snapshot_table(&meta, all.len() as u32, at)?;
    free_old_table(&meta, &mut rc, &snaps, false)?;
    Ok(id)
}

/// Reverts the active image to snapshot `name` (an ID, else a name).
pub fn apply(path: &Path, name: &str, faults: Option<&Arc<dyn Faults>>) -> Result<()> {
    let meta = open(path, faults)?;
    let snaps = meta.snapshots()?;
    let sn = find(&snaps, name)
        .map(|i| &snaps[i])
        .ok_or_else(|| not_found(path, "Failed to load snapshot: No such file or directory"))?;
    let sn_l1 = snapshot_l1(&meta, sn)?;
    let mut rc = Refcounts::new(&meta);
    let size = sn.disk_size.unwrap_or(meta.header.size);
    let len = meta
        .l1
        .len()
        .max(sn_l1.len())
        .max(meta.header.l1_entries_for(size) as usize);
    // No COPIED flag until the counts say so (fix_copied, at the end).
    let mut l1: Vec<u64> = sn_l1.iter().map(|e| e & !COPIED).collect();
    l1.resize(len, 0);
    let moved = len > meta.l1.len();
    let l1_at = if moved {
        rc.alloc(&meta, len as u64 * 8)?
    } else {
        meta.header.l1_table_offset
    };
    // What the snapshot references gains the active image as a user
    // before the active L1 table points at it.
    add_tree(&meta, &mut rc, &sn_l1, 1, false)?;
    rc.flush(&meta)?;
    write_table(&meta, l1_at, &l1)?;
    sync(&meta)?;
    if moved || size != meta.header.size {
        // size, crypt method, l1_size, l1_table_offset: one write.
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&size.to_be_bytes());
        h.extend_from_slice(&meta.header.crypt_method.to_be_bytes());
        h.extend_from_slice(&(len as u32).to_be_bytes());
        h.extend_from_slice(&l1_at.to_be_bytes());
        meta.file
            .write_all_at(&h, 24)
            .map_err(|e| Error::io(path, e))?;
        sync(&meta)?;
    }
    // Only now does the old active state lose its user.
    add_tree(&meta, &mut rc, &meta.l1, -1, false)?;
    if moved {
        free_range(
            &meta,
            &mut rc,
            meta.header.l1_table_offset,
            meta.l1.len() as u64 * 8,
        )?;
    }
    rc.flush(&meta)?;
    fix_copied(&meta, &mut rc, l1_at, &mut l1)?;
    sync(&meta)
}

/// Deletes snapshot `name` (an ID, else a name) and frees what only it used.
pub fn delete(path: &Path, name: &str, faults: Option<&Arc<dyn Faults>>) -> Result<()> {
    let meta = open(path, faults)?;
    let snaps = meta.snapshots()?;
    let index = find(&snaps, name).ok_or_else(|| not_found(path, "snapshot not found"))?;
    let sn = &snaps[index];
    let sn_l1 = snapshot_l1(&meta, sn)?;
    let mut rc = Refcounts::new(&meta);
    let table = raw_table(&meta, &snaps)?;
    let kept: Vec<&[u8]> = table
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != index)
        .map(|(_, e)| e.as_slice())
        .collect();
    let (at, _) = write_snapshot_table(&meta, &mut rc, &kept)?;
    rc.flush(&meta)?;
    set_snapshot_table(&meta, kept.len() as u32, at)?;
    // From here the snapshot is gone: what fails to be freed is leaked.
    let freed = free_old_table(&meta, &mut rc, &snaps, false)
        .and_then(|()| add_tree(&meta, &mut rc, &sn_l1, -1, false))
        .and_then(|()| free_range(&meta, &mut rc, sn.l1_table_offset, sn_l1.len() as u64 * 8))
        .and_then(|()| rc.flush(&meta));
    if let Err(e) = freed {
        return Err(match e {
            Error::Io { source, .. } => Error::FreeFailed(source),
            other => other,
        });
    }
    let mut l1 = meta.l1.clone();
    fix_copied(&meta, &mut rc, meta.header.l1_table_offset, &mut l1)?;
    sync(&meta)
}

/// Writes the snapshot table anew, each entry as QEMU writes it (see
/// `raw_table`): what an upgrade to compat=1.1 does, whose readers want
/// the disk size in every entry.
pub fn rewrite_table(path: &Path, snaps: &[Snapshot]) -> Result<()> {
    let meta = open(path, None)?;
    if snaps.is_empty() {
        return Ok(());
    }
    let mut rc = Refcounts::new(&meta);
    let table = raw_table(&meta, snaps)?;
    let entries: Vec<&[u8]> = table.iter().map(Vec::as_slice).collect();
    let (at, _) = write_snapshot_table(&meta, &mut rc, &entries)?;
    rc.flush(&meta)?;
    set_snapshot_table(&meta, entries.len() as u32, at)?;
    // The old table's clusters go back to the file system, as QEMU
    // discards them when it rewrites a table.
    free_old_table(&meta, &mut rc, snaps, true)
}

/// The snapshot named `name`: by ID first, then by name (as QEMU looks).
pub fn find(snaps: &[Snapshot], name: &str) -> Option<usize> {
    snaps
        .iter()
        .position(|s| s.id == name)
        .or_else(|| snaps.iter().position(|s| s.name == name))
}

fn not_found(_path: &Path, message: &str) -> Error {
    Error::Invalid(message.to_string())
}

/// Opens `path` for an edit, with `faults` injected under it if given.
fn open(path: &Path, faults: Option<&Arc<dyn Faults>>) -> Result<Meta> {
    let meta = match faults {
        None => Meta::open_rw(path)?,
        Some(f) => {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|e| Error::io(path, e))?;
            Meta::open(path, Host::Debug(Box::new(file.into()), Arc::clone(f)))?
        }
    };
    let h = &meta.header;
    if h.incompatible_features & INCOMPAT_DATA_FILE != 0 {
        return Err(Error::unsupported(
            path,
            "snapshots of images with an external data file are not supported",
        ));
    }
    if h.corrupt() {
        return Err(Error::corrupt(
            path,
            "the image is marked corrupt; repair it with check -r all first",
        ));
    }
    if h.dirty() {
        return Err(Error::unsupported(
            path,
            "the image was not closed cleanly (lazy refcounts); repair it with check -r all first",
        ));
    }
    Ok(meta)
}

fn sync(meta: &Meta) -> Result<()> {
    meta.file.sync_all().map_err(|e| Error::io(&meta.path, e))
}

fn write_table(meta: &Meta, at: u64, entries: &[u64]) -> Result<()> {
    let buf: Vec<u8> = entries.iter().flat_map(|e| e.to_be_bytes()).collect();
    meta.file
        .write_all_at(&buf, at)
        .map_err(|e| Error::io(&meta.path, e))
}

/// The snapshot's L1 table, checked as QEMU checks it before use.
fn snapshot_l1(meta: &Meta, sn: &Snapshot) -> Result<Vec<u64>> {
    meta.snapshot_l1(sn)
}

/// Each snapshot's entry as QEMU rewrites it: as it was, except that
/// extra data shorter than ours grows to our 24 bytes (the 64-bit VM state
/// size, the disk size, taken as today's when it was not recorded, and no
/// icount), and unknown extra data beyond them is kept.
fn raw_table(meta: &Meta, snaps: &[Snapshot]) -> Result<Vec<Vec<u8>>> {
    // Parts of an entry, as zeroes where the file ends first (as QEMU
    // reads them); each part is bounded (40 bytes, 1 KiB of extra data, a
    // 16-bit length), whatever the entry claims.
    let read = |len: usize, at: u64| -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let n = (meta.file_len.saturating_sub(at)).min(len as u64) as usize;
        read_exact_at(&meta.file, &meta.path, &mut buf[..n], at)?;
        Ok(buf)
    };
    let mut at = meta.header.snapshots_offset;
    let mut out = Vec::with_capacity(snaps.len());
    for s in snaps {
        let fixed = read(40, at)?;
        // Lengths from the entry itself: the parsed ID and name went
        // through a lossy UTF-8 decode and may be longer than the bytes.
        let extra_len = u64::from(u32::from_be_bytes(fixed[36..40].try_into().expect("4")));
        let id_len = usize::from(u16::from_be_bytes([fixed[12], fixed[13]]));
        let name_len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
        // Extra data past QEMU's 1 KiB is dropped (check -r all).
        let extra = read(extra_len.min(MAX_EXTRA) as usize, at + 40)?;
        let names = read(id_len + name_len, at + 40 + extra_len)?;
        at += s.entry_len;
        let id = c_str(&names[..id_len]);
        let name = c_str(&names[id_len..]);
        let mut e = fixed;
        e[12..14].copy_from_slice(&(id.len() as u16).to_be_bytes());
        e[14..16].copy_from_slice(&(name.len() as u16).to_be_bytes());
        e[36..40].copy_from_slice(&(extra.len().max(EXTRA_LEN) as u32).to_be_bytes());
        e.extend_from_slice(&s.vm_state_size.to_be_bytes());
        e.extend_from_slice(&s.disk_size.unwrap_or(meta.header.size).to_be_bytes());
        let icount = extra
            .get(16..24)
            .map_or(u64::MAX, |b| u64::from_be_bytes(b.try_into().expect("8")));
        e.extend_from_slice(&icount.to_be_bytes());
        if extra.len() > EXTRA_LEN {
            e.extend_from_slice(&extra[EXTRA_LEN..]);
        }
        e.extend_from_slice(id);
        e.extend_from_slice(name);
        e.resize(e.len().div_ceil(8) * 8, 0);
        out.push(e);
    }
    Ok(out)
}

/// One new table entry: a disk-only snapshot (no VM state).
fn encode_entry(
    l1_offset: u64,
    l1_size: u32,
    id: &str,
    name: &str,
    (sec, nsec): (u32, u32),
    disk_size: u64,
) -> Vec<u8> {
    let mut e = Vec::with_capacity(40 + EXTRA_LEN + id.len() + name.len() + 7);
    e.extend_from_slice(&l1_offset.to_be_bytes());
    e.extend_from_slice(&l1_size.to_be_bytes());
    e.extend_from_slice(&(id.len() as u16).to_be_bytes());
    e.extend_from_slice(&(name.len() as u16).to_be_bytes());
    e.extend_from_slice(&sec.to_be_bytes());
    e.extend_from_slice(&nsec.to_be_bytes());
    e.extend_from_slice(&0u64.to_be_bytes()); // VM clock
    e.extend_from_slice(&0u32.to_be_bytes()); // VM state size (32-bit)
    e.extend_from_slice(&(EXTRA_LEN as u32).to_be_bytes());
    e.extend_from_slice(&0u64.to_be_bytes()); // VM state size (64-bit)
    e.extend_from_slice(&disk_size.to_be_bytes());
    e.extend_from_slice(&0u64.to_be_bytes()); // icount, 0 as qemu-img writes
    e.extend_from_slice(id.as_bytes());
    e.extend_from_slice(name.as_bytes());
    e.resize(e.len().div_ceil(8) * 8, 0);
    e
}

/// One more than the largest numeric ID (QEMU's rule).
fn next_id(snaps: &[Snapshot]) -> String {
    let max = snaps
        .iter()
        .map(|s| {
            let digits: String = s.id.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u64>().unwrap_or(0)
        })
        .max()
        .unwrap_or(0);
    (max + 1).to_string()
}

/// Writes a new snapshot table into freshly allocated clusters; returns
/// its offset (0 for no snapshots) and length. Counts are not yet flushed.
fn write_snapshot_table(meta: &Meta, rc: &mut Refcounts, entries: &[&[u8]]) -> Result<(u64, u64)> {
    let bytes: Vec<u8> = entries.concat();
    let len = bytes.len() as u64;
    if len > MAX_TABLE_BYTES {
        return Err(Error::unsupported(
            &meta.path,
            "the snapshot table is too large",
        ));
    }
    if entries.is_empty() {
        return Ok((0, 0));
    }
    let at = rc.alloc(meta, len)?;
    meta.file
        .write_all_at(&bytes, at)
        .map_err(|e| Error::io(&meta.path, e))?;
    Ok((at, len))
}

/// Points the header at a new snapshot table (one write inside one sector) and syncs.
fn set_snapshot_table(meta: &Meta, count: u32, at: u64) -> Result<()> {
    let mut h = [0u8; 12];
    h[..4].copy_from_slice(&count.to_be_bytes());
    h[4..].copy_from_slice(&at.to_be_bytes());
    meta.file
        .write_all_at(&h, 60)
        .map_err(|e| Error::io(&meta.path, e))?;
    sync(meta)
}

/// Frees the table the header pointed at before, once it no longer does;
/// with `punch`, the clusters that count nothing now are punched out.
fn free_old_table(meta: &Meta, rc: &mut Refcounts, snaps: &[Snapshot], punch: bool) -> Result<()> {
    let (at, len) = (
        meta.header.snapshots_offset,
        snaps.iter().map(|s| s.entry_len).sum::<u64>(),
    );
    free_range(meta, rc, at, len)?;
    rc.flush(meta)?;
    if punch && len > 0 && at != 0 {
        let cs = meta.cluster_size();
        for c in at / cs..(at + len).div_ceil(cs) {
            if rc.get(meta, c * cs)? == 0 {
                meta.file.punch(c * cs, cs);
            }
        }
    }
    Ok(())
}

fn free_range(meta: &Meta, rc: &mut Refcounts, at: u64, len: u64) -> Result<()> {
    if len == 0 || at == 0 {
        return Ok(());
    }
    // QEMU's qcow2_free_clusters, which blkdebug's rules can hook.
    meta.file.event("cluster_free");
    let cs = meta.cluster_size();
    for c in at / cs..(at + len).div_ceil(cs) {
        rc.add(meta, c * cs, -1)?;
    }
    Ok(())
}

/// The L2 table an L1 entry names, checked to be a whole cluster in the file.
fn l2_at(meta: &Meta, entry: u64) -> Result<Option<u64>> {
    let at = entry & OFFSET_MASK;
    if at == 0 {
        return Ok(None);
    }
    if !meta.cluster_in_file(at) {
        return Err(Error::corrupt(
            &meta.path,
            format!("L2 table offset 0x{at:x} is unaligned or past the end of the image"),
        ));
    }
    Ok(Some(at))
}

/// QEMU's refusal of a snapshot past its limit on their number.
pub fn too_many(path: &Path) -> Error {
    Error::errno(path, libc::EFBIG, "too many snapshots")
}

/// Adds `delta` to the count of every L2 table `l1` names and of every host
/// cluster those tables' entries use (once per entry, as QEMU counts).
///
/// `counted` (a snapshot's creation) refuses a cluster that no refcount
/// block counts (in a sound image every cluster in use has one), as QEMU
/// fails on it: its count adds the block and gives up (EAGAIN), or finds
/// the refcount table would have to grow past its limit (EFBIG).
fn add_tree(meta: &Meta, rc: &mut Refcounts, l1: &[u64], delta: i64, counted: bool) -> Result<()> {
    let cs = meta.cluster_size();
    let step = (meta.header.l2_entry_size() / 8) as usize;
    let add = |rc: &mut Refcounts, at: u64| -> Result<()> {
        if counted && !rc.has_block(at) {
            let blocks = at / cs / meta.refblock_entries() + 1;
            let errno = if blocks.saturating_mul(8) > super::header::MAX_REFTABLE_BYTES {
                libc::EFBIG
            } else {
                libc::EAGAIN
            };
            return Err(Error::errno(
                &meta.path,
                errno,
                format!("cluster 0x{at:x} has no refcount block"),
            ));
        }
        rc.add(meta, at, delta)
    };
    for &e in l1 {
        let Some(l2) = l2_at(meta, e)? else { continue };
        add(rc, l2)?;
        for &raw in meta.read_table(l2, cs / 8)?.iter().step_by(step) {
            match meta.decode_l2(raw) {
                L2Entry::Data { host, .. } | L2Entry::Zero { host: Some(host) } => {
                    if host % cs != 0 {
                        return Err(Error::corrupt(
                            &meta.path,
                            format!("cluster offset 0x{host:x} is not aligned"),
                        ));
                    }
                    add(rc, host)?;
                }
                L2Entry::Compressed { host, len } => {
                    for c in host / cs..=(host + len.max(1) - 1) / cs {
                        add(rc, c * cs)?;
                    }
                }
                L2Entry::Zero { host: None } | L2Entry::Unallocated => {}
            }
        }
    }
    Ok(())
}

/// Sets each COPIED flag of the active tables (`l1`, stored at `l1_at`)
/// to whether the cluster's count is 1, writing what changed.
fn fix_copied(meta: &Meta, rc: &mut Refcounts, l1_at: u64, l1: &mut [u64]) -> Result<()> {
    let cs = meta.cluster_size();
    let step = (meta.header.l2_entry_size() / 8) as usize;
    let io = |e| Error::io(&meta.path, e);
    let mut l1_changed = false;
    for e in l1.iter_mut() {
        let Some(l2) = l2_at(meta, *e)? else { continue };
        let mut table = meta.read_table(l2, cs / 8)?;
        let mut changed = false;
        for raw in table.iter_mut().step_by(step) {
            let mut new = *raw & !COPIED;
            if let L2Entry::Data { host, .. } | L2Entry::Zero { host: Some(host) } =
                meta.decode_l2(new)
            {
                if rc.get(meta, host)? == 1 {
                    new |= COPIED;
                }
            }
            if new != *raw {
                *raw = new;
                changed = true;
            }
        }
        if changed {
            write_table(meta, l2, &table)?;
        }
        let want = l2 | if rc.get(meta, l2)? == 1 { COPIED } else { 0 };
        if want != *e {
            *e = want;
            l1_changed = true;
        }
    }
    if l1_changed {
        write_table(meta, l1_at, l1)?;
    }
    meta.file.sync_all().map_err(io)
}
