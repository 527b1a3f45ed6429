//! `vm-img convert`: copy an image to raw or qcow2, skipping what reads as
//! zero, compressing on every core with `-c`. The output is written beside
//! its final name and renamed into place after one fsync.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{mpsc, Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::ProgressBar;
use vm_image::qcow2::compress::compress_cluster;
use vm_image::qcow2::writer::{CreateOptions, Qcow2Writer};
use vm_image::{Block, Format, Image};

use super::options;
use crate::cli::ConvertArgs;
use crate::util::{self, is_zero, AtomicOutput};

/// Bytes read per step: large enough for long sequential I/O, small enough
/// to keep several in flight per core when compressing.
const CHUNK: u64 = 2 << 20;
/// Start writeback after this many bytes of output (see `start_writeback`).
const WRITEBACK_EVERY: u64 = 32 << 20;

/// Starts writeback of the output every `WRITEBACK_EVERY` bytes read, when
/// the command will end with an fsync anyway.
struct Writeback<'a> {
    file: Option<&'a File>,
    next: u64,
}

impl Writeback<'_> {
    fn progress(&mut self, pos: u64) {
        if let Some(f) = self.file {
            if pos >= self.next {
                util::start_writeback(f);
                self.next = pos + WRITEBACK_EVERY;
            }
        }
    }
}

/// qemu-img's default granularity for finding zeroes in raw output (-S 4k).
const ZERO_BLOCK: usize = 4096;

pub fn run(a: &ConvertArgs) -> Result<i32> {
    let src = util::open_read(&a.source, a.format.as_deref(), a.force_share)?;
    let out_fmt: Format = a.output_format.parse().map_err(|m: String| anyhow!(m))?;
    let o = options::parse(&a.options)?;
    if o.qcow2.backing_file.is_some() {
        bail!("convert cannot give the output a backing file (-o backing_file)");
    }
    if a.compress && out_fmt != Format::Qcow2 {
        bail!("Compression not supported for this file format");
    }
    if out_fmt == Format::Raw && o.cluster_size_given {
        bail!("Invalid parameter 'cluster_size' for format 'raw'");
    }
    let size = src.size();
    let bar = util::progress(a.progress && !a.quiet, size);
    let out = AtomicOutput::create(&a.output, false)?;
    let what = || format!("Could not write '{}'", a.output.display());
    let mut wb = Writeback {
        file: a.cache.syncs().then_some(&out.file),
        next: WRITEBACK_EVERY,
    };
    match out_fmt {
        Format::Raw => to_raw(&src, &out.file, size, &bar, &mut wb).with_context(what)?,
        Format::Qcow2 => {
            let opts = CreateOptions {
                size: size.div_ceil(512) * 512,
                ..o.qcow2.clone()
            };
            let w = Qcow2Writer::new(out.file.try_clone()?, &opts).with_context(what)?;
            let w = if a.compress {
                to_qcow2_compressed(&src, w, size, &bar, &mut wb)
            } else {
                to_qcow2(&src, w, size, &bar, &mut wb)
            }
            .with_context(what)?;
            w.finish().with_context(what)?;
        }
    }
    bar.finish_and_clear();
    out.commit(a.cache.syncs())?;
    Ok(0)
}

/// Reads `[pos, pos + buf.len())` into `buf`, touching only ranges that
/// hold data; returns false when the whole range reads as zero.
fn read_chunk(src: &Image, pos: u64, buf: &mut [u8]) -> Result<bool> {
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

fn to_raw(src: &Image, out: &File, size: u64, bar: &ProgressBar, wb: &mut Writeback) -> Result<()> {
    util::set_output_len(out, size)?;
    // A device has no holes: its zero ranges are written as zeroes.
    let device = util::is_block_device(out);
    let mut buf = vec![0u8; CHUNK as usize];
    let mut pos = 0;
    while pos < size {
        let len = (size - pos).min(CHUNK) as usize;
        if read_chunk(src, pos, &mut buf[..len])? {
            // Zero blocks stay holes.
            let mut done = 0;
            for (lo, hi) in data_runs(&buf[..len], ZERO_BLOCK) {
                if device && lo > done {
                    util::zero_device_range(out, pos + done as u64, (lo - done) as u64)?;
                }
                out.write_all_at(&buf[lo..hi], pos + lo as u64)?;
                done = hi;
            }
            if device && done < len {
                util::zero_device_range(out, pos + done as u64, (len - done) as u64)?;
            }
        } else if device {
            util::zero_device_range(out, pos, len as u64)?;
        }
        pos += len as u64;
        bar.set_position(pos);
        wb.progress(pos);
    }
    Ok(())
}

fn to_qcow2(
    src: &Image,
    mut w: Qcow2Writer,
    size: u64,
    bar: &ProgressBar,
    wb: &mut Writeback,
) -> Result<Qcow2Writer> {
    let cs = w.cluster_size();
    let chunk = CHUNK.max(cs);
    let mut buf = vec![0u8; chunk as usize];
    let mut pos = 0;
    while pos < size {
        let len = (size - pos).min(chunk) as usize;
        let padded = (len as u64).div_ceil(cs) * cs;
        let b = &mut buf[..padded as usize];
        if read_chunk(src, pos, &mut b[..len])? {
            b[len..].fill(0);
            // Zero clusters stay unallocated.
            for (lo, hi) in data_runs(b, cs as usize) {
                w.write_clusters((pos + lo as u64) / cs, &b[lo..hi])?;
            }
        }
        pos += len as u64;
        bar.set_position(pos);
        wb.progress(pos);
    }
    Ok(w)
}

/// A chunk of clusters on its way through the compressing workers.
struct Chunk {
    index: u64,
    first_cluster: u64,
    data: Vec<u8>,
    out: Vec<Slot>,
}

/// What becomes of one cluster of a chunk.
enum Slot {
    /// All zero: left unallocated.
    Zero,
    /// Does not compress: stored as it is.
    Plain,
    Compressed(Vec<u8>),
}

fn to_qcow2_compressed(
    src: &Image,
    mut w: Qcow2Writer,
    size: u64,
    bar: &ProgressBar,
    wb: &mut Writeback,
) -> Result<Qcow2Writer> {
    let cs = w.cluster_size();
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
                    .map(|cl| {
                        if is_zero(cl) {
                            Slot::Zero
                        } else {
                            compress_cluster(cl).map_or(Slot::Plain, Slot::Compressed)
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
                if read_chunk(src, pos, &mut data[..len])? {
                    let c = Chunk {
                        index,
                        first_cluster: pos / cs,
                        data,
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
        for c in done_rx {
            pending.insert(c.index, c);
            while let Some(c) = pending.remove(&next) {
                for (i, slot) in c.out.iter().enumerate() {
                    let guest = c.first_cluster + i as u64;
                    match slot {
                        Slot::Zero => {}
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
