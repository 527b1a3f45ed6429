//! `vm-img create`.

use std::fmt::Write as _;
use std::os::fd::AsRawFd;

use anyhow::{anyhow, bail, Context, Result};
use vm_image::qcow2::header::CompressionType;
use vm_image::qcow2::writer::Qcow2Writer;
use vm_image::{resolve_backing, Block, Format};
use vm_spec::{parse_size, BareNumber};

use super::options::{self, Prealloc};
use crate::cli::CreateArgs;
use crate::hint;
use crate::input::{self, Input, Located};
use crate::secrets::Secrets;
use crate::util::{self, AtomicOutput};

pub fn run(a: &CreateArgs) -> Result<i32> {
    super::option_help::check_lists(&a.options)?;
    if super::option_help::wanted(&a.options) {
        let fmt = a.common.format.as_deref().unwrap_or("raw");
        if util::read_only_format(fmt) {
            bail!("Format driver '{fmt}' does not support image creation");
        }
        print!(
            "{}",
            super::option_help::creation(fmt, a.filename.is_some())?
        );
        return Ok(0);
    }
    let filename = a.file()?;
    if a.common.image_opts {
        bail!("--image-opts is not supported by create yet");
    }
    let secrets = Secrets::parse(&a.objects)?;
    if a.common.format.as_deref() == Some("luks") {
        return crate::encryption::luks_file(a, &secrets);
    }
    let fmt = match a.common.format.as_deref() {
        Some(f) if util::read_only_format(f) => bail!(
            "{}: Format driver '{f}' does not support image creation",
            filename.display()
        ),
        // QEMU's file protocol as a format: a raw file, named so.
        Some("file") | None => Format::Raw,
        Some(f) => util::output_format(f)?,
    };
    let fmt_name = if a.common.format.as_deref() == Some("file") {
        "file"
    } else {
        fmt.as_str()
    };
    let name = filename.display().to_string();
    let (mut o, mut size) = options_and_size(a, &name)?;
    if let Some(b) = &a.backing {
        o.qcow2.backing_file = Some(b.clone());
    }
    if let Some(f) = &a.backing_format {
        o.qcow2.backing_format = Some(f.clone());
    }
    // `file:NAME` and `json:{...}` name a local file; the Formatting line
    // and errors keep the name as given.
    let (path, _) = util::target(filename, None, false)?;
    if fmt == Format::Raw {
        if o.qcow2.backing_file.is_some() {
            bail!("{name}: Backing file not supported for file format 'raw'");
        }
        if o.cluster_size_given {
            bail!("{name}: Invalid parameter 'cluster_size' for format 'raw'");
        }
    }
    crate::encryption::qcow2_encryption(&name, fmt, &mut o, &secrets)?;
    if o.qcow2.backing_file.as_deref() == Some("") {
        bail!("{name}: Expected backing file name, got empty string");
    }
    if let Some(b) = o.qcow2.backing_file.clone() {
        let Some(bfmt) = o.qcow2.backing_format.clone() else {
            bail!("{name}: Backing file specified without backing format");
        };
        let bfmt: Format = bfmt.parse().map_err(|m: String| anyhow!(m))?;
        if !a.unsafe_backing {
            let what = || format!("{name}: Could not open backing image");
            // An NBD export or the null device is opened as named; a
            // local file relative to the new image's folder.
            let named = std::path::Path::new(&b);
            let len = match input::locate(named, Some(bfmt.as_str()), false).with_context(what)? {
                Located::File { .. } => {
                    let path = resolve_backing(&path, &b);
                    match util::open_read(&path, Some(bfmt.as_str()), true) {
                        Ok(img) => img.size(),
                        // An encrypted backing file's size is in its
                        // header; its data needs no key for that.
                        Err(e) => crate::encryption::encrypted_size(&path)
                            .ok_or(e)
                            .with_context(what)?,
                    }
                }
                _ => Input::open(named, Some(bfmt.as_str()), false, true, &secrets)
                    .with_context(what)?
                    .size(),
            };
            size.get_or_insert(len);
        }
    }
    // qemu-img rounds sizes up to whole 512-byte sectors, for every format
    // (and says the size it was given).
    let requested = size.ok_or_else(|| anyhow!("Image creation needs a size parameter"))?;
    let size = requested.div_ceil(512).saturating_mul(512);
    let prealloc = o.prealloc.unwrap_or(Prealloc::Off);
    if fmt == Format::Raw && prealloc == Prealloc::Metadata {
        bail!("Unsupported preallocation mode 'metadata' for format 'raw'");
    }
    if !a.common.quiet {
        println!("{}", describe(&name, fmt_name, requested, &o, prealloc));
    }
    // What the format refuses, qemu-img says after the Formatting line,
    // with the file's name first.
    if let Some(e) = &o.refused {
        bail!("{name}: {e}");
    }
    if let Some(e) = qcow2_refusal(&o) {
        bail!("{name}: {e}");
    }
    // With an external data file the guest's clusters go there, at their
    // own offsets: the image gets the mapping (metadata) when anything is
    // preallocated, or when the data file must read as the raw disk.
    let data_file = o.qcow2.data_file.clone();
    let (image_prealloc, data_prealloc) = match &data_file {
        // The data file is raw: metadata preallocation is nothing there.
        Some(_) if prealloc != Prealloc::Off || o.qcow2.data_file_raw => (
            Prealloc::Metadata,
            if prealloc == Prealloc::Metadata {
                Prealloc::Off
            } else {
                prealloc
            },
        ),
        Some(_) => (Prealloc::Off, Prealloc::Off),
        None => (prealloc, Prealloc::Off),
    };
    let data_out = match &data_file {
        Some(d) => {
            let d = AtomicOutput::create(std::path::Path::new(d), false)?;
            write_image(
                &d,
                Format::Raw,
                size,
                &mut options::FormatOptions::default(),
                data_prealloc,
            )
            .with_context(|| name.clone())?;
            Some(d)
        }
        None => None,
    };
    let prealloc = image_prealloc;
    let out = AtomicOutput::create(&path, false)?;
    // QEMU's file layer gives every new file a 1 MiB hint by default.
    crate::prealloc::extent_size_hint(&out.file, o.extent_size_hint.unwrap_or(1 << 20));
    if o.nocow == Some(true) {
        crate::prealloc::no_copy_on_write(&out.file);
    }
    // Every failure from here on names the file (a full disk says which).
    write_image(&out, fmt, size, &mut o, prealloc).with_context(|| name.clone())?;
    if let Some(d) = data_out {
        d.commit(true)?;
    }
    out.commit(true)?;
    Ok(0)
}

