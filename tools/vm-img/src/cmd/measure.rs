//! `vm-img measure`: the file size a new image needs, by qemu-img's
//! formulas: for qcow2, the metadata of a fully allocated image plus the
//! clusters that hold data (all of them with preallocation=falloc/full);
//! for raw, the virtual size.

use anyhow::{bail, Result};
use vm_image::qcow2::bitmaps;
use vm_image::qcow2::meta::Meta;
use vm_image::{Block, Format};
use vm_spec::{parse_size, BareNumber};

use super::options::{self, Prealloc};
use crate::cli::{MeasureArgs, OutputFormat};
use crate::util;

pub fn run(a: &MeasureArgs) -> Result<i32> {
    // qemu-img's order of complaints.
    super::option_help::check_lists(&a.options)?;
    if let Some(param) = &a.snapshot {
        crate::snapshot_copy::check_param(param)?;
    }
    match (&a.filename, &a.size) {
        (Some(_), Some(_)) => bail!("--size N cannot be used together with a filename."),
        (None, _) if a.image_opts || a.format.is_some() || a.snapshot.is_some() => {
            bail!("--image-opts, -f, and -l require a filename argument.")
        }
        (None, None) => bail!("Either --size N or one filename must be specified."),
        _ => {}
    }
    let out_fmt: Format =
        (a.output_format.parse()).map_err(|m: String| util::format_refused(&a.output_format, m))?;
    crate::secrets::Secrets::parse(&a.objects)?;
    let o = options::parse(&a.options)?;
    // The image named, or for -l a copy of it at the snapshot (removed
    // when done).
    let mut at_snapshot = None;
    let mut format = a.format.clone();
    let located = match &a.filename {
        Some(name) => {
            let (path, fmt, locking) =
                util::target_with_locking(name, format.as_deref(), a.image_opts)?;
            format = fmt;
            if let Some(param) = &a.snapshot {
                // Held (locked) while the copy is made.
                let _source = util::open_read(&path, format.as_deref(), a.force_share || !locking)?;
                // Beside the image, as convert -l makes its copy (a temp
                // folder may be memory).
                let dir = match path.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => ".".into(),
                };
                // A folder measure may not write in: the temp folder then.
                let copy =
                    crate::snapshot_copy::SnapshotCopy::make(&path, param, &dir).or_else(|_| {
                        crate::snapshot_copy::SnapshotCopy::make(
                            &path,
                            param,
                            &std::env::temp_dir(),
                        )
                    })?;
                let p = copy.path.clone();
                at_snapshot = Some(copy);
                format = Some("qcow2".into());
                Some((p, false))
            } else {
                Some((path, locking))
            }
        }
        None => None,
    };
    // (Both, or neither, were refused above.)
    let (required, fully, bitmaps) = match (&a.size, located.as_ref()) {
        (None, None) => bail!("Either --size N or one filename must be specified."),
        (Some(text), _) => {
            let size =
                parse_size(text, BareNumber::Bytes).map_err(|_| crate::hint::invalid_size())?;
            if size > i64::MAX as u64 {
                bail!(
                    "Invalid image size specified. Must be between 0 and {}.",
                    i64::MAX
                );
            }
            match out_fmt {
                Format::Raw => (size.div_ceil(512) * 512, size.div_ceil(512) * 512, None),
                Format::Qcow2 => {
                    let (r, f) = qcow2(&o, size, 0)?;
                    (r, f, None)
                }
            }
        }
        (None, Some((path, locking))) => {
            if format.is_none() && o.size.is_some() {
                bail!("--size N cannot be used together with a filename.");
            }
            let img = util::open_read(path, format.as_deref(), a.force_share || !locking)?;
            let size = img.size();
            match out_fmt {
                Format::Raw => (size, size, None),
                Format::Qcow2 => {
                    let cs = 1u64 << o.qcow2.cluster_bits;
                    let data = if o.qcow2.backing_file.is_some() {
                        // The new backing file may share nothing with this
                        // image: count every cluster, as qemu-img does.
                        size.div_ceil(cs) * cs
                    } else {
                        data_clusters(&img, size, cs)?
                    };
                    let (r, f) = qcow2(&o, size, data)?;
                    // Only a qcow2 v3 source can carry bitmaps, and only a
                    // v3 image keep them.
                    let source_v3 = img.header().is_some_and(|h| h.version >= 3);
                    let bitmaps = if o.qcow2.version >= 3 && source_v3 {
                        let meta =
                            Meta::open(path, vm_image::open_image_file(path, false, false)?)?;
                        Some(bitmaps::measure(&bitmaps::list(&meta)?, size, cs))
                    } else {
                        None
                    };
                    (r, f, bitmaps)
                }
            }
        }
    };
    drop(at_snapshot);
    match a.output {
        OutputFormat::Human => {
            println!("required size: {required}");
            println!("fully allocated size: {fully}");
            if let Some(b) = bitmaps {
                println!("bitmaps size: {b}");
            }
        }
        OutputFormat::Json => {
            // qemu-img's key order.
            let mut lines = Vec::new();
            if let Some(b) = bitmaps {
                lines.push(format!("    \"bitmaps\": {b}"));
            }
            lines.push(format!("    \"required\": {required}"));
            lines.push(format!("    \"fully-allocated\": {fully}"));
            println!("{{\n{}\n}}", lines.join(",\n"));
        }
    }
    Ok(0)
}

