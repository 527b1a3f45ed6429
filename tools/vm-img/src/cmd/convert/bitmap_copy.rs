//! convert's `--bitmaps`: the source's persistent dirty bitmaps, read
//! with qemu-img's checks, and added to the new qcow2 output.

use anyhow::{bail, Context, Result};
use vm_image::qcow2::bitmaps::{self, Editor};
use vm_image::qcow2::meta::Meta;
use vm_image::{Format, Image};

/// `--bitmaps`: the source's bitmaps, with their bits, for a qcow2 v3
/// output (qemu-img's checks and words).
pub(super) fn source_bitmaps(
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
            return Err(crate::hint::Hinted::plain(
                format!("Cannot copy inconsistent bitmap '{}'", bm.name()),
                format!(
                    "Try --skip-broken-bitmaps, or use '{} bitmap --remove' to delete it",
                    crate::program_name()
                ),
            )
            .into());
        }
        let bits = bitmaps::load(&meta, &bm)?;
        out.push((bm, bits));
    }
    out.reverse();
    Ok(out)
}

/// Adds `bitmaps` to the qcow2 image at `path`, each with its granularity,
/// bits and enabled state.
pub(super) fn copy_bitmaps(
    path: &std::path::Path,
    list: &[(bitmaps::Bitmap, bitmaps::Bits)],
) -> Result<()> {
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
