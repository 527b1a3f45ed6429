//! convert's copy loops: into a raw file, into a new qcow2 image (plain,
//! over a backing file, compressed on every core), and into an existing
//! image.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{mpsc, Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use vm_image::qcow2::compress::compress_cluster;
use vm_image::qcow2::writer::Qcow2Writer;
use vm_image::{Block, Format, Image};

use super::{Writeback, CHUNK};
use crate::progress::Progress;
use crate::sources::Sources;
use crate::util::{self, is_zero};

/// Writes the source into the existing image `output` through its own
/// format: `-n` (zero ranges written as zeroes: it may hold old data
/// there), and the preallocated image made for `-o preallocation`
/// (`skip_zeroes`: it reads as zeroes already, so only data is written).
pub(super) fn into_existing(
    src: &Sources,
    output: &std::path::Path,
    fmt: Format,
    size: u64,
    bar: &mut Progress,
    syncs: bool,
    skip_zeroes: bool,
) -> Result<()> {
    let opts = vm_image::OpenOptions {
        format: Some(fmt),
        write: true,
        ..vm_image::OpenOptions::default()
    };
    let dst = Image::open(output, &opts).map_err(|e| crate::util::could_not_open(output, e))?;
    into_image(src, dst, size, bar, syncs, skip_zeroes)
}

/// As `into_existing`, into an image already open for writing (a local
/// one, or one inside an NBD export).
pub(super) fn into_image(
    src: &Sources,
    mut dst: Image,
    size: u64,
    bar: &mut Progress,
    syncs: bool,
    skip_zeroes: bool,
) -> Result<()> {
    let output = dst.path().to_path_buf();
    if dst.size() < size {
        bail!("output file is smaller than input file");
    }
    // qcow2 v2 has no zero clusters: without a backing file a cluster left
    // unallocated reads as zero; over one, zeroes are written as data.
    let v2_cluster = dst
        .header()
        .filter(|h| h.version < 3)
        .map(vm_image::qcow2::header::Header::cluster_size);
    let backed = dst.layers().len() > 1;
    let what = || format!("Could not write '{}'", output.display());
    let mut buf = vec![0u8; CHUNK as usize];
    let mut pos = 0;
    while pos < size {
        let len = (size - pos).min(CHUNK);
        let b = &mut buf[..len as usize];
        if read_chunk(src, pos, b)? {
            if skip_zeroes {
                // Only the data, in qemu-img's 4 KiB blocks: the rest of
                // the new image reads as zeroes already.
                for (lo, hi) in data_runs(b, 4096) {
                    dst.write_at(&b[lo..hi], pos + lo as u64)
                        .with_context(what)?;
                }
            } else {
                dst.write_at(b, pos).with_context(what)?;
            }
        } else if !skip_zeroes {
            match v2_cluster {
                None => dst.write_zeroes(pos, len),
                Some(cs) if !backed => {
                    let (lo, hi) = (pos.div_ceil(cs) * cs, (pos + len) / cs * cs);
                    b.fill(0);
                    if lo < hi {
                        dst.write_at(&b[..(lo - pos) as usize], pos)
                            .and_then(|()| dst.discard_to_backing(lo, hi - lo))
                            .and_then(|()| dst.write_at(&b[..(pos + len - hi) as usize], hi))
                    } else {
                        dst.write_at(b, pos)
                    }
                }
                Some(_) => {
                    b.fill(0);
                    dst.write_at(b, pos)
                }
            }
            .with_context(what)?;
        }
        pos += len;
        bar.set_position(pos);
    }
    if syncs { dst.sync() } else { dst.flush() }.with_context(what)?;
    Ok(())
}