/// What QEMU refuses about `data_file`, `data_file_raw` and a compression
/// type the compat level lacks, in its words.
fn qcow2_refusal(o: &options::FormatOptions) -> Option<&'static str> {
    let q = &o.qcow2;
    if q.data_file_raw && q.data_file.is_none() {
        Some("data-file-raw requires data-file")
    } else if q.data_file.is_some() && q.version < 3 {
        Some(
            "External data files are only supported with compatibility level 1.1 and above \
             (use version=v3 or greater)",
        )
    } else if q.compression_type != CompressionType::Zlib && q.version < 3 {
        Some(
            "Non-zlib compression type is only supported with compatibility level 1.1 and \
             above (use version=v3 or greater)",
        )
    } else if q.data_file_raw && q.backing_file.is_some() {
        Some("Backing file and data-file-raw cannot be used at the same time")
    } else {
        None
    }
}

/// Writes a new, empty image of `size` into `out` (shared with `dd`).
pub(crate) fn write_image(
    out: &AtomicOutput,
    fmt: Format,
    size: u64,
    o: &mut options::FormatOptions,
    prealloc: Prealloc,
) -> Result<()> {
    let file = match fmt {
        Format::Raw => {
            util::set_output_len(&out.file, size)?;
            if prealloc == Prealloc::Off {
                crate::prealloc::first_block(&out.file, size)?;
            }
            out.file.try_clone()?
        }
        Format::Qcow2 => {
            o.qcow2.size = size;
            let mut w = Qcow2Writer::new(out.file.try_clone()?, &o.qcow2)?;
            if let Some(area) = o.luks_area.take() {
                w.set_luks(area);
            }
            if o.aes {
                w.set_aes();
            }
            let laid_out = if prealloc == Prealloc::Off {
                w.finish_empty()?
            } else {
                w.finish_preallocated(matches!(prealloc, Prealloc::Falloc | Prealloc::Full))?
            };
            if let Err(mut w) = laid_out {
                if prealloc != Prealloc::Off {
                    w.preallocate_metadata()?;
                }
                w.finish()?;
            }
            out.file.try_clone()?
        }
    };
    // For qcow2, the data area the metadata preallocation mapped, which
    // ends where the file ends.
    let end = match fmt {
        Format::Raw => size,
        Format::Qcow2 => file.metadata()?.len().max(size),
    };
    match (prealloc, fmt) {
        (Prealloc::Falloc, _) | (Prealloc::Full, Format::Raw) => {
            crate::prealloc::grow(&file, 0, end, prealloc)?;
        }
        // qcow2 metadata is already in place: only the holes get zeroes.
        (Prealloc::Full, Format::Qcow2) => {
            let mut off = 0;
            while let Some((hole, stop)) = next_hole(&file, off, end) {
                crate::prealloc::grow(&file, hole, stop, Prealloc::Full)?;
                off = stop;
            }
        }
        (Prealloc::Off | Prealloc::Metadata, _) => {}
    }
    Ok(())
}

