//! `vm-img info`: qemu-img's fields and names, human or JSON.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};
use vm_image::qcow2::bitmaps;
use vm_image::qcow2::header::{CompressionType, Header};
use vm_image::qcow2::meta::Meta;
use vm_image::{resolve_backing, Block, Format, Image, OpenOptions};

use crate::cli::{InfoArgs, OutputFormat};
use crate::input::{self, Input, Located};
use crate::util::{self, human_size};

pub fn run(a: &InfoArgs) -> Result<i32> {
    let mut infos = Vec::new();
    let secrets = crate::secrets::Secrets::parse(&a.objects)?;
    input::names::share_conflict(&a.filename, a.common.image_opts, a.force_share)?;
    let mut located = input::locate(&a.filename, a.common.format.as_deref(), a.common.image_opts)?;
    // blkdebug over a local image: info reads no data, so no rule fires;
    // the image is described under the name given.
    let mut shown_as = None;
    if let Located::Debug { inner, .. } = located {
        if matches!(*inner, Located::File { .. }) {
            shown_as = Some(a.filename.display().to_string());
        }
        located = *inner;
    }
    let Located::File {
        mut path,
        format: mut fmt,
        ..
    } = located
    else {
        // A qcow2 image read through NBD or a quorum (named, or probed
        // over NBD): what its header says.
        let named = located.format_over_protocol().map(str::to_string);
        let i = if matches!(named.as_deref(), None | Some("qcow2"))
            && matches!(located, Located::Nbd { .. } | Located::Quorum { .. })
        {
            let raw = Input::open_located(located.as_raw(), &a.filename, a.force_share, &secrets)?;
            if let Some(v) = describe_over(&raw, &a.filename, named.is_some())? {
                infos.push(v);
                return Ok(print(a, infos));
            }
            // Probed, and not a qcow2: the raw disk already open.
            raw
        } else {
            Input::open(
                &a.filename,
                a.common.format.as_deref(),
                a.common.image_opts,
                a.force_share,
                &secrets,
            )?
        };
        // An NBD export or the null device: a raw disk with a size, and
        // no file to measure (qemu-img's "disk size: unavailable").
        let mut v = json!({
            "virtual-size": i.size(),
            "filename": i.display(&a.filename),
            "format": "raw",
        });
        if let Input::Null { .. } = i {
            // QEMU's null device is its own format, taking no space.
            v["format"] = json!("null-co");
            v["actual-size"] = json!(0);
        }
        infos.push(v);
        return Ok(print(a, infos));
    };
    // Files already described, by their real path: a chain that comes back
    // to one loops (qemu-img names the file where it does).
    let mut seen = Vec::new();
    loop {
        let real = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if seen.contains(&real) {
            anyhow::bail!(
                "Backing file '{}' creates an infinite loop.",
                path.display()
            );
        }
        seen.push(real);
        let mut info = describe(&path, fmt.as_deref(), a.force_share)?;
        if let Some(name) = shown_as.take() {
            info["filename"] = Value::String(name);
        }
        let next = info
            .get("full-backing-filename")
            .and_then(Value::as_str)
            .map(PathBuf::from);
        let next_fmt = info
            .get("backing-filename-format")
            .and_then(Value::as_str)
            .map(str::to_string);
        infos.push(info);
        match next {
            Some(n) if a.backing_chain => {
                if infos.len() > 64 {
                    anyhow::bail!(
                        "Backing chain of '{}' is too deep or loops",
                        a.filename.display()
                    );
                }
                path = n;
                fmt = next_fmt;
            }
            _ => break,
        }
    }
    Ok(print(a, infos))
}

fn print(a: &InfoArgs, mut infos: Vec<Value>) -> i32 {
    match a.output {
        OutputFormat::Json => {
            let doc = if a.backing_chain {
                Value::Array(infos)
            } else {
                infos.pop().expect("one image")
            };
            println!("{}", crate::json::pretty(&doc));
        }
        OutputFormat::Human => {
            for (i, info) in infos.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print!("{}", human(info));
            }
        }
    }
    0
}

