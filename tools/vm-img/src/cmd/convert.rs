//! `vm-img convert`: copy an image to raw or qcow2, skipping what reads as
//! zero, compressing on every core with `-c`. The output is written beside
//! its final name and renamed into place after one fsync.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{mpsc, Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use vm_image::lock::{ImageLock, LockMode};
use vm_image::qcow2::bitmaps::{self, Editor};
use vm_image::qcow2::compress::compress_cluster;
use vm_image::qcow2::meta::Meta;
use vm_image::qcow2::writer::{CreateOptions, Qcow2Writer};
use vm_image::{Block, Format, Image};

use crate::input::Input;
use crate::sources::Sources;

use super::options::{self, Prealloc};
use crate::cli::ConvertArgs;
use crate::progress::Progress;
use crate::snapshot_copy::SnapshotCopy;
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
    // The output's format first: qemu-img refuses one it cannot make
    // before it looks at the source.
    let out_fmt = util::output_format(&a.output_format)?;
    let first = &a.sources[0];
    let secrets = crate::secrets::Secrets::parse(&a.objects)?;
    let open = |p: &std::path::Path| {
        Input::open(
            p,
            a.format.as_deref(),
            a.image_opts,
            a.force_share,
            &secrets,
        )
    };
    let source = open(first)?;
    let several = a.sources.len() > 1;
    // -l: a copy at the snapshot is read instead, while the source stays
    // open (and locked) so nobody writes it meanwhile.
    let (src, _snapshot) = match &a.snapshot {
        None => {
            let mut images = vec![source];
            for p in &a.sources[1..] {
                images.push(open(p)?);
            }
            (Sources::new(images), None)
        }
        Some(_) if several => bail!("No support for concatenating multiple snapshot"),
        Some(param) => {
            let Some(img) = source.image().filter(|i| i.format() == Format::Qcow2) else {
                bail!(
                    "Failed to load snapshot: image format '{}' has no internal snapshots",
                    source.format().as_str()
                );
            };
            let copy = SnapshotCopy::make(img.path(), param, &scratch_dir(&a.output))?;
            let img = util::open_read(&copy.path, Some("qcow2"), true)?;
            (Sources::new(vec![Input::Image(img)]), Some((copy, source)))
        }
    };
    let mut src = src;
    src.set_salvage(a.salvage);
    if a.salvage {
        // qemu-img reads the whole allocation once before it copies (to
        // count what it will copy): with --salvage its warnings come from
        // both passes, and so they do here.
        src.map(0, src.size())?;
    }
    let mut o = options::parse(&a.options)?;
    if let Some(k) = o.encrypt.any_key() {
        bail!("'{k}': convert into an encrypted image is not supported yet");
    }
    if let Some(b) = &a.backing {
        o.qcow2.backing_file = Some(b.clone());
    }
    if let Some(f) = &a.backing_format {
        o.qcow2.backing_format = Some(f.clone());
    }
    if o.qcow2.data_file.is_some() || o.qcow2.data_file_raw {
        // The streaming writer puts data in the image itself.
        bail!("convert into an image with an external data file is not supported yet");
    }
    if let Some(m) = &a.coroutines {
        if !m.parse::<u32>().is_ok_and(|n| (1..=16).contains(&n)) {
            bail!("Invalid number of coroutines. Allowed number of coroutines is between 1 and 16");
        }
    }
    if a.copy_offload && a.compress {
        bail!("Cannot enable copy offloading when -c is used");
    }
    if a.copy_offload && a.sparse.is_some() {
        bail!("Cannot enable copy offloading when -S is used");
    }
    let sparse = sparse_block(a.sparse.as_deref())?;
    if a.compress && out_fmt != Format::Qcow2 {
        bail!("Compression not supported for this file format");
    }
    if out_fmt == Format::Raw && o.cluster_size_given {
        bail!("Invalid parameter 'cluster_size' for format 'raw'");
    }
    if several && o.qcow2.backing_file.is_some() {
        bail!(
            "Having a backing file for the target makes no sense when concatenating multiple \
             input images"
        );
    }
    if several && a.bitmaps {
        bail!("Cannot copy bitmaps from more than one source");
    }
    let size = src.size();
    let bitmaps = if a.bitmaps {
        source_bitmaps(
            src.first().image(),
            out_fmt,
            o.qcow2.version,
            a.skip_broken_bitmaps,
        )?
    } else if a.skip_broken_bitmaps {
        bail!("--skip-broken-bitmaps requires --bitmaps");
    } else {
        Vec::new()
    };
    let mut bar = Progress::over_data(a.progress && !a.quiet, &src, size)?;
    if a.no_create {
        // -B names the backing file of an image to be made: with -n there
        // is none, and qemu-img ignores it.
        if !a.options.is_empty() {
            bail!("-o has no effect when skipping image creation");
        }
        let kept = util::KeptBitmaps::load(&a.output)?;
        into_existing(
            &src,
            &a.output,
            out_fmt,
            size,
            &mut bar,
            a.cache.syncs(),
            false,
        )?;
        // Every byte of the disk was written (data or zeroes).
        kept.store(&[(0, size)])?;
        if !bitmaps.is_empty() {
            let _lock = ImageLock::acquire(&a.output, LockMode::Write)
                .with_context(|| format!("Could not open '{}'", a.output.display()))?;
            copy_bitmaps(&a.output, &bitmaps)?;
        }
        bar.finish();
        return Ok(0);
    }
    if o.qcow2.backing_file.is_some() {
        if out_fmt != Format::Qcow2 {
            bail!("Backing file not supported for file format 'raw'");
        }
        if o.qcow2.backing_format.is_none() {
            bail!("Use of backing file requires explicit backing format");
        }
    }
    let prealloc = o.prealloc.filter(|&p| p != Prealloc::Off);
    if let Some(p) = prealloc {
        // As qemu-img: an image made preallocated, the data written into it.
        if out_fmt == Format::Raw && p == Prealloc::Metadata {
            bail!("Unsupported preallocation mode 'metadata' for format 'raw'");
        }
        if a.compress || o.qcow2.backing_file.is_some() {
            bail!("preallocation with -c or a backing file is not supported");
        }
    }
    let out = AtomicOutput::create(&a.output, false)?;
    if let Some(p) = prealloc {
        let what = || format!("Could not write '{}'", a.output.display());
        super::create::write_image(&out, out_fmt, size.div_ceil(512) * 512, &mut o, p)
            .with_context(what)?;
        into_existing(
            &src,
            out.working_path(),
            out_fmt,
            size,
            &mut bar,
            a.cache.syncs(),
            true,
        )?;
        if out_fmt == Format::Qcow2 {
            copy_bitmaps(out.working_path(), &bitmaps)?;
        }
        bar.finish();
        out.commit(a.cache.syncs())?;
        return Ok(0);
    }
    let what = || format!("Could not write '{}'", a.output.display());
    let mut wb = Writeback {
        file: a.cache.syncs().then_some(&out.file),
        next: WRITEBACK_EVERY,
    };
    match out_fmt {
        Format::Raw => {
            to_raw(&src, &out.file, size, sparse, &mut bar, &mut wb).with_context(what)?;
        }
        Format::Qcow2 => {
            let opts = CreateOptions {
                size: size.div_ceil(512) * 512,
                ..o.qcow2.clone()
            };
            let w = Qcow2Writer::new(out.file.try_clone()?, &opts).with_context(what)?;
            let backed = opts
                .backing_file
                .as_deref()
                .map(|b| backing_end(&a.output, b, opts.backing_format.as_deref()));
            // -S 0: zeroes are written as data, as qemu-img writes them.
            let full = sparse.is_none();
            let w = if a.compress {
                to_qcow2_compressed(&src, w, size, backed, full, &mut bar, &mut wb)
            } else if let Some(end) = backed {
                over_backing(&src, w, size, end, full, &mut bar, &mut wb)
            } else {
                to_qcow2(&src, w, size, sparse, &mut bar, &mut wb)
            }
            .with_context(what)?;
            w.finish().with_context(what)?;
            copy_bitmaps(out.working_path(), &bitmaps)?;
        }
    }
    bar.finish();
    out.commit(a.cache.syncs())?;
    Ok(0)
}

