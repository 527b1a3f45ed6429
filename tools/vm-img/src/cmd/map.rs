//! `vm-img map`: which layer and host offset holds each guest range.

use anyhow::{anyhow, Result};
use std::fmt::Write as _;
use vm_spec::{parse_size, BareNumber};

use crate::cli::{MapArgs, OutputFormat};
use crate::input::Input;

pub fn run(a: &MapArgs) -> Result<i32> {
    let img = Input::open(
        &a.filename,
        a.common.format.as_deref(),
        a.common.image_opts,
        a.force_share,
        &crate::secrets::Secrets::parse(&a.objects)?,
    )?;
    let num = |s: &Option<String>, what: &str| -> Result<Option<u64>> {
        s.as_deref()
            .map(|v| parse_size(v, BareNumber::Bytes).map_err(|e| anyhow!("Invalid {what}: {e}")))
            .transpose()
    };
    let start = num(&a.start, "start offset")?.unwrap_or(0);
    let len = num(&a.length, "max length")?.unwrap_or(u64::MAX);
    let extents = img.map(start, len)?;
    match a.output {
        OutputFormat::Json => {
            let lines: Vec<String> = extents
                .iter()
                .map(|e| {
                    // qemu-img 7.2's fields (Debian 12's; 8.0 added "compressed").
                    let mut s = format!(
                        "{{ \"start\": {}, \"length\": {}, \"depth\": {}, \"present\": {}, \"zero\": {}, \"data\": {}",
                        e.start, e.length, e.depth, e.present, e.zero, e.data
                    );
                    if let Some(o) = e.offset {
                        let _ = write!(s, ", \"offset\": {o}");
                    }
                    s + "}"
                })
                .collect();
            println!("[{}]", lines.join(",\n"));
        }
        OutputFormat::Human => {
            println!("{:<16}{:<16}{:<16}File", "Offset", "Length", "Mapped to");
            for e in &extents {
                // The table has no way to show data that has no place in
                // a file (compressed, encrypted, a quorum's): as qemu-img,
                // that ends the listing with an error, not a gap.
                if e.data && e.offset.is_none() {
                    anyhow::bail!("File contains external, encrypted or compressed clusters.");
                }
                // As qemu-img: data that reads as zero (over a hole) is
                // left out.
                if !(e.data && e.present && !e.zero) {
                    continue;
                }
                if let Some(o) = e.offset {
                    // Data in an external data file is mapped there.
                    let file = match img.image().map(|i| &i.layers()[e.depth as usize]) {
                        Some(layer) => match layer.header.as_ref() {
                            Some(h) if h.has_data_file() => h.data_file.clone().unwrap_or_default(),
                            _ => layer.path.display().to_string(),
                        },
                        None => img.display(&a.filename),
                    };
                    println!(
                        "{:<16}{:<16}{:<16}{file}",
                        hex(e.start),
                        hex(e.length),
                        hex(o)
                    );
                }
            }
        }
    }
    Ok(0)
}

/// printf's `%#x`: zero has no prefix.
fn hex(v: u64) -> String {
    if v == 0 {
        "0".into()
    } else {
        format!("{v:#x}")
    }
}