/// One image's description, without opening its backing file (as qemu-img).
pub fn describe(path: &Path, format: Option<&str>, force_share: bool) -> Result<Value> {
    if format == Some("luks") || (format.is_none() && util::is_luks(path)) {
        return describe_luks(path, force_share).map_err(|e| crate::util::could_not_open(path, e));
    }
    let opts = OpenOptions {
        format: util::parse_format(format)?,
        lock: !force_share,
        backing: false,
        ..OpenOptions::default()
    };
    let (format, size, header) = match Image::open(path, &opts) {
        Ok(img) => (img.format(), img.size(), img.header().cloned()),
        // Only what the data path refuses (never a lock held elsewhere).
        Err(e @ (vm_image::Error::Corrupt { .. } | vm_image::Error::Unsupported { .. })) => {
            header_only(path, &opts).ok_or_else(|| util::could_not_open(path, e))?
        }
        Err(e) => return Err(util::could_not_open(path, e)),
    };
    let mut m = Map::new();
    m.insert("filename".into(), json!(path.display().to_string()));
    m.insert("format".into(), json!(format.as_str()));
    m.insert("virtual-size".into(), json!(size));
    m.insert("actual-size".into(), json!(util::allocated_bytes(path)));
    let dirty = header.as_ref().is_some_and(Header::dirty);
    m.insert("dirty-flag".into(), json!(dirty));
    if let Some(h) = &header {
        m.insert("cluster-size".into(), json!(h.cluster_size()));
        if let Some(b) = &h.backing_file {
            m.insert("backing-filename".into(), json!(b));
            m.insert(
                "full-backing-filename".into(),
                json!(resolve_backing(path, b).display().to_string()),
            );
        }
        if let Some(f) = &h.backing_format {
            m.insert("backing-filename-format".into(), json!(f));
        }
        // The tables, read once, for the bitmaps and the snapshots.
        let opened = std::cell::OnceCell::new();
        let meta = |path: &Path| -> Result<&Meta> {
            if let Some(m) = opened.get() {
                return Ok(m);
            }
            let m = Meta::open(path, vm_image::open_image_file(path, false, false)?)?;
            Ok(opened.get_or_init(|| m))
        };
        let mut data = specific(h);
        if h.crypt_method != 0 {
            m.insert("encrypted".into(), json!(true));
            data.insert(
                "encrypt".into(),
                encrypt_json(path, h).map_err(|e| crate::util::could_not_open(path, e))?,
            );
        }
        if h.version >= 3 {
            let list =
                bitmaps::list(meta(path)?).map_err(|e| crate::util::could_not_open(path, e))?;
            if !list.is_empty() {
                data.insert("bitmaps".into(), list.iter().map(bitmap_json).collect());
            }
        }
        m.insert(
            "format-specific".into(),
            json!({"type": "qcow2", "data": data}),
        );
        if h.nb_snapshots > 0 {
            let snaps: Vec<Value> = meta(path)?
                .snapshots()
                .map_err(|e| util::could_not_open(path, e))?
                .iter()
                .map(super::snapshot::to_json)
                .collect();
            m.insert("snapshots".into(), Value::Array(snaps));
        }
    }
    Ok(Value::Object(m))
}