/// `-B`: the output's backing file holds what the source's own backing
/// chain holds, so only clusters the source's top layer decides are
/// written (zeroes there as zero clusters, hiding the backing file).
pub(super) fn over_backing(
    src: &Sources,
    mut w: Qcow2Writer,
    size: u64,
    backing_end: u64,
    full: bool,
    bar: &mut Progress,
    wb: &mut Writeback,
) -> Result<Qcow2Writer> {
    let cs = w.cluster_size();
    let chunk = CHUNK.max(cs);
    let mut buf = vec![0u8; chunk as usize];
    let mut pos = 0;
    while pos < size {
        let len = (size - pos).min(chunk);
        for (k, top) in top_clusters(src, pos, len, cs)?.into_iter().enumerate() {
            if !top {
                continue;
            }
            let k = k as u64;
            let (lo, hi) = (pos + k * cs, (pos + (k + 1) * cs).min(size));
            let b = &mut buf[..(hi - lo) as usize];
            src.read_at(b, lo)
                .with_context(|| format!("Error while reading offset {lo}"))?;
            // Past the output's backing file the output reads zeroes anyway;
            // before it, a zero cluster hides the backing file's data (-S 0,
            // or compat=0.10 without zero clusters: zeroes as data).
            if is_zero(b) && (lo >= backing_end || (!full && w.write_zero(lo / cs).is_ok())) {
                continue;
            }
            let mut whole = b.to_vec();
            whole.resize(cs as usize, 0);
            w.write_clusters(lo / cs, &whole)?;
        }
        pos += len;
        bar.set_position(pos);
        wb.progress(pos);
    }
    Ok(w)
}

/// Reads `[pos, pos + buf.len())` into `buf`, touching only ranges that
/// hold data; returns false when the whole range reads as zero.
pub(super) fn read_chunk(src: &Sources, pos: u64, buf: &mut [u8]) -> Result<bool> {
    let extents = src.map(pos, buf.len() as u64)?;
    if extents.iter().all(|e| !e.data) {
        return Ok(false);
    }
    buf.fill(0);
    for e in extents.iter().filter(|e| e.data) {
        let lo = (e.start - pos) as usize;
        let hi = lo + e.length as usize;
        src.read_at(&mut buf[lo..hi], e.start)
            .with_context(|| format!("Error while reading offset {}", e.start))?;
    }
    Ok(true)
}

/// The byte ranges of `buf` made of consecutive non-zero blocks of `block`
/// bytes (the last block may be short).
fn data_runs(buf: &[u8], block: usize) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, b) in buf.chunks(block).enumerate() {
        if is_zero(b) {
            continue;
        }
        let (lo, hi) = (i * block, i * block + b.len());
        match runs.last_mut() {
            Some(last) if last.1 == lo => last.1 = hi,
            _ => runs.push((lo, hi)),
        }
    }
    runs
}

/// Calls `each(pos, len, data)` for every `chunk`-sized step of the
/// source in order, `data` the step's bytes (in a buffer of `chunk`
/// bytes) or `None` where it reads as zero. The source is read one step
/// ahead on a thread of its own, so reading (an NBD server, another disk)
/// and writing overlap, as qemu-img overlaps them with its coroutines.
fn read_ahead(
    src: &Sources,
    size: u64,
    chunk: u64,
    mut each: impl FnMut(u64, usize, Option<&mut [u8]>) -> Result<()>,
) -> Result<()> {
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<Result<(u64, usize, Option<Vec<u8>>)>>(4);
        let (spare_tx, spare_rx) = mpsc::channel::<Vec<u8>>();
        scope.spawn(move || {
            let mut pos = 0;
            while pos < size {
                let len = (size - pos).min(chunk) as usize;
                let mut buf = spare_rx
                    .try_recv()
                    .unwrap_or_else(|_| vec![0u8; chunk as usize]);
                let msg = match read_chunk(src, pos, &mut buf[..len]) {
                    Ok(true) => Ok((pos, len, Some(buf))),
                    Ok(false) => Ok((pos, len, None)),
                    Err(e) => Err(e),
                };
                let failed = msg.is_err();
                // The writer stopped (an error of its own): so does this.
                if tx.send(msg).is_err() || failed {
                    return;
                }
                pos += len as u64;
            }
        });
        for msg in rx {
            let (pos, len, data) = msg?;
            match data {
                Some(mut buf) => {
                    each(pos, len, Some(&mut buf))?;
                    let _ = spare_tx.send(buf);
                }
                None => each(pos, len, None)?,
            }
        }
        Ok(())
    })
}

