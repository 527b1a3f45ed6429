//! `vm-img convert`: copy an image to raw or qcow2, skipping what reads as
//! zero, compressing on every core with `-c`. The output is written beside
//! its final name and renamed into place after one fsync.

use std::fs::File;

use anyhow::{bail, Context, Result};
use vm_image::lock::{ImageLock, LockMode};
use vm_image::qcow2::writer::{CreateOptions, Qcow2Writer};
use vm_image::{Block, Format};

mod bitmap_copy;
mod copy;
mod into_nbd;

use bitmap_copy::{copy_bitmaps, source_bitmaps};
use copy::{into_existing, over_backing, to_qcow2, to_qcow2_compressed, to_raw};

use super::options::{self, FormatOptions, Prealloc};
use crate::cli::ConvertArgs;
use crate::input::Input;
use crate::progress::Progress;
use crate::snapshot_copy::SnapshotCopy;
use crate::sources::Sources;
use crate::util::{self, AtomicOutput};

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
    super::option_help::check_lists(&a.options)?;
    if super::option_help::wanted(&a.options) {
        if util::read_only_format(&a.output_format) {
            bail!(
                "Format driver '{}' does not support image creation",
                a.output_format
            );
        }
        let named = !a.output.as_os_str().is_empty();
        print!("{}", super::option_help::creation(&a.output_format, named)?);
        return Ok(0);
    }
    // The output's format first: qemu-img refuses one it cannot make
    // before it looks at the source.
    let out_fmt = util::output_format(&a.output_format)?;
    if let Some(param) = &a.snapshot {
        crate::snapshot_copy::check_param(param)?;
    }
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
    if a.copy_offload && a.salvage {
        bail!("Cannot use copy offloading in salvaging mode");
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
    if let Some(address) = nbd_output(&a.output)? {
        let plan = into_nbd::Plan {
            src: &src,
            out_fmt,
            options: &o,
            size,
            sparse,
            copies_bitmaps: !bitmaps.is_empty(),
        };
        into_nbd::run(a, &address, &plan, &mut bar)?;
        return Ok(0);
    }
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
                .map_err(|e| crate::util::could_not_open(&a.output, e))?;
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
    // Where the new output's backing file ends (it must open, as qemu-img
    // opens it; -n returned above).
    let backed = backing_end(&a.output, &o.qcow2)?;
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
    // qemu-img's words for failing to make the output.
    let out = AtomicOutput::create(&a.output, false).with_context(|| {
        format!(
            "{}: error while converting {}",
            a.output.display(),
            out_fmt.as_str()
        )
    })?;
    if o.nocow == Some(true) {
        crate::prealloc::no_copy_on_write(&out.file);
    }
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

/// The export an output name points at, when it names one.
fn nbd_output(output: &std::path::Path) -> Result<Option<vm_image::nbd::Address>> {
    let text = output.to_string_lossy();
    if !vm_image::nbd::Address::is_nbd_name(&text) && !text.starts_with("json:") {
        return Ok(None);
    }
    match crate::input::locate(output, None, false)? {
        crate::input::Located::Nbd { address, .. } => Ok(Some(address)),
        _ => Ok(None),
    }
}

/// Where the new output's backing file ends, which the output reads as
/// zeroes past (`None`: no backing file). A local file must open, as
/// qemu-img opens it (relative to the output's folder); an NBD export or
/// the null device counts as the whole disk (nothing skipped).
fn backing_end(
    output: &std::path::Path,
    o: &vm_image::qcow2::writer::CreateOptions,
) -> Result<Option<u64>> {
    let Some(name) = &o.backing_file else {
        return Ok(None);
    };
    let format = o.backing_format.as_deref();
    if !matches!(
        crate::input::locate(std::path::Path::new(name), format, false)?,
        crate::input::Located::File { .. }
    ) {
        return Ok(Some(u64::MAX));
    }
    let path = vm_image::resolve_backing(output, name);
    let img = util::open_read(&path, format, true).map_err(|e| {
        anyhow::anyhow!(
            "Could not open '{}': Could not open backing file: Could not open '{}': {}",
            output.display(),
            path.display(),
            e.root_cause()
        )
    })?;
    Ok(Some(img.size()))
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