/// `--bitmaps`: the source's bitmaps, with their bits, for a qcow2 v3
/// output (qemu-img's checks and words).
fn source_bitmaps(
    src: Option<&Image>,
    out_fmt: Format,
    out_version: u32,
    skip_broken: bool,
) -> Result<Vec<(bitmaps::Bitmap, bitmaps::Bits)>> {
    if out_fmt != Format::Qcow2 || out_version < 3 {
        bail!(
            "Format driver '{}' does not support bitmaps",
            out_fmt.as_str()
        );
    }
    let Some(src) = src.filter(|i| i.header().is_some_and(|h| h.version >= 3)) else {
        bail!("Source lacks bitmap support");
    };
    let path = src.path();
    let meta = Meta::open(path, vm_image::open_image_file(path, false, false)?)?;
    bitmaps::check_loadable(&meta, &bitmaps::list(&meta)?)?;
    let mut out = Vec::new();
    // qemu-img walks them last first (its in-memory list), so its errors
    // and warnings name them in that order; they are added first first.
    for bm in bitmaps::list(&meta)?.into_iter().rev() {
        if bm.in_use() {
            if skip_broken {
                crate::error_line(format_args!(
                    "warning: Skipping inconsistent bitmap '{}'",
                    bm.name()
                ));
                continue;
            }
            bail!(
                "Cannot copy inconsistent bitmap '{}'; try --skip-broken-bitmaps, or use \
                 'vm-img bitmap --remove' to delete it",
                bm.name()
            );
        }
        let bits = bitmaps::load(&meta, &bm)?;
        out.push((bm, bits));
    }
    out.reverse();
    Ok(out)
}