pub(super) fn to_raw(
    src: &Sources,
    out: &File,
    size: u64,
    sparse: Option<usize>,
    bar: &mut Progress,
    wb: &mut Writeback,
) -> Result<()> {
    util::set_output_len(out, size)?;
    // A new file gets its first block written, as QEMU's file layer does
    // when it makes one (data copied there later overwrites it).
    crate::prealloc::first_block(out, size)?;
    // A device has no holes: its zero ranges are written as zeroes.
    let device = util::is_block_device(out);
    let mut zeroes = Vec::new();
    read_ahead(src, size, CHUNK, |pos, len, data| {
        match (data, sparse) {
            // -S 0: every byte written, zeroes too.
            (data, None) => {
                let b = if let Some(b) = data {
                    &b[..len]
                } else {
                    zeroes.resize(len, 0);
                    &zeroes[..]
                };
                out.write_all_at(b, pos)?;
            }
            (Some(b), Some(block)) => {
                // Zero blocks stay holes.
                let b = &b[..len];
                let mut done = 0;
                for (lo, hi) in data_runs(b, block) {
                    if device && lo > done {
                        util::zero_device_range(out, pos + done as u64, (lo - done) as u64)?;
                    }
                    out.write_all_at(&b[lo..hi], pos + lo as u64)?;
                    done = hi;
                }
                if device && done < len {
                    util::zero_device_range(out, pos + done as u64, (len - done) as u64)?;
                }
            }
            (None, Some(_)) if device => util::zero_device_range(out, pos, len as u64)?,
            (None, Some(_)) => {}
        }
        let end = pos + len as u64;
        bar.set_position(end);
        wb.progress(end);
        Ok(())
    })
}

pub(super) fn to_qcow2(
    src: &Sources,
    mut w: Qcow2Writer,
    size: u64,
    sparse: Option<usize>,
    bar: &mut Progress,
    wb: &mut Writeback,
) -> Result<Qcow2Writer> {
    let cs = w.cluster_size();
    // -S N: a zero run is left out only as whole blocks of N bytes (at
    // least a cluster), aligned, as qemu-img judges them.
    let block = sparse.map(|n| (n as u64).div_ceil(cs) * cs);
    let chunk = CHUNK.max(cs).div_ceil(block.unwrap_or(cs)) * block.unwrap_or(cs);
    let mut zeroes = Vec::new();
    read_ahead(src, size, chunk, |pos, len, data| {
        let padded = (len as u64).div_ceil(cs) * cs;
        match data {
            Some(b) => {
                let b = &mut b[..padded as usize];
                b[len..].fill(0);
                // Zero blocks stay unallocated (-S 0: written as data).
                if let Some(block) = block {
                    for (lo, hi) in data_runs(b, block as usize) {
                        w.write_clusters((pos + lo as u64) / cs, &b[lo..hi])?;
                    }
                } else {
                    w.write_clusters(pos / cs, b)?;
                }
            }
            None if block.is_none() => {
                zeroes.resize(padded as usize, 0);
                w.write_clusters(pos / cs, &zeroes)?;
            }
            None => {}
        }
        let end = pos + len as u64;
        bar.set_position(end);
        wb.progress(end);
        Ok(())
    })?;
    Ok(w)
}

/// A chunk of clusters on its way through the compressing workers.
struct Chunk {
    index: u64,
    first_cluster: u64,
    data: Vec<u8>,
    /// With -B: which clusters the source's top layer decides (the rest
    /// the output's backing file holds, and they are left alone).
    top: Option<Vec<bool>>,
    out: Vec<Slot>,
}

/// What becomes of one cluster of a chunk.
enum Slot {
    /// Left to the backing file (-B).
    Skip,
    /// All zero: left unallocated, or a zero cluster over a backing file.
    Zero,
    /// Does not compress: stored as it is.
    Plain,
    Compressed(Vec<u8>),
}

/// Which clusters of `[pos, pos + len)` the source's top layer decides.
fn top_clusters(src: &Sources, pos: u64, len: u64, cs: u64) -> Result<Vec<bool>> {
    let extents = src.map(pos, len)?;
    Ok((0..len.div_ceil(cs))
        .map(|k| {
            let (lo, hi) = (pos + k * cs, pos + (k + 1) * cs);
            extents
                .iter()
                .any(|e| e.depth == 0 && e.start < hi && e.start + e.length > lo)
        })
        .collect())
}

