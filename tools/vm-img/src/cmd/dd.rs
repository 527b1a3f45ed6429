//! `vm-img dd`: qemu-img's dd, copying `count` blocks of `bs` bytes from
//! block `skip` of the input into a new image of the output format. Zero
//! blocks are skipped (the new image reads as zero there); the output is
//! written beside its name and renamed into place after one fsync.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use vm_image::{Block, Format, Image, OpenOptions};
use vm_spec::{parse_size, BareNumber};

use super::create::write_image;
use super::options;
use crate::cli::DdArgs;
use crate::util::{self, is_zero, AtomicOutput};

/// Bytes copied per read and write, whatever the block size.
const CHUNK: u64 = 2 << 20;

struct Operands {
    input: PathBuf,
    output: PathBuf,
    bs: u64,
    count: Option<u64>,
    skip: u64,
}

fn parse(ops: &[String]) -> Result<Operands> {
    let (mut input, mut output, mut bs, mut count, mut skip) = (None, None, 512, None, 0);
    for op in ops {
        let (k, v) = op
            .split_once('=')
            .ok_or_else(|| anyhow!("unrecognized operand {op}"))?;
        let number = |what: &str| -> Result<u64> {
            parse_size(v, BareNumber::Bytes).map_err(|_| anyhow!("invalid number: '{v}' ({what})"))
        };
        match k {
            "if" => input = Some(PathBuf::from(v)),
            "of" => output = Some(PathBuf::from(v)),
            "bs" => {
                bs = number("bs")?;
                if bs == 0 {
                    bail!("invalid number: '{v}'");
                }
            }
            "count" => count = Some(number("count")?),
            "skip" => skip = number("skip")?,
            _ => bail!("unrecognized operand {op}"),
        }
    }
    match (input, output) {
        (Some(input), Some(output)) => Ok(Operands {
            input,
            output,
            bs,
            count,
            skip,
        }),
        _ => bail!("Must specify both input and output files"),
    }
}

pub fn run(a: &DdArgs) -> Result<i32> {
    let op = parse(&a.operands)?;
    let src = util::open_read(&op.input, a.format.as_deref(), a.force_share)?;
    let fmt: Format = a.output_format.parse().map_err(|m: String| anyhow!(m))?;
    let mut size = src.size();
    if let Some(c) = op.count {
        size = size.min(c.saturating_mul(op.bs));
    }
    // Skipping past the end makes an empty image, says so, and succeeds,
    // as dd(1) and qemu-img do.
    let start = op.skip.saturating_mul(op.bs);
    if start > size {
        crate::error_line(format_args!(
            "{}: cannot skip to specified offset",
            op.input.display()
        ));
    }
    let len = size.saturating_sub(start);
    let out = AtomicOutput::create(&op.output, false)?;
    let mut o = options::parse(&[])?;
    write_image(&out, fmt, len, &mut o, options::Prealloc::Off)
        .with_context(|| op.output.display().to_string())?;
    let dst = Image::open(
        out.working_path(),
        &OpenOptions {
            format: Some(fmt),
            write: true,
            lock: false,
            ..OpenOptions::default()
        },
    )
    .map_err(|e| crate::util::could_not_open(&op.output, e))?;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(CHUNK);
        let b = &mut buf[..n as usize];
        src.read_at(b, start + pos)
            .context("error while reading from input image file")?;
        if !is_zero(b) {
            dst.write_at(b, pos)
                .context("error while writing to output image file")?;
        }
        pos += n;
    }
    dst.flush()
        .with_context(|| format!("Could not write '{}'", op.output.display()))?;
    drop(dst);
    out.commit(true)?;
    Ok(0)
}