/// The next hole of `file` in `[from, end)`, from SEEK_HOLE / SEEK_DATA.
fn next_hole(file: &std::fs::File, from: u64, end: u64) -> Option<(u64, u64)> {
    // SAFETY: lseek moves only this descriptor's offset; no memory is passed.
    let hole = unsafe { libc::lseek(file.as_raw_fd(), from as i64, libc::SEEK_HOLE) };
    if hole < 0 || hole as u64 >= end {
        return None;
    }
    // SAFETY: as above.
    let next = unsafe { libc::lseek(file.as_raw_fd(), hole, libc::SEEK_DATA) };
    let stop = if next < 0 {
        end
    } else {
        (next as u64).min(end)
    };
    Some((hole as u64, stop))
}

/// The `-o` options and the size, checked in qemu-img's order: the size
/// argument first, then the options (their errors name the file), then
/// that the size was given once.
pub fn options_and_size(
    a: &CreateArgs,
    name: &str,
) -> Result<(options::FormatOptions, Option<u64>)> {
    let positional = match &a.size {
        Some(s) => Some(parse_size(s, BareNumber::Bytes).map_err(|_| hint::invalid_size())?),
        None => None,
    };
    let o = options::parse_for_create(&a.options).with_context(|| name.to_string())?;
    if positional.is_some() && o.size.is_some() {
        bail!("{name}: The image size must be specified only once");
    }
    let size = positional.or(o.size);
    Ok((o, size))
}

fn describe(name: &str, fmt: &str, size: u64, o: &options::FormatOptions, p: Prealloc) -> String {
    // A mode QEMU refuses is shown as given, before it says no.
    let prealloc = o
        .refused_prealloc
        .clone()
        .or_else(|| o.prealloc.map(|_| p.as_str().to_string()));
    if fmt != "qcow2" {
        let mut s = format!("Formatting '{name}', fmt={fmt} size={size}");
        nocow(&mut s, o);
        if let Some(p) = &prealloc {
            let _ = write!(s, " preallocation={p}");
        }
        hint(&mut s, o);
        return s;
    }
    let mut s = format!("Formatting '{name}', fmt=qcow2");
    if let Some(on) = o.encrypt.legacy {
        let _ = write!(s, " encryption={}", if on { "on" } else { "off" });
    }
    s += &o.encrypt.describe("encrypt.");
    let _ = write!(
        s,
        " cluster_size={} extended_l2={}",
        o.refused_cluster_size
            .unwrap_or(1u64 << o.qcow2.cluster_bits),
        if o.qcow2.extended_l2 { "on" } else { "off" }
    );
    if let Some(p) = &prealloc {
        let _ = write!(s, " preallocation={p}");
    }
    let _ = write!(
        s,
        " compression_type={}",
        escaped(o.compression_type.as_deref().unwrap_or("zlib"))
    );
    let _ = write!(s, " size={size}");
    if let Some(c) = &o.compat {
        let _ = write!(s, " compat={c}");
    }
    if let Some(b) = &o.qcow2.backing_file {
        let _ = write!(s, " backing_file={}", escaped(b));
    }
    if let Some(b) = &o.qcow2.backing_format {
        let _ = write!(s, " backing_fmt={}", escaped(b));
    }
    if let Some(d) = &o.qcow2.data_file {
        let _ = write!(s, " data_file={}", escaped(d));
    }
    if o.qcow2.data_file_raw {
        s.push_str(" data_file_raw=on");
    }
    let _ = write!(
        s,
        " lazy_refcounts={} refcount_bits={}",
        if o.qcow2.lazy_refcounts { "on" } else { "off" },
        o.refused_refcount_bits
            .clone()
            .unwrap_or_else(|| (1u32 << o.qcow2.refcount_order).to_string())
    );
    nocow(&mut s, o);
    hint(&mut s, o);
    s
}

fn nocow(s: &mut String, o: &options::FormatOptions) {
    if let Some(on) = o.nocow {
        let _ = write!(s, " nocow={}", if on { "on" } else { "off" });
    }
}

/// A string option's value as qemu-img prints it: commas doubled, as
/// they are written in an option list.
fn escaped(v: &str) -> String {
    v.replace(',', ",,")
}

fn hint(s: &mut String, o: &options::FormatOptions) {
    if let Some(h) = o.extent_size_hint {
        let _ = write!(s, " extent_size_hint={h}");
    }
}
