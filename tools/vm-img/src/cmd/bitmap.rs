//! `vm-img bitmap`: a qcow2 image's persistent dirty bitmaps, added,
//! removed, cleared, enabled, disabled and merged as qemu-img does. The
//! actions run in command-line order on the bitmaps in memory; the image
//! is written once, after all of them succeeded (qemu-img keeps what ran
//! before a failed action: vm-img changes nothing then).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use vm_image::qcow2::bitmaps::{self, Bits, Editor};
use vm_image::qcow2::meta::Meta;
use vm_image::{Format, Image, OpenOptions};
use vm_spec::{parse_size, BareNumber};

use crate::cli::{BitmapAction, BitmapArgs};
use crate::util;

pub fn run(a: &BitmapArgs) -> Result<i32> {
    if a.actions.is_empty() {
        bail!("Need at least one of --add, --remove, --clear, --enable, --disable, or --merge");
    }
    let adds = a.actions.contains(&BitmapAction::Add);
    let merges = a
        .actions
        .iter()
        .any(|x| matches!(x, BitmapAction::Merge(_)));
    if a.granularity.is_some() && !adds {
        bail!("granularity only supported with --add");
    }
    if a.source_format.is_some() && a.source_file.is_none() {
        bail!("-F only supported with -b");
    }
    if a.source_file.is_some() && !merges {
        bail!("Merge bitmap source file only supported with --merge");
    }
    let granularity = a
        .granularity
        .as_deref()
        .map(|g| {
            parse_size(g, BareNumber::Bytes).map_err(|_| {
                anyhow!(
                    "Invalid granularity specified. You may use k, M, G, T, P or E suffixes \
                     for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes."
                )
            })
        })
        .transpose()?;
    let (path, format) =
        util::target(&a.filename, a.common.format.as_deref(), a.common.image_opts)?;
    let path = &path;
    let (_lock, img) = util::lock_for_edit(path, util::parse_format(format.as_deref())?)?;
    let fmt = img.format();
    drop(img);
    let name = a.bitmap.as_str();
    if fmt != Format::Qcow2 {
        let op = op_name(&a.actions[0]);
        bail!(
            "Operation {op} on bitmap {name} failed: Format driver '{}' does not support bitmaps",
            fmt.as_str()
        );
    }
    let mut ed = Editor::open(path).map_err(|e| crate::util::could_not_open(path, e))?;
    // -b naming this very image reads from the bitmaps being edited.
    let same = a.source_file.as_deref().is_some_and(|s| same_file(s, path));
    for action in &a.actions {
        let done = match action {
            BitmapAction::Add => ed.add(name, granularity),
            BitmapAction::Remove => ed.remove(name),
            BitmapAction::Clear => ed.clear(name),
            BitmapAction::Enable => ed.set_enabled(name, true),
            BitmapAction::Disable => ed.set_enabled(name, false),
            BitmapAction::Merge(src) => {
                let bits = match a.source_file.as_deref() {
                    Some(file) if !same => source_bits(file, a.source_format.as_deref(), src)
                        .map_err(|e| vm_image::Error::Invalid(crate::one_line(&e))),
                    _ => ed.bits(src),
                };
                bits.and_then(|b| ed.merge(name, &b))
            }
        };
        done.map_err(|e| {
            let message = match e {
                vm_image::Error::Invalid(m) => m,
                other => other.to_string(),
            };
            anyhow!(
                "Operation {} on bitmap {name} failed: {message}",
                op_name(action)
            )
        })?;
    }
    ed.commit()
        .with_context(|| format!("Could not write the bitmaps of '{}'", path.display()))?;
    Ok(0)
}

fn op_name(a: &BitmapAction) -> &'static str {
    match a {
        BitmapAction::Add => "add",
        BitmapAction::Remove => "remove",
        BitmapAction::Clear => "clear",
        BitmapAction::Enable => "enable",
        BitmapAction::Disable => "disable",
        BitmapAction::Merge(_) => "merge",
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// The bits of bitmap `name` in another image, opened read-only.
fn source_bits(file: &Path, format: Option<&str>, name: &str) -> Result<Bits> {
    // Its backing file is not needed, and may be the image being edited.
    let opts = OpenOptions {
        format: util::parse_format(format)?,
        backing: false,
        ..OpenOptions::default()
    };
    let img = Image::open(file, &opts).map_err(|e| util::could_not_open(file, e))?;
    if img.format() != Format::Qcow2 {
        bail!("Dirty bitmap '{name}' not found");
    }
    let meta = Meta::open(file, vm_image::open_image_file(file, false, false)?)?;
    let list = bitmaps::list(&meta)?;
    let bm = list
        .iter()
        .find(|b| b.name == name.as_bytes())
        .ok_or_else(|| anyhow!("Dirty bitmap '{name}' not found"))?;
    Ok(bitmaps::load(&meta, bm)?)
}
