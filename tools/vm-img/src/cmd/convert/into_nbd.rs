//! convert into an NBD export (an `nbd://`, `nbd+unix://` or `nbd:`
//! output, or the nbd driver's options), as qemu-img writes one: a raw
//! disk, or a qcow2 image laid inside the export. The export is written in
//! place and keeps its size: there is no temporary file to rename, and
//! "done" is the server's flush. With `-n` the export's image is written
//! through its format, as a local output is.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use vm_image::nbd::{Address, Client};
use vm_image::qcow2::writer::{CreateOptions, Qcow2Writer};
use vm_image::{Format, Image, OpenOptions};

use super::copy::{into_image, to_qcow2, to_qcow2_compressed};
use super::{FormatOptions, Prealloc, Writeback};
use crate::cli::ConvertArgs;
use crate::progress::Progress;
use crate::sources::Sources;

/// What convert settled before it looked at the output.
pub(super) struct Plan<'a> {
    pub src: &'a Sources,
    pub out_fmt: Format,
    pub options: &'a FormatOptions,
    pub size: u64,
    pub sparse: Option<usize>,
    pub copies_bitmaps: bool,
}

pub(super) fn run(a: &ConvertArgs, address: &Address, p: &Plan, bar: &mut Progress) -> Result<()> {
    let uri = address.uri();
    let converting = || format!("{uri}: error while converting {}", p.out_fmt.as_str());
    if p.copies_bitmaps {
        bail!("'{uri}': --bitmaps into an NBD export is not supported");
    }
    if p.options.prealloc.is_some_and(|m| m != Prealloc::Off) {
        bail!("'{uri}': preallocation into an NBD export is not supported");
    }
    if p.options.qcow2.backing_file.is_some() && !a.no_create {
        bail!("'{uri}': a backing file for an image inside an NBD export is not supported");
    }
    let client = Client::connect(address).with_context(|| format!("Could not open '{uri}'"))?;
    if client.read_only() {
        bail!("Could not open '{uri}': the NBD export is read-only");
    }
    let client = Arc::new(client);
    let what = || format!("Could not write '{uri}'");
    let syncs = a.cache.syncs();
    if a.no_create || p.out_fmt == Format::Raw {
        // A raw export is the disk itself: nothing to create, but it must
        // hold the whole source (QEMU cannot grow an NBD node either).
        if !a.no_create && client.size() < p.size {
            return Err(anyhow::anyhow!("Cannot grow NBD nodes")).with_context(converting);
        }
        let opts = OpenOptions {
            format: Some(p.out_fmt),
            write: true,
            ..OpenOptions::default()
        };
        let dst = Image::open_nbd(Arc::clone(&client), &opts)
            .with_context(|| format!("Could not open '{uri}'"))?;
        // The export holds old bytes: zeroes are written, not skipped.
        into_image(p.src, dst, p.size, bar, syncs, false)?;
        bar.finish();
        return Ok(());
    }
    let opts = CreateOptions {
        size: p.size.div_ceil(512) * 512,
        ..p.options.qcow2.clone()
    };
    let w = Qcow2Writer::new(Arc::clone(&client), &opts).with_context(converting)?;
    let mut wb = Writeback {
        file: None,
        next: u64::MAX,
    };
    let full = p.sparse.is_none();
    let w = if a.compress {
        to_qcow2_compressed(p.src, w, p.size, None, full, bar, &mut wb)
    } else {
        to_qcow2(p.src, w, p.size, p.sparse, bar, &mut wb)
    }
    .with_context(what)?;
    w.finish().with_context(what)?;
    if syncs {
        client.flush().with_context(what)?;
    }
    bar.finish();
    Ok(())
}