/// `-c`, on every core; with `backed` (-B), only what the source's top
/// layer decides is written, as `over_backing` does.
pub(super) fn to_qcow2_compressed(
    src: &Sources,
    mut w: Qcow2Writer,
    size: u64,
    backed: Option<u64>,
    full: bool,
    bar: &mut Progress,
    wb: &mut Writeback,
) -> Result<Qcow2Writer> {
    let cs = w.cluster_size();
    let kind = w.compression_type();
    let chunk = CHUNK.max(cs);
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let (job_tx, job_rx) = mpsc::sync_channel::<Chunk>(workers * 2);
    let (done_tx, done_rx) = mpsc::sync_channel::<Chunk>(workers * 2);
    let job_rx = Arc::new(Mutex::new(job_rx));
    std::thread::scope(|s| -> Result<Qcow2Writer> {
        for _ in 0..workers {
            let rx = Arc::clone(&job_rx);
            let tx = done_tx.clone();
            s.spawn(move || loop {
                let job = rx.lock().map(|r| r.recv());
                let Ok(Ok(mut c)) = job else { break };
                c.out = c
                    .data
                    .chunks(cs as usize)
                    .enumerate()
                    .map(|(i, cl)| {
                        if c.top.as_ref().is_some_and(|t| !t[i]) {
                            Slot::Skip
                        } else if is_zero(cl) {
                            Slot::Zero
                        } else {
                            compress_cluster(cl, kind).map_or(Slot::Plain, Slot::Compressed)
                        }
                    })
                    .collect();
                if tx.send(c).is_err() {
                    break;
                }
            });
        }
        drop(done_tx);
        // The writer runs here, on this thread's scope; reading runs on its own thread.
        let reader = s.spawn(move || -> Result<()> {
            let mut pos = 0;
            let mut index = 0;
            while pos < size {
                let len = (size - pos).min(chunk) as usize;
                let padded = (len as u64).div_ceil(cs) * cs;
                let mut data = vec![0u8; padded as usize];
                let top = backed
                    .is_some()
                    .then(|| top_clusters(src, pos, len as u64, cs))
                    .transpose()?;
                let holds = read_chunk(src, pos, &mut data[..len])?;
                if holds || full || top.as_ref().is_some_and(|t| t.contains(&true)) {
                    let c = Chunk {
                        index,
                        first_cluster: pos / cs,
                        data,
                        top,
                        out: Vec::new(),
                    };
                    if job_tx.send(c).is_err() {
                        break;
                    }
                    index += 1;
                }
                pos += len as u64;
            }
            Ok(())
        });
        let mut pending = BTreeMap::new();
        let mut next = 0u64;
        let zero_cluster = full
            .then(|| compress_cluster(&vec![0u8; cs as usize], kind))
            .flatten();
        for c in done_rx {
            pending.insert(c.index, c);
            while let Some(c) = pending.remove(&next) {
                for (i, slot) in c.out.iter().enumerate() {
                    let guest = c.first_cluster + i as u64;
                    match slot {
                        Slot::Skip => {}
                        // Past the output's backing file, where the output
                        // reads zeroes anyway.
                        Slot::Zero if backed.is_some_and(|end| guest * cs >= end) => {}
                        // -S 0: every cluster allocated, zeroes compressed.
                        Slot::Zero if full => match &zero_cluster {
                            Some(z) => w.write_compressed(guest, z)?,
                            None => w.write_clusters(guest, &vec![0u8; cs as usize])?,
                        },
                        // Nothing to hide.
                        Slot::Zero if backed.is_none() => {}
                        // Hides the backing file's data (compat=0.10 has no
                        // zero clusters: a cluster of zeroes then).
                        Slot::Zero => {
                            if w.write_zero(guest).is_err() {
                                w.write_clusters(guest, &vec![0u8; cs as usize])?;
                            }
                        }
                        Slot::Compressed(z) => w.write_compressed(guest, z)?,
                        Slot::Plain => {
                            let lo = i * cs as usize;
                            w.write_clusters(guest, &c.data[lo..lo + cs as usize])?;
                        }
                    }
                }
                let pos = ((c.first_cluster + c.out.len() as u64) * cs).min(size);
                bar.set_position(pos);
                wb.progress(pos);
                next += 1;
            }
        }
        reader
            .join()
            .map_err(|_| anyhow!("the reading thread failed"))??;
        Ok(w)
    })
}

#[cfg(test)]
mod tests {
    use super::data_runs;

    #[test]
    fn runs_of_data_blocks() {
        let mut b = vec![0u8; 10];
        assert!(data_runs(&b, 2).is_empty());
        b[2] = 1;
        b[5] = 1;
        b[9] = 1;
        assert_eq!(data_runs(&b, 2), [(2, 6), (8, 10)]);
        assert_eq!(data_runs(&b, 4), [(0, 10)]);
        assert_eq!(data_runs(&b[..9], 4), [(0, 8)]);
    }
}