/// Adds `bitmaps` to the qcow2 image at `path`, each with its granularity,
/// bits and enabled state.
fn copy_bitmaps(path: &std::path::Path, list: &[(bitmaps::Bitmap, bitmaps::Bits)]) -> Result<()> {
    if list.is_empty() {
        return Ok(());
    }
    let what = || format!("Could not copy bitmaps into '{}'", path.display());
    let mut ed = Editor::open(path).with_context(what)?;
    for (bm, bits) in list {
        let name = bm.name();
        ed.add(&name, Some(bm.granularity()))
            .and_then(|()| ed.merge(&name, bits))
            .and_then(|()| ed.set_enabled(&name, bm.enabled()))
            .with_context(what)?;
    }
    ed.commit().with_context(what)
}

/// Where the output's backing file (-B) ends, which the output reads as
/// zeroes past; the whole disk when it cannot be opened (nothing skipped).
fn backing_end(output: &std::path::Path, name: &str, format: Option<&str>) -> u64 {
    let path = vm_image::resolve_backing(output, name);
    util::open_read(&path, format, true).map_or(u64::MAX, |img| img.size())
}

/// Where `-l`'s copy of the source goes: beside the output, unless the
/// output is a device.
fn scratch_dir(output: &std::path::Path) -> std::path::PathBuf {
    let device = std::fs::metadata(output).is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_block_device() || m.file_type().is_char_device()
    });
    match output.parent() {
        _ if device => std::env::temp_dir(),
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => ".".into(),
    }
}

/// `-S`: the zero run that may stay a hole (qemu-img's default 4k); `None`
/// for `-S 0`, which writes every byte.
fn sparse_block(arg: Option<&str>) -> Result<Option<usize>> {
    let Some(text) = arg else {
        return Ok(Some(ZERO_BLOCK));
    };
    let v = vm_spec::parse_size(text, vm_spec::BareNumber::Bytes).ok();
    match v {
        Some(0) => Ok(None),
        Some(v) if v % 512 == 0 && v <= 16 << 20 => Ok(Some(v as usize)),
        _ => bail!(
            "Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 \
             up to 16777216. Select 0 to disable sparse detection (fully allocates output)."
        ),
    }
}

/// `-n`: the output exists; the source's contents go into it through its
/// own format, zero ranges as zeroes (it may hold old data there).
/// Writes the source into the existing image `output` (`-n`, and the
/// preallocated image made for `-o preallocation`). `skip_zeroes`: the
/// image is new and reads as zeroes already, so zero runs are left alone.
fn into_existing(
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
    let mut dst = Image::open(output, &opts)
        .with_context(|| format!("Could not open '{}'", output.display()))?;
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
fn over_backing(
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
fn read_chunk(src: &Sources, pos: u64, buf: &mut [u8]) -> Result<bool> {
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

fn to_raw(
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
    let mut buf = vec![0u8; CHUNK as usize];
    let mut pos = 0;
    while pos < size {
        let len = (size - pos).min(CHUNK) as usize;
        let Some(block) = sparse else {
            // -S 0: every byte written, zeroes too.
            if !read_chunk(src, pos, &mut buf[..len])? {
                buf[..len].fill(0);
            }
            out.write_all_at(&buf[..len], pos)?;
            pos += len as u64;
            bar.set_position(pos);
            wb.progress(pos);
            continue;
        };
        if read_chunk(src, pos, &mut buf[..len])? {
            // Zero blocks stay holes.
            let mut done = 0;
            for (lo, hi) in data_runs(&buf[..len], block) {
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
    let mut buf = vec![0u8; chunk as usize];
    let mut pos = 0;
    while pos < size {
        let len = (size - pos).min(chunk) as usize;
        let padded = (len as u64).div_ceil(cs) * cs;
        let b = &mut buf[..padded as usize];
        if read_chunk(src, pos, &mut b[..len])? {
            b[len..].fill(0);
            // Zero blocks stay unallocated (-S 0: written as data).
            if let Some(block) = block {
                for (lo, hi) in data_runs(b, block as usize) {
                    w.write_clusters((pos + lo as u64) / cs, &b[lo..hi])?;
                }
            } else {
                w.write_clusters(pos / cs, b)?;
            }
        } else if block.is_none() {
            b.fill(0);
            w.write_clusters(pos / cs, b)?;
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
fn to_qcow2_compressed(
    src: &Sources,
    mut w: Qcow2Writer,
    size: u64,
    backed: Option<u64>,
    full: bool,
    bar: &mut Progress,
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
                    .enumerate()
                    .map(|(i, cl)| {
                        if c.top.as_ref().is_some_and(|t| !t[i]) {
                            Slot::Skip
                        } else if is_zero(cl) {
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
            .then(|| compress_cluster(&vec![0u8; cs as usize]))
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
