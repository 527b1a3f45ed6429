//! `vm-img check`: exit 0 clean, 1 not checked, 2 corruptions, 3 leaks
//! only, 63 no check for this format (qemu-img's codes).

use std::fs::OpenOptions as FsOpen;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Map, Value};
use vm_image::lock::{ImageLock, LockMode};
use vm_image::nbd::{Address, Client};
use vm_image::qcow2::check::{check, CheckReport, Repair, Signal};
use vm_image::qcow2::meta::Meta;
use vm_image::{resolve_backing, Format, Image, OpenOptions};

use crate::cli::{CheckArgs, OutputFormat, RepairMode};
use crate::input::Located;
use crate::util;

pub const NO_CHECK: i32 = 63;

pub fn run(a: &CheckArgs) -> Result<i32> {
    let repair = match a.repair {
        None => Repair::None,
        Some(RepairMode::Leaks) => Repair::Leaks,
        Some(RepairMode::All) => Repair::All,
    };
    let named = a.common.format.as_deref();
    if let Located::Nbd { address, format } =
        crate::input::locate(&a.filename, named, a.common.image_opts)?
    {
        return over_nbd(a, &address, format.as_deref(), repair);
    }
    let (path, format) = util::target(&a.filename, named, a.common.image_opts)?;
    let path = &path;
    let _lock = if a.force_share {
        None
    } else {
        let mode = if repair == Repair::None {
            LockMode::Read
        } else {
            LockMode::Write
        };
        Some(ImageLock::acquire(path, mode).map_err(|e| crate::util::could_not_open(path, e))?)
    };
    let format = match util::parse_format(format.as_deref())? {
        Some(f) => f,
        None => util::open_read(path, None, true)
            .map(|i| i.format())
            .or_else(|_| crate::util::probe_magic(path))?,
    };
    if format != Format::Qcow2 {
        crate::error_line("This image format does not support checks");
        return Ok(NO_CHECK);
    }
    let file = FsOpen::new()
        .read(true)
        .write(repair != Repair::None)
        .open(path)
        .map_err(|e| crate::util::could_not_open(path, e))?;
    let open = if repair == Repair::None {
        Meta::open_for_check
    } else {
        Meta::open_for_repair
    };
    let meta = open(path, file).map_err(|e| crate::util::could_not_open(path, e))?;
    // A missing or broken backing file means the image cannot be checked
    // (exit 1), as with qemu-img. The image's own tables are ours to judge.
    if let Some(name) = &meta.header.backing_file {
        if repair != Repair::None && meta.header.backing_format.is_none() {
            return Err(vm_image::Error::UnrecordedBackingFormat {
                image: path.clone(),
                backing: name.clone(),
            }
            .into());
        }
        let bpath = resolve_backing(path, name);
        let opts = OpenOptions {
            format: util::parse_format(meta.header.backing_format.as_deref())?,
            lock: !a.force_share,
            ..OpenOptions::default()
        };
        Image::open(&bpath, &opts)
            .with_context(|| format!("Could not open backing file '{}'", bpath.display()))?;
    }
    check_and_report(a, &meta, repair, || {
        let file = FsOpen::new().read(true).open(path)?;
        Ok(Meta::open(path, file)?)
    })
}

/// A qcow2 image inside an NBD export, checked (and repaired) through it.
/// It is opened alone: an image that names a backing file is not checked,
/// as qemu-img cannot check one whose backing file does not open.
fn over_nbd(a: &CheckArgs, address: &Address, format: Option<&str>, repair: Repair) -> Result<i32> {
    let uri = address.uri();
    let path = std::path::PathBuf::from(&uri);
    let client = Client::connect(address).map_err(|e| util::could_not_open(&path, e))?;
    let format = match util::parse_format(format)? {
        Some(f) => f,
        None => crate::input::probe_export(&client, &uri)?,
    };
    if format != Format::Qcow2 {
        crate::error_line("This image format does not support checks");
        return Ok(NO_CHECK);
    }
    if repair != Repair::None && client.read_only() {
        return Err(util::could_not_open(
            &path,
            anyhow!("the NBD export is read-only"),
        ));
    }
    let client = Arc::new(client);
    let open = if repair == Repair::None {
        Meta::open_for_check
    } else {
        Meta::open_for_repair
    };
    let meta = open(&path, Arc::clone(&client)).map_err(|e| util::could_not_open(&path, e))?;
    if meta.header.backing_file.is_some() {
        return Err(util::could_not_open(
            &path,
            anyhow!(
                "the image inside the NBD export has a backing file, which is not opened \
                 through an export"
            ),
        ));
    }
    check_and_report(a, &meta, repair, || {
        Ok(Meta::open(&path, Arc::clone(&client))?)
    })
}

