//! `vm-img resize`: absolute or relative sizes; shrinking needs --shrink.

use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;

use vm_image::lock::{ImageLock, LockMode};
use vm_image::qcow2::ext_resize;
use vm_image::{Block, Format, Image, OpenOptions};
use vm_spec::{BareNumber, SizeChange};

use crate::cli::ResizeArgs;
use crate::cmd::options::Prealloc;
use crate::util;

pub fn run(a: &ResizeArgs) -> Result<i32> {
    let change = SizeChange::parse(&a.size, BareNumber::Bytes)
        .map_err(|e| anyhow!("Invalid image size specified. {e}"))?;
    let (path, format, locking) =
        util::target_with_locking(&a.filename, a.common.format.as_deref(), a.common.image_opts)?;
    let path = &path;
    // Held across the resize and the refcount clean-up after a shrink.
    let _lock = if locking {
        Some(ImageLock::acquire(path, LockMode::Write).map_err(|e| util::could_not_open(path, e))?)
    } else {
        None
    };
    let opts = OpenOptions {
        format: util::parse_format(format.as_deref())?,
        write: true,
        lock: false,
        // The backing file's length decides whether a grown area must be
        // zeroed (so its data does not show through).
        backing: true,
        ..OpenOptions::default()
    };
    let bitmaps = util::KeptBitmaps::load(path)?;
    if extended_l2(path, opts.format) {
        resize_extended(a, path, &change)?;
        bitmaps.store(&[])?;
        if !a.common.quiet {
            println!("Image resized.");
        }
        return Ok(0);
    }
    if a.shrink && opts.format != Some(Format::Raw) {
        // A qcow2 shrink meets its refcount table's faults as QEMU's does,
        // before anything changes (an unaligned entry also stops the open).
        let shrinking = util::qcow2_header(path)
            .is_some_and(|h| change.apply(h.size).is_some_and(|n| n < h.size));
        if shrinking {
            vm_image::qcow2::shrink::check_refblocks(path)
                .map_err(|e| util::qcow2_failure(e, "Failed to discard unused refblocks"))?;
        }
    }
    let mut img = Image::open(path, &opts).map_err(|e| util::could_not_open(path, e))?;
    let current = img.size();
    let new = change
        .apply(current)
        .ok_or_else(|| anyhow!("New image size must be positive"))?;
    if new == 0 && change != SizeChange::Absolute(0) {
        bail!("New image size must be positive");
    }
    if new < current && !a.shrink {
        bail!(
            "Use the --shrink option to perform a shrink operation (data past the new end is lost)"
        );
    }
    if img.format() == Format::Qcow2 && new % 512 != 0 {
        bail!("The new size must be a multiple of 512");
    }
    let prealloc = preallocation(a.preallocation.as_deref(), img.format(), new < current)?;
    let qcow2_metadata =
        img.format() == Format::Qcow2 && prealloc == Prealloc::Metadata && new > current;
    if qcow2_metadata {
        img.grow_for_preallocation(new)
    } else {
        img.resize(new)
    }
    .with_context(|| format!("Error resizing image '{}'", path.display()))?;
    if img.format() == Format::Raw && new > current {
        // As QEMU's file layer: the grown area preallocated as asked, and
        // the first block of a file that was empty written.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| crate::util::could_not_open(path, e))?;
        crate::prealloc::grow(&file, current, new, prealloc)?;
        if current == 0 && prealloc == Prealloc::Off {
            crate::prealloc::first_block(&file, new)?;
        }
    }
    img.sync()
        .with_context(|| format!("Could not sync '{}'", path.display()))?;
    let qcow2 = img.format() == Format::Qcow2;
    drop(img);
    if qcow2 && new > current && prealloc != Prealloc::Off {
        let what = || format!("Could not preallocate '{}'", path.display());
        if prealloc == Prealloc::Metadata {
            vm_image::qcow2::prealloc::preallocate_metadata(path, current, new)
                .with_context(what)?;
        } else {
            allocate_grown(path, current, new).with_context(what)?;
        }
    }
    if qcow2 && new < current {
        // L2 tables past the end, and refcount blocks now counting nothing.
        vm_image::qcow2::shrink::release_past_end(path)
            .with_context(|| format!("Error resizing image '{}'", path.display()))?;
    }
    // The bitmaps follow the new size; preallocation marks nothing.
    bitmaps.store(&[])?;
    if !a.common.quiet {
        println!("Image resized.");
    }
    Ok(0)
}