/// A qcow2 image inside an NBD export or a quorum, from its header alone
/// (`named`: the format was given; otherwise it is probed, and `None` is
/// returned for anything but qcow2). Its tables are not read: no bitmaps
/// or snapshots are listed, and its backing file's path is not known.
fn describe_over(raw: &Input, name: &Path, named: bool) -> Result<Option<Value>> {
    let what = || format!("Could not open '{}'", name.display());
    // The header and its extensions lie in the first cluster (2 MiB at most).
    let mut head = vec![0u8; raw.size().min(2 << 20) as usize];
    raw.read_at(&mut head, 0).with_context(what)?;
    if !named && Format::probe(&head) != Format::Qcow2 {
        return Ok(None);
    }
    let h = Header::parse(&head, raw.size())
        .map_err(|m| anyhow::anyhow!(m))
        .with_context(what)?;
    let mut m = Map::new();
    m.insert("filename".into(), json!(raw.display(name)));
    m.insert("format".into(), json!("qcow2"));
    m.insert("virtual-size".into(), json!(h.size));
    m.insert("dirty-flag".into(), json!(h.dirty()));
    m.insert("cluster-size".into(), json!(h.cluster_size()));
    if let Some(b) = &h.backing_file {
        m.insert("backing-filename".into(), json!(b));
    }
    if let Some(f) = &h.backing_format {
        m.insert("backing-filename-format".into(), json!(f));
    }
    if h.crypt_method != 0 {
        m.insert("encrypted".into(), json!(true));
    }
    m.insert(
        "format-specific".into(),
        json!({"type": "qcow2", "data": specific(&h)}),
    );
    Ok(Some(Value::Object(m)))
}

/// The format-specific fields a qcow2 header gives by itself.
fn specific(h: &Header) -> Map<String, Value> {
    let mut data = Map::new();
    data.insert(
        "compat".into(),
        json!(if h.version >= 3 { "1.1" } else { "0.10" }),
    );
    data.insert(
        "compression-type".into(),
        json!(match h.compression_type {
            CompressionType::Zlib => "zlib",
            CompressionType::Zstd => "zstd",
        }),
    );
    data.insert("refcount-bits".into(), json!(h.refcount_bits()));
    if h.version >= 3 {
        data.insert("lazy-refcounts".into(), json!(h.lazy_refcounts()));
        data.insert("corrupt".into(), json!(h.corrupt()));
        data.insert("extended-l2".into(), json!(h.extended_l2()));
        if let Some(d) = &h.data_file {
            data.insert("data-file".into(), json!(d));
        }
        if h.has_data_file() {
            data.insert("data-file-raw".into(), json!(h.data_file_raw()));
        }
    }
    data
}

/// A `luks` file: the header says where the disk starts; what follows
/// is its (encrypted) size.
fn describe_luks(path: &Path, force_share: bool) -> Result<Value> {
    let _lock = if force_share {
        None
    } else {
        Some(vm_image::lock::ImageLock::acquire(
            path,
            vm_image::lock::LockMode::Read,
        )?)
    };
    let f = vm_image::open_image_file(path, false, false)?;
    let len = vm_image::file_len(&f)?;
    let data = luks_json(&f, 0, len.min(vm_image::crypto::luks::MAX_AREA))?;
    let payload = data["payload-offset"].as_u64().unwrap_or(0);
    if payload > len {
        anyhow::bail!("LUKS payload offset past the end of the file");
    }
    Ok(json!({
        "filename": path.display().to_string(),
        "format": "luks",
        "virtual-size": (len - payload) / 512 * 512,
        "actual-size": util::allocated_bytes(path),
        "dirty-flag": false,
        "encrypted": true,
        "format-specific": {"type": "luks", "data": data},
    }))
}

/// qemu-img's description of an image's encryption: the format, and for
/// LUKS what its header says (never the key material).
fn encrypt_json(path: &Path, h: &Header) -> Result<Value> {
    let Some((off, len)) = h.crypto_area() else {
        return Ok(json!({"format": "aes"}));
    };
    let f = vm_image::open_image_file(path, false, false)?;
    let mut v = luks_json(&f, off, len)?;
    v["format"] = json!("luks");
    Ok(v)
}

