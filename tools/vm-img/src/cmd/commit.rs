//! `vm-img commit`: write an overlay's data into its backing file (or a
//! deeper base with -b), then empty the overlay unless -d.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use vm_image::host::Faults;
use vm_image::lock::{ImageLock, LockMode};
use vm_image::qcow2::empty::make_empty;
use vm_image::qcow2::l2prep::prepare_l2_tables;
use vm_image::{Block, Format, Image, OpenOptions};

use crate::cli::CommitArgs;
use crate::input::{blkdebug, edit_target, Located};
use crate::progress::Progress;
use crate::util;

pub fn run(a: &CommitArgs) -> Result<i32> {
    if a.common.image_opts {
        bail!("--image-opts is not supported by commit yet");
    }
    // blkdebug's rules apply to the emptying, as QEMU's iotests fail it.
    let target = edit_target(&a.filename, a.common.format.as_deref(), false)?;
    let path = &target.path;
    let fmt = util::parse_format(target.format.as_deref())?;
    let top = Image::open(
        path,
        &OpenOptions {
            format: fmt,
            lock: false,
            ..OpenOptions::default()
        },
    )
    .map_err(|e| crate::util::could_not_open(path, e))?;
    if top.layers().len() < 2 {
        bail!("Image '{}' does not have a backing file", path.display());
    }
    // Writing into a base whose format was guessed could turn a raw base
    // into whatever header the overlay's guest wrote (qemu-img refuses too).
    top.refuse_guessed_backing()?;
    let base_depth = match &a.base {
        None => 1,
        Some(b) => find_layer(&top, b)?,
    };
    // -b leaves the images between top and base invalid, so (as qemu-img)
    // the top keeps its data to stay valid.
    let empty = !a.keep && a.base.is_none();
    let mut locks = Vec::new();
    for (i, l) in top.layers().iter().enumerate() {
        let mode = if i == base_depth || (i == 0 && empty) {
            LockMode::Write
        } else {
            LockMode::Read
        };
        locks.push(
            ImageLock::acquire(&l.path, mode)
                .map_err(|e| crate::util::could_not_open(&l.path, e))?,
        );
    }
    let top_format = top.format();
    let base_layer = &top.layers()[base_depth];
    let size = top.size();
    // The ranges we are about to write into the base.
    let ranges = vm_image::commit::above(&top, base_depth)?;
    if base_layer.format == Format::Qcow2 {
        prepare_l2_tables(&base_layer.path, &ranges)
            .with_context(|| format!("Could not prepare '{}'", base_layer.path.display()))?;
    }
    let base_bitmaps = util::KeptBitmaps::load(&base_layer.path)?;
    let mut base = Image::open(
        &base_layer.path,
        &OpenOptions {
            format: Some(base_layer.format),
            write: true,
            lock: false,
            faults: recorded_faults(&top, base_depth),
            ..OpenOptions::default()
        },
    )
    .with_context(|| format!("Could not open base '{}'", base_layer.path.display()))?;
    if base.size() < size {
        base.resize(size).context("Could not grow the base image")?;
    }
    let mut bar = Progress::new(a.progress && !a.common.quiet, size);
    // Progress over the whole disk, as qemu-img counts it.
    let whole = [(0, size)];
    // qemu-img's words: its commit is a block job.
    vm_image::commit::copy_down_unmapping(&top, base_depth, &mut base, &whole, |n| bar.inc(n))
        .map_err(|e| anyhow!("Block job failed: {}", vm_image::os_text(&e)))?;
    if a.cache.syncs() {
        base.sync()
    } else {
        base.flush()
    }
    .with_context(|| format!("Could not write '{}'", base_layer.path.display()))?;
    drop(base);
    base_bitmaps.store(&ranges)?;
    drop(top);
    if empty {
        // Emptying changes no data the guest sees (the base holds it now):
        // nothing is marked, as with qemu-img.
        let top_bitmaps = util::KeptBitmaps::load(path)?;
        let failed =
            |e: &dyn std::fmt::Display| anyhow!("Failed to empty {}: {e}", a.filename.display());
        let emptied = top_format == Format::Qcow2
            && make_empty(path, target.faults.as_ref()).map_err(|e| match e {
                vm_image::Error::Io { source, .. } => failed(&vm_image::os_text(&source)),
                other => failed(&other),
            })?;
        if !emptied {
            let mut t = Image::open(
                path,
                &OpenOptions {
                    format: fmt,
                    write: true,
                    lock: false,
                    backing: false,
                    ..OpenOptions::default()
                },
            )?;
            let size = t.size();
            t.discard_to_backing(0, size)
                .and_then(|()| if a.cache.syncs() { t.sync() } else { t.flush() })
                .map_err(|e| failed(&vm_image::os_text(&e)))?;
        }
        top_bitmaps.store(&[])?;
    }
    bar.finish();
    if !a.common.quiet {
        println!("Image committed.");
    }
    Ok(0)
}

/// blkdebug's rules where the layer above names the base through it
/// (a `json:` backing name, as QEMU's iotest 020 fails a commit).
fn recorded_faults(top: &Image, base_depth: usize) -> Option<Arc<dyn Faults>> {
    let name = top.layers()[base_depth - 1]
        .header
        .as_ref()?
        .backing_file
        .clone()?;
    if !name.starts_with("json:") {
        return None;
    }
    match crate::input::locate(Path::new(&name), None, false).ok()? {
        Located::Debug { rules, .. } => Some(blkdebug::Engine::new(rules)),
        _ => None,
    }
}

/// The chain layer `-b` names. As in QEMU, a relative name is taken
/// relative to the folder of the image whose backing file it would be
/// (the way backing file names are recorded), not to the current folder.
fn find_layer(top: &Image, base: &Path) -> Result<usize> {
    let layers = top.layers();
    (1..layers.len())
        .find(|&i| {
            let named = match layers[i - 1].path.parent() {
                Some(dir) if base.is_relative() => dir.join(base),
                _ => base.to_path_buf(),
            };
            let (Ok(named), Ok(layer)) = (named.canonicalize(), layers[i].path.canonicalize())
            else {
                return false;
            };
            named == layer
        })
        .ok_or_else(|| {
            anyhow!(
                "Did not find '{}' in the backing chain of '{}'",
                base.display(),
                top.path().display()
            )
        })
}
