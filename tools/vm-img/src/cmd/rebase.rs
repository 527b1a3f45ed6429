//! `vm-img rebase`: change an image's backing file. Safe mode copies into
//! the image every cluster where the old and new backing files differ, so
//! the guest sees the same data; `-u` only rewrites the name.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use vm_image::lock::{ImageLock, LockMode};
use vm_image::qcow2::l2prep::prepare_l2_tables;
use vm_image::qcow2::meta::Meta;
use vm_image::{resolve_backing, Block, Format, Image, OpenOptions};

use crate::cli::RebaseArgs;
use crate::progress::Progress;
use crate::util;

pub fn run(a: &RebaseArgs) -> Result<i32> {
    if a.common.image_opts {
        bail!("--image-opts is not supported by rebase yet");
    }
    let path = &a.filename;
    let fmt = util::parse_format(a.common.format.as_deref())?;
    let new_name = (!a.backing.is_empty()).then_some(a.backing.as_str());
    // The format goes into the header: a guess here would be recorded for
    // every later VM (a raw base whose guest wrote a qcow2 header would
    // become a qcow2 image naming any host file), so it must be given.
    if let (Some(b), None) = (new_name, &a.backing_format) {
        bail!("Could not change the backing file to '{b}': backing format must be specified");
    }
    if a.unsafe_mode {
        // Only written, never opened here: any of QEMU's driver names.
        let recorded = a
            .backing_format
            .as_deref()
            .map(util::recorded_format)
            .transpose()?;
        let _lock =
            ImageLock::acquire(path, LockMode::Write).map_err(|e| util::could_not_open(path, e))?;
        // Only the header changes: a header our own parser takes is
        // enough (the data path may refuse one, e.g. with two backing
        // format extensions, which this rewrite repairs).
        let header_ok = fmt != Some(Format::Raw)
            && vm_image::open_image_file(path, false, false)
                .and_then(|f| Meta::open(path, f))
                .is_ok();
        if !header_ok {
            open_qcow2(path, fmt, false, false)?;
        }
        vm_image::qcow2::set_backing(path, new_name, recorded)?;
        return Ok(0);
    }
    let mut new_fmt = util::parse_format(a.backing_format.as_deref())?;
    let _lock =
        ImageLock::acquire(path, LockMode::Write).map_err(|e| util::could_not_open(path, e))?;
    // Clusters we may copy in are the ones the image does not have yet.
    let probe = open_qcow2(path, fmt, false, true)?;
    let ranges: Vec<(u64, u64)> = probe
        .map(0, probe.size())?
        .iter()
        .filter(|e| !(e.depth == 0 && e.present))
        .map(|e| (e.start, e.length))
        .collect();
    drop(probe);
    prepare_l2_tables(path, &ranges)
        .with_context(|| format!("Could not prepare '{}'", path.display()))?;
    let bitmaps = util::KeptBitmaps::load(path)?;
    let top = open_qcow2(path, fmt, true, true)?;
    let mut written = Vec::new();
    let new = match new_name {
        Some(n) => {
            let p = resolve_backing(path, n);
            let img = util::open_read(&p, new_fmt.map(Format::as_str), false)
                .with_context(|| format!("Could not open new backing file '{}'", p.display()))?;
            new_fmt = Some(img.format());
            Some(img)
        }
        None => None,
    };
    let cs = top
        .header()
        .map_or(65536, vm_image::qcow2::header::Header::cluster_size);
    let size = top.size();
    let mut bar = Progress::new(a.progress && !a.common.quiet, size);
    let chunk = (2u64 << 20).max(cs);
    let mut old_buf = vec![0u8; chunk as usize];
    let mut new_buf = vec![0u8; chunk as usize];
    // qemu-img's steps: from each position, the run (at most a chunk) the
    // image itself holds or does not hold. The image's own clusters hide
    // both backing files; a run it does not hold is compared cluster by
    // cluster, and differing clusters keep the old view.
    let old_size = top.layers().get(1).map_or(0, vm_image::Layer::size);
    let mut pos = 0;
    while pos < size {
        let len = (size - pos).min(chunk);
        let extents = top.map(pos, len)?;
        let own = |e: &vm_image::Extent| e.depth == 0 && e.present;
        let held = extents.first().is_some_and(own);
        let run: u64 = extents
            .iter()
            .take_while(|e| own(e) == held)
            .map(|e| e.length)
            .sum();
        let mut run = run.max(1).min(len);
        // As qemu-img: past the old backing file's end (or with none) the
        // old view is zeroes, kept as zero clusters; before it, a run stops
        // at that end and differing clusters are written as data.
        let old_zero = pos >= old_size;
        if !old_zero {
            run = run.min(old_size - pos);
        }
        if !held {
            // Whole clusters, so no write has to merge with backing data.
            let lo = pos / cs * cs;
            let hi = (pos + run).div_ceil(cs).saturating_mul(cs).min(size);
            let n = (hi - lo) as usize;
            let (old, newb) = (&mut old_buf[..n], &mut new_buf[..n]);
            top.read_at(old, lo)
                .with_context(|| format!("Could not read '{}'", path.display()))?;
            read_backing(new.as_ref(), newb, lo)?;
            for (i, (o, nw)) in old
                .chunks(cs as usize)
                .zip(newb.chunks(cs as usize))
                .enumerate()
            {
                if o != nw {
                    let at = lo + (i as u64) * cs;
                    if old_zero {
                        top.write_zeroes(at, o.len() as u64)
                    } else {
                        top.write_at(o, at)
                    }
                    .with_context(|| format!("Could not write '{}'", path.display()))?;
                    written.push((at, o.len() as u64));
                }
            }
        }
        pos += run;
        bar.set_position(pos);
    }
    if a.cache.syncs() {
        top.sync()
    } else {
        top.flush()
    }
    .with_context(|| format!("Could not write '{}'", path.display()))?;
    drop(top);
    vm_image::qcow2::set_backing(path, new_name, new_fmt.map(Format::as_str))?;
    bitmaps.store(&written)?;
    bar.finish();
    Ok(0)
}

/// Reads from the new backing file; past its end (or without one) zeroes.
fn read_backing(img: Option<&Image>, buf: &mut [u8], pos: u64) -> Result<()> {
    buf.fill(0);
    let Some(img) = img else { return Ok(()) };
    let size = img.size();
    if pos >= size {
        return Ok(());
    }
    let n = ((size - pos) as usize).min(buf.len());
    img.read_at(&mut buf[..n], pos)
        .map_err(|e| anyhow!("Error reading the new backing file at offset {pos}: {e}"))
}

/// Opens the image being rebased (its lock is already held); only qcow2
/// images have a backing file to change.
fn open_qcow2(path: &Path, format: Option<Format>, write: bool, backing: bool) -> Result<Image> {
    let opts = OpenOptions {
        format,
        write,
        lock: false,
        backing,
        ..OpenOptions::default()
    };
    let img = Image::open(path, &opts).map_err(|e| util::could_not_open(path, e))?;
    if img.format() != Format::Qcow2 {
        bail!(
            "Could not change the backing file of '{}': raw images have none",
            path.display()
        );
    }
    Ok(img)
}