/// What a LUKS header at `off` (in an area of `len` bytes) says, as
/// qemu-img shows it: never the key material.
fn luks_json(f: &std::fs::File, off: u64, len: u64) -> Result<Value> {
    use std::os::unix::fs::FileExt;
    use vm_image::crypto::luks;
    let mut head = vec![0u8; luks::HEADER_LEN.min(len as usize)];
    f.read_exact_at(&mut head, off)?;
    let l = luks::Header::parse(&head, len)?;
    let slots: Vec<Value> = l
        .slots
        .iter()
        .map(|s| {
            let at = u64::from(s.material_offset) * 512;
            if s.active {
                json!({"active": true, "iters": s.iterations, "key-offset": at, "stripes": s.stripes})
            } else {
                json!({"active": false, "key-offset": at})
            }
        })
        .collect();
    Ok(json!({
        "cipher-alg": if l.key_bytes == 64 { "aes-256" } else { "aes-128" },
        "cipher-mode": "xts",
        "ivgen-alg": "plain64",
        "hash-alg": l.hash.name(),
        "uuid": l.uuid,
        "slots": slots,
        "payload-offset": u64::from(l.payload_offset) * 512,
        "master-key-iters": l.mk_iterations,
    }))
}

/// A qcow2 image the data path will not open even to read (marked
/// corrupt, or with two backing format extensions): qemu-img still
/// describes it, and so do we, from the header our own parser checked.
fn header_only(path: &Path, opts: &OpenOptions) -> Option<(Format, u64, Option<Header>)> {
    if opts.format.is_some_and(|f| f != Format::Qcow2) {
        return None;
    }
    // Read under the same lock the open would have taken.
    let _lock = if opts.lock {
        Some(vm_image::lock::ImageLock::acquire(path, vm_image::lock::LockMode::Read).ok()?)
    } else {
        None
    };
    // Not a FIFO or other file a plain open would wait on.
    let file = vm_image::open_image_file(path, false, false).ok()?;
    let h = Meta::open(path, file).ok()?.header;
    Some((Format::Qcow2, h.size, Some(h)))
}

/// One bitmap as qemu-img describes it.
fn bitmap_json(b: &bitmaps::Bitmap) -> Value {
    let mut flags = Vec::new();
    if b.in_use() {
        flags.push("in-use");
    }
    if b.enabled() {
        flags.push("auto");
    }
    json!({"name": b.name(), "granularity": b.granularity(), "flags": flags})
}

fn human(v: &Value) -> String {
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "image: {}", s("filename"));
    let _ = writeln!(out, "file format: {}", s("format"));
    let _ = writeln!(
        out,
        "virtual size: {} ({} bytes)",
        human_size(n("virtual-size")),
        n("virtual-size")
    );
    match v.get("actual-size") {
        Some(_) => {
            let _ = writeln!(out, "disk size: {}", human_size(n("actual-size")));
        }
        None => out += "disk size: unavailable\n",
    }
    if v.get("encrypted").and_then(Value::as_bool) == Some(true) {
        out += "encrypted: yes\n";
    }
    if v.get("cluster-size").is_some() {
        let _ = writeln!(out, "cluster_size: {}", n("cluster-size"));
    }
    if v.get("backing-filename").is_some() {
        let b = s("backing-filename");
        let full = s("full-backing-filename");
        if v.get("full-backing-filename").is_none() {
            // Read through a protocol with no folder to resolve it in.
            let _ = writeln!(out, "backing file: {b} (cannot determine actual path)");
        } else if b == full {
            let _ = writeln!(out, "backing file: {b}");
        } else {
            let _ = writeln!(out, "backing file: {b} (actual path: {full})");
        }
    }
    if v.get("backing-filename-format").is_some() {
        let _ = writeln!(out, "backing file format: {}", s("backing-filename-format"));
    }
    if v.get("dirty-flag").and_then(Value::as_bool) == Some(true) {
        out += "cleanly shut down: no\n";
    }
    if let Some(snaps) = v.get("snapshots").and_then(Value::as_array) {
        out += &super::snapshot::table(snaps);
    }
    if let Some(data) = v
        .pointer("/format-specific/data")
        .and_then(Value::as_object)
    {
        out += "Format specific information:\n";
        crate::json::human(&Value::Object(data.clone()), 1, &mut out);
    }
    out
}