/// Checks (and repairs) `meta`'s image, then checks it again through
/// `reopen` after a repair, and prints the result as asked.
fn check_and_report(
    a: &CheckArgs,
    meta: &Meta,
    repair: Repair,
    reopen: impl Fn() -> Result<Meta>,
) -> Result<i32> {
    let path = &meta.path;
    let first = match check(meta, repair) {
        Ok(r) => r,
        // A snapshot table past QEMU's limits fails the check, in
        // qemu-img's words, with how to repair it.
        Err(vm_image::Error::SnapshotTable { fault, .. }) => {
            crate::error_line(fault.check_message());
            let remedy = crate::hint::table_remedy(&fault);
            eprintln!("{}", remedy.text(&crate::program_name()));
            crate::error_line("Check failed: File too large");
            return Ok(1);
        }
        Err(e) => return Err(anyhow!(e)),
    };
    let report = if repair != Repair::None && (first.leaks_fixed > 0 || first.corruptions_fixed > 0)
    {
        // What the repairing pass found and did, then the re-check's own
        // findings, all on stderr before the summary on stdout: qemu-img's
        // stdout is a buffered stream, so that is the order its output
        // reaches a pipe (and QEMU's iotests) in.
        for line in &first.messages {
            eprintln!("{line}");
        }
        if first.signalled == Signal::Marked {
            // The repair marked the image corrupt: qemu-img's double check
            // then fails on its unusable image, and so does ours.
            if !a.common.quiet && a.output == OutputFormat::Human {
                summary(&first);
            }
            crate::error_line("Check failed: No medium found");
            return Ok(1);
        }
        let meta = reopen()?;
        let mut again = check(&meta, Repair::None).map_err(|e| anyhow!(e))?;
        again.leaks_fixed = first.leaks_fixed;
        again.corruptions_fixed = first.corruptions_fixed;
        if !a.common.quiet && a.output == OutputFormat::Human {
            for line in again.messages.drain(..) {
                eprintln!("{line}");
            }
            summary(&first);
        }
        again
    } else {
        first
    };
    if a.output == OutputFormat::Human && !a.common.quiet {
        for line in &report.messages {
            eprintln!("{line}");
        }
    }
    // qemu-img's last word when a part could not be checked, on stderr;
    // it reaches a pipe before the report on its buffered stdout.
    if report.check_errors > 0 {
        crate::error_line("Check failed");
    }
    match a.output {
        OutputFormat::Json => println!("{}", crate::json::pretty(&to_json(&report, path, "qcow2"))),
        OutputFormat::Human => {
            if !a.common.quiet {
                print_human(&report);
            }
        }
    }
    Ok(exit_code(&report))
}

/// What a repair fixed, before the check that follows it.
fn summary(r: &CheckReport) {
    println!(
        "The following inconsistencies were found and repaired:\n\n    {} leaked clusters\n    \
         {} corruptions\n\nDouble checking the fixed image now...",
        r.leaks_fixed, r.corruptions_fixed
    );
}

fn exit_code(r: &CheckReport) -> i32 {
    if r.check_errors > 0 {
        1
    } else if r.corruptions > 0 {
        2
    } else if r.leaks > 0 {
        3
    } else {
        0
    }
}

fn to_json(r: &CheckReport, path: &std::path::Path, format: &str) -> Value {
    let mut m = Map::new();
    m.insert("image-end-offset".into(), json!(r.image_end_offset));
    m.insert("total-clusters".into(), json!(r.total_clusters));
    m.insert("check-errors".into(), json!(r.check_errors));
    for (k, v) in [
        ("allocated-clusters", r.allocated_clusters),
        ("fragmented-clusters", r.fragmented_clusters),
        ("compressed-clusters", r.compressed_clusters),
        ("corruptions", r.corruptions),
        ("leaks", r.leaks),
        ("corruptions-fixed", r.corruptions_fixed),
        ("leaks-fixed", r.leaks_fixed),
    ] {
        if v > 0 {
            m.insert(k.into(), json!(v));
        }
    }
    m.insert("filename".into(), json!(path.display().to_string()));
    m.insert("format".into(), json!(format));
    Value::Object(m)
}

/// The report's stdout part (its messages went to stderr first).
fn print_human(r: &CheckReport) {
    if r.corruptions == 0 && r.leaks == 0 && r.check_errors == 0 {
        println!("No errors were found on the image.");
    } else {
        if r.corruptions > 0 {
            println!(
                "\n{} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.",
                r.corruptions
            );
        }
        if r.leaks > 0 {
            println!(
                "\n{} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.",
                r.leaks
            );
        }
        if r.check_errors > 0 {
            println!(
                "\n{} internal errors have occurred during the check.",
                r.check_errors
            );
        }
    }
    if r.total_clusters > 0 && r.allocated_clusters > 0 {
        let pct = |n: u64, d: u64| {
            if d == 0 {
                0.0
            } else {
                n as f64 * 100.0 / d as f64
            }
        };
        println!(
            "{}/{} = {:.2}% allocated, {:.2}% fragmented, {:.2}% compressed clusters",
            r.allocated_clusters,
            r.total_clusters,
            pct(r.allocated_clusters, r.total_clusters),
            pct(r.fragmented_clusters, r.allocated_clusters),
            pct(r.compressed_clusters, r.allocated_clusters),
        );
    }
    println!("Image end offset: {}", r.image_end_offset);
}
