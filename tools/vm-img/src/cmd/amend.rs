//! `vm-img amend`: a qcow2 image's options changed in place, in QEMU's
//! order: an upgrade first (newer features may need it), then the backing
//! file, lazy refcounts, the size and the refcount width, a downgrade last
//! (once what 0.10 cannot hold has been taken out).

use anyhow::{anyhow, bail, Context, Result};

use vm_image::qcow2::amend;
use vm_image::{Block, Format, Image, OpenOptions};
use vm_spec::{parse_size, BareNumber};

use crate::cli::AmendArgs;
use crate::util;

#[derive(Default)]
struct Changes {
    version: Option<u32>,
    lazy_refcounts: Option<bool>,
    refcount_order: Option<u32>,
    size: Option<u64>,
    backing_file: Option<String>,
    backing_fmt: Option<String>,
}

fn parse(opts: &[String]) -> Result<Changes> {
    let mut c = Changes::default();
    for arg in opts {
        for item in crate::input::names::option_items(arg) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| anyhow!("Invalid option '{item}': expected key=value"))?;
            match k.trim() {
                "compat" => {
                    c.version = Some(match v {
                        "0.10" | "v2" => 2,
                        "1.1" | "v3" => 3,
                        _ => bail!("Unknown compatibility level {v}"),
                    });
                }
                "lazy_refcounts" => {
                    c.lazy_refcounts = Some(match v {
                        "on" | "true" | "yes" => true,
                        "off" | "false" | "no" => false,
                        _ => bail!("Parameter 'lazy_refcounts' expects 'on' or 'off'"),
                    });
                }
                "refcount_bits" => {
                    let bits: u32 = v.parse().unwrap_or(0);
                    if bits == 0 || bits > 64 || !bits.is_power_of_two() {
                        bail!("Refcount width must be a power of two and may not exceed 64 bits");
                    }
                    c.refcount_order = Some(bits.trailing_zeros());
                }
                "size" => {
                    c.size = Some(
                        parse_size(v, BareNumber::Bytes)
                            .map_err(|e| anyhow!("Parameter 'size': {e}"))?,
                    );
                }
                "backing_file" => c.backing_file = Some(v.to_string()),
                "backing_fmt" => c.backing_fmt = Some(v.to_string()),
                // qemu-img's two lines for an option only create takes.
                other if super::option_help::qcow2_creation_option(other) => {
                    return Err(crate::hint::Hinted::new(
                        format!("Invalid parameter '{other}'"),
                        vec![crate::hint::Line::Plain(
                            "This option is only supported for image creation".into(),
                        )],
                    )
                    .into())
                }
                other => bail!(
                    "Invalid parameter '{other}' (amend takes compat, lazy_refcounts, \
                     refcount_bits, size, backing_file and backing_fmt)"
                ),
            }
        }
    }
    Ok(c)
}

pub fn run(a: &AmendArgs) -> Result<i32> {
    super::option_help::check_lists(&a.options)?;
    let Some(filename) = &a.filename else {
        match a.common.format.as_deref() {
            Some(fmt) if super::option_help::wanted(&a.options) => {
                print!("{}", super::option_help::amendment(fmt)?);
                return Ok(0);
            }
            _ => bail!("Expecting one image file name"),
        }
    };
    if super::option_help::wanted(&a.options) {
        // The format given, or the image's own.
        let fmt = match a.common.format.as_deref() {
            Some(f) => f.to_string(),
            None => util::open_read(filename, None, true)
                .map_err(|e| crate::util::could_not_open(filename, e))?
                .format()
                .as_str()
                .to_string(),
        };
        print!("{}", super::option_help::amendment(&fmt)?);
        return Ok(0);
    }
    let c = parse(&a.options)?;
    let (path, format) = util::target(filename, a.common.format.as_deref(), a.common.image_opts)?;
    let path = &path;
    let _lock = vm_image::lock::ImageLock::acquire(path, vm_image::lock::LockMode::Write)
        .map_err(|e| util::could_not_open(path, e))?;
    let format = match util::parse_format(format.as_deref())? {
        Some(f) => f,
        None => util::probe_magic(path)?,
    };
    if format != Format::Qcow2 {
        bail!(
            "Format driver '{}' does not support option amendment",
            format.as_str()
        );
    }
    // The header alone: the tables are checked by the changes that walk
    // them, which mark the image corrupt where QEMU does.
    let header = util::read_qcow2_header(path).map_err(|e| util::could_not_open(path, e))?;
    util::refuse_corrupt(path, &header)?;
    let version = c.version.unwrap_or(header.version);
    let order = c.refcount_order.unwrap_or(header.refcount_order);
    // qemu-img's two words for it: a width change asked together with the
    // downgrade, or the downgrade of an image whose width stays.
    if version < 3 && order != 4 && order == header.refcount_order {
        bail!("compat=0.10 requires refcount_bits=16");
    }
    if version < 3 && order != 4 {
        bail!(
            "Refcount widths other than 16 bits require compatibility level 1.1 or above \
             (use compat=1.1 or greater)"
        );
    }
    if version < 3 && c.lazy_refcounts == Some(true) {
        bail!(
            "Lazy refcounts only supported with compatibility level 1.1 and above \
             (use compat=1.1 or greater)"
        );
    }
    // As qemu-img since QEMU 6.0: the backing file is rebase's to change;
    // naming the one the image has (file and format both) is no change.
    if (c.backing_file.is_some() || c.backing_fmt.is_some())
        && (c.backing_file != header.backing_file || c.backing_fmt != header.backing_format)
    {
        return Err(crate::hint::Hinted::plain(
            "Cannot amend the backing file",
            "You can use 'qemu-img rebase' instead.",
        )
        .into());
    }
    let fail = |what: &str| format!("Error while amending options: {what}");
    // qemu-img's -p: 0% now, the refcount width change's walks, 100% at
    // the end.
    let mut progress = crate::progress::Progress::new(a.progress, 0);
    if version > header.version {
        amend::set_version(path, version).with_context(|| fail("upgrade"))?;
    }
    if let Some(on) = c.lazy_refcounts {
        amend::set_lazy_refcounts(path, on).map_err(|e| anyhow!(e))?;
    }
    if let Some(size) = c.size {
        let opts = OpenOptions {
            format: Some(Format::Qcow2),
            write: true,
            lock: false,
            backing: true,
            ..OpenOptions::default()
        };
        let bitmaps = util::KeptBitmaps::load(path)?;
        let mut img = Image::open(path, &opts)?;
        if size < img.size() {
            bail!("qcow2 doesn't support shrinking images yet");
        }
        img.resize(size.div_ceil(512) * 512)
            .and_then(|()| img.sync())
            .context("Error resizing image")?;
        drop(img);
        bitmaps.store(&[])?;
    }
    if order != header.refcount_order {
        amend::set_refcount_order(path, order, &mut |f| progress.fraction(f))
            .map_err(|e| anyhow!(e))?;
    }
    if version < header.version {
        amend::set_version(path, version)
            .map_err(|e| util::qcow2_failure(e, "Failed to turn zero into data clusters"))?;
    }
    progress.finish();
    Ok(0)
}