/// Whether `path` is a qcow2 image with extended L2 entries (imago opens
/// none for writing; `resize_extended` edits its tables instead).
fn extended_l2(path: &Path, format: Option<Format>) -> bool {
    format != Some(Format::Raw) && util::qcow2_header(path).is_some_and(|h| h.extended_l2())
}

/// resize of an image with extended L2 entries, with qemu-img's checks.
fn resize_extended(a: &ResizeArgs, path: &Path, change: &SizeChange) -> Result<()> {
    // The chain, read-only: its size, the backing file's length, and the
    // bytes a cut subcluster keeps.
    let opts = OpenOptions {
        format: Some(Format::Qcow2),
        lock: false,
        ..OpenOptions::default()
    };
    let img = Image::open(path, &opts).map_err(|e| util::could_not_open(path, e))?;
    let current = img.size();
    let new = change
        .apply(current)
        .ok_or_else(|| anyhow!("New image size must be positive"))?;
    if new == 0 && *change != SizeChange::Absolute(0) {
        bail!("New image size must be positive");
    }
    if new < current && !a.shrink {
        bail!(
            "Use the --shrink option to perform a shrink operation (data past the new end is lost)"
        );
    }
    if new % 512 != 0 {
        bail!("The new size must be a multiple of 512");
    }
    let prealloc = match preallocation(a.preallocation.as_deref(), Format::Qcow2, new < current)? {
        Prealloc::Off => ext_resize::Prealloc::Off,
        Prealloc::Metadata => ext_resize::Prealloc::Metadata,
        Prealloc::Falloc | Prealloc::Full => ext_resize::Prealloc::Data,
    };
    let read = |buf: &mut [u8], at: u64| img.read_at(buf, at);
    let backing = img.layers().get(1).map(|b| ext_resize::Backing {
        len: b.size(),
        read: &read,
    });
    let what = || format!("Error resizing image '{}'", path.display());
    match new.cmp(&current) {
        std::cmp::Ordering::Greater => {
            ext_resize::grow(path, new, prealloc, backing.as_ref()).with_context(what)
        }
        std::cmp::Ordering::Less => ext_resize::shrink(path, new).with_context(what),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// `--preallocation`, checked as qemu-img checks it.
fn preallocation(mode: Option<&str>, fmt: Format, shrinking: bool) -> Result<Prealloc> {
    let p = mode.map_or(Ok(Prealloc::Off), Prealloc::parse)?;
    if p != Prealloc::Off && shrinking {
        bail!("Preallocation can only be used for growing images");
    }
    match (fmt, p) {
        (Format::Raw, Prealloc::Metadata) => bail!("Unsupported preallocation mode: metadata"),
        _ => Ok(p),
    }
}

/// qcow2 `falloc` and `full`: the grown area becomes data clusters holding
/// zeroes, so later writes there neither grow the file nor take new space
/// (what iotest 125 asks of both). The L2 tables come first, in the
/// crash-safe order (`prepare_l2_tables`).
fn allocate_grown(path: &std::path::Path, from: u64, to: u64) -> Result<()> {
    vm_image::qcow2::l2prep::prepare_l2_tables(path, &[(from, to - from)])?;
    let opts = OpenOptions {
        format: Some(Format::Qcow2),
        write: true,
        lock: false,
        backing: false,
        ..OpenOptions::default()
    };
    let img = Image::open(path, &opts)?;
    let zero = vec![0u8; 2 << 20];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zero.len() as u64) as usize;
        img.write_at(&zero[..n], at)?;
        at += n as u64;
    }
    img.sync()?;
    Ok(())
}