/// Bytes of the clusters that hold data (what reads as zero is left out).
fn data_clusters(img: &vm_image::Image, size: u64, cs: u64) -> Result<u64> {
    let mut total = 0;
    let mut counted_to = 0;
    for e in img.map(0, size)? {
        if e.zero || !e.data {
            continue;
        }
        // Whole clusters, each once.
        let lo = (e.start / cs * cs).max(counted_to);
        let hi = (e.start + e.length).div_ceil(cs) * cs;
        if hi > lo {
            total += hi - lo;
            counted_to = hi;
        }
    }
    Ok(total)
}

/// qemu-img's qcow2 figures: (required, fully allocated) for a disk of
/// `size` of which `data` bytes of clusters are written.
fn qcow2(o: &options::FormatOptions, size: u64, data: u64) -> Result<(u64, u64)> {
    let cs = 1u64 << o.qcow2.cluster_bits;
    // Extended L2 entries: 16 bytes each, as qemu-img measures them.
    let entry = if o.qcow2.extended_l2 {
        if o.qcow2.version < 3 {
            bail!("Extended L2 entries are only supported with compatibility level 1.1 and above (use version=v3 or greater)");
        }
        if cs < 16384 {
            bail!(
                "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes"
            );
        }
        16
    } else {
        8
    };
    // QEMU's bound: the L1 table (one entry per L2 table) fits 32 MiB,
    // which also keeps every sum below from overflowing.
    let l2_tables = size.div_ceil(cs).div_ceil(cs / entry);
    if l2_tables.saturating_mul(8) > 32 << 20 {
        bail!("The image size is too large (try using a larger cluster size)");
    }
    let virtual_size = size.div_ceil(cs) * cs;
    // A LUKS header takes whole clusters of its own.
    let luks = match o.encrypt.format.as_deref() {
        Some("luks") => {
            vm_image::crypto::luks::header_area_len(o.encrypt.luks()?.key_bytes).div_ceil(cs) * cs
        }
        _ => 0,
    };
    let fully = luks + prealloc_size(virtual_size, cs, o.qcow2.refcount_order, entry);
    let data = match o.prealloc {
        Some(Prealloc::Full | Prealloc::Falloc) => virtual_size,
        _ => data,
    };
    Ok((fully - virtual_size + data, fully))
}

/// Every byte of a fully allocated image: header, L2 tables (of `entry`
/// bytes an entry) and L1 tables, refcount structure, data.
fn prealloc_size(size: u64, cs: u64, refcount_order: u32, entry: u64) -> u64 {
    let mut meta = cs;
    let l2_entries = (size / cs).div_ceil(cs / entry) * (cs / entry);
    meta += l2_entries * entry;
    let l1_entries = (l2_entries * entry / cs).div_ceil(cs / 8) * (cs / 8);
    meta += l1_entries * 8;
    meta += refcount_metadata((meta + size) / cs, cs, refcount_order);
    meta + size
}

/// The refcount table and blocks that count `clusters` and themselves.
fn refcount_metadata(clusters: u64, cs: u64, order: u32) -> u64 {
    let per_table_cluster = cs / 8;
    let per_block = cs * 8 / (1 << order);
    let (mut table, mut blocks, mut n) = (0u64, 0u64, 0u64);
    loop {
        let last = n;
        blocks = (clusters + table + blocks).div_ceil(per_block);
        table = blocks.div_ceil(per_table_cluster);
        n = clusters + blocks + table;
        if n == last {
            return (blocks + table) * cs;
        }
    }
}
