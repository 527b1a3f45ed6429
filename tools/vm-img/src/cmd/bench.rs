//! `vm-img bench`: a timed run of reads or writes, as `qemu-img bench`
//! runs it and says it: COUNT requests of SIZE bytes, the first at
//! OFFSET, each STEP after the one before and wrapping at the disk's end,
//! DEPTH of them in flight at once; writes fill with a pattern byte and
//! may flush every N requests.
//!
//! QEMU keeps DEPTH requests in flight on one thread with asynchronous
//! I/O; here DEPTH threads (at most 256) each keep one in flight, which
//! is what the image's data path (imago, synchronous) can do. A flush
//! "drains" by waiting for the writes in flight, unless --no-drain.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use vm_image::lock::{ImageLock, LockMode};
use vm_image::{Block, Format, Image, OpenOptions};
use vm_spec::{parse_size, BareNumber};

use crate::cli::BenchArgs;
use crate::util;

/// Threads at most, whatever depth is asked for.
const MAX_THREADS: u64 = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    count: u64,
    depth: u64,
    size: u64,
    step: u64,
    offset: u64,
    pattern: u8,
    /// Flush after every this many writes (0: never).
    flush_interval: u64,
    drain: bool,
    direct: bool,
    write: bool,
}

fn plan(a: &BenchArgs) -> Result<Plan> {
    let count = a
        .count
        .parse::<u64>()
        .ok()
        .filter(|&c| i32::try_from(c).is_ok())
        .ok_or_else(|| anyhow!("Invalid request count specified"))?;
    // QEMU takes a depth of 0 and then never finishes; refused here.
    let depth = a
        .depth
        .parse::<u64>()
        .ok()
        .filter(|&d| (1..=i32::MAX as u64).contains(&d))
        .ok_or_else(|| anyhow!("Invalid queue depth specified"))?;
    let bytes = |v: &str, what: &str| {
        parse_size(v, BareNumber::Bytes)
            .ok()
            .filter(|&n| i32::try_from(n).is_ok())
            .ok_or_else(|| anyhow!("Invalid {what} specified"))
    };
    let size = bytes(&a.size, "buffer size")?;
    let step = match &a.step {
        Some(s) => bytes(s, "step size")?,
        None => size,
    };
    let offset = parse_size(&a.offset, BareNumber::Bytes)
        .map_err(|_| anyhow!("Invalid offset specified"))?;
    let pattern = match &a.pattern {
        Some(p) => p
            .parse::<u8>()
            .map_err(|_| anyhow!("Invalid pattern byte specified"))?,
        None => 0,
    };
    let flush_interval = match &a.flush_interval {
        Some(_) if !a.write => bail!("--flush-interval is only available in write tests"),
        Some(n) => n
            .parse::<u64>()
            .ok()
            .filter(|&n| i32::try_from(n).is_ok())
            .ok_or_else(|| anyhow!("Invalid flush interval specified"))?,
        None => 0,
    };
    if a.pattern.is_some() && !a.write {
        bail!("--pattern is only available in write tests");
    }
    let direct = match a.cache.as_deref() {
        Some("none" | "directsync") => true,
        None | Some("writeback" | "writethrough" | "unsafe") => a.nocache,
        Some(other) => bail!("Invalid cache option: {other}"),
    };
    if let Some(aio) = a.aio.as_deref() {
        if !matches!(aio, "threads" | "native" | "io_uring") {
            bail!("Invalid aio option: {aio}");
        }
    }
    if a.force_share && a.write {
        bail!(
            "Could not open '{}': force-share=on can only be used with read-only images",
            a.filename.display()
        );
    }
    Ok(Plan {
        count,
        depth,
        size,
        step,
        offset,
        pattern,
        flush_interval,
        drain: !a.no_drain,
        direct,
        write: a.write,
    })
}

impl Plan {
    /// Where request `i` goes: the first at the offset given, each next
    /// one a step further, modulo the disk's size (qemu-img's order).
    fn offset_of(&self, i: u64, disk: u64) -> u64 {
        if i == 0 || disk == 0 {
            return self.offset;
        }
        let at = u128::from(self.offset) + u128::from(i) * u128::from(self.step);
        (at % u128::from(disk)) as u64
    }

    /// The guest ranges the writes may touch, for the L2 tables made
    /// ready before the run.
    fn written_range(&self, disk: u64) -> (u64, u64) {
        let span = u128::from(self.count.saturating_sub(1)) * u128::from(self.step)
            + u128::from(self.size);
        if u128::from(self.offset) + span <= u128::from(disk) {
            (self.offset, span as u64)
        } else {
            (0, disk)
        }
    }
}

pub fn run(a: &BenchArgs) -> Result<i32> {
    let p = plan(a)?;
    let (path, format, locking) =
        util::target_with_locking(&a.filename, a.common.format.as_deref(), a.common.image_opts)?;
    let what = || format!("Could not open '{}'", a.filename.display());
    let mut opts = OpenOptions {
        format: util::parse_format(format.as_deref())?,
        write: a.write,
        lock: locking && !a.force_share,
        direct: p.direct,
        backing: true,
        ..OpenOptions::default()
    };
    // A write test holds the write lock from before its L2 tables are made
    // to its end (the opens under it take none: a second lock of ours
    // would meet the first).
    let _lock = if a.write && opts.lock {
        opts.lock = false;
        Some(
            ImageLock::acquire(&path, LockMode::Write)
                .map_err(|e| util::could_not_open(&path, e))?,
        )
    } else {
        None
    };
    if a.write {
        // Every L2 table the writes need, made in the crash-safe order
        // before the data path runs (docs/vm-img.md, "Crash safety").
        let probe = Image::open(
            &path,
            &OpenOptions {
                write: false,
                ..opts.clone()
            },
        )
        .with_context(what)?;
        let (disk, format) = (probe.size(), probe.format());
        drop(probe);
        if format == Format::Qcow2 {
            vm_image::qcow2::l2prep::prepare_l2_tables(&path, &[p.written_range(disk)])
                .with_context(what)?;
        }
    }
    let img = Image::open(&path, &opts).with_context(what)?;
    println!(
        "Sending {} {} requests, {} bytes each, {} in parallel (starting at offset {}, step size {})",
        p.count,
        if a.write { "write" } else { "read" },
        p.size,
        p.depth,
        p.offset,
        p.step
    );
    if p.flush_interval > 0 {
        println!("Sending flush every {} requests", p.flush_interval);
    }
    let start = Instant::now();
    requests(&img, &p)?;
    if a.write {
        img.flush()
            .map_err(|e| anyhow!("Failed flush request: {e}"))?;
    }
    println!(
        "Run completed in {:.3} seconds.",
        start.elapsed().as_secs_f64()
    );
    Ok(0)
}

/// Runs the requests on `depth` threads (at most MAX_THREADS); the first
/// failure stops them all and is the error.
fn requests(img: &Image, p: &Plan) -> Result<()> {
    let disk = img.size();
    let next = AtomicU64::new(0);
    let written = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let failure = Mutex::new(None::<String>);
    // Writes hold it shared; a draining flush takes it alone.
    let drain = RwLock::new(());
    let fail = |e: String| {
        stop.store(true, Ordering::Relaxed);
        if let Ok(mut f) = failure.lock() {
            f.get_or_insert(e);
        }
    };
    let write = p.write;
    std::thread::scope(|s| {
        for _ in 0..p.depth.min(MAX_THREADS) {
            s.spawn(|| {
                let mut buf = vec![p.pattern; p.size as usize];
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= p.count {
                        break;
                    }
                    let at = p.offset_of(i, disk);
                    // As qemu-img: a request past the end fails the run.
                    if at.checked_add(p.size).is_none_or(|end| end > disk) {
                        fail("Input/output error".into());
                        break;
                    }
                    let done = if write {
                        let _held = drain.read();
                        img.write_at(&buf, at)
                    } else {
                        img.read_at(&mut buf, at)
                    };
                    if let Err(e) = done {
                        fail(e.to_string());
                        break;
                    }
                    if write && p.flush_interval > 0 {
                        let n = written.fetch_add(1, Ordering::Relaxed) + 1;
                        if n % p.flush_interval == 0 {
                            let flushed = if p.drain {
                                let _alone = drain.write();
                                img.flush()
                            } else {
                                img.flush()
                            };
                            if let Err(e) = flushed {
                                fail(format!("flush: {e}"));
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    match failure.into_inner().ok().flatten() {
        Some(e) => bail!("Failed request: {e}"),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(offset: u64, step: u64, size: u64, count: u64) -> Plan {
        Plan {
            count,
            depth: 1,
            size,
            step,
            offset,
            pattern: 0,
            flush_interval: 0,
            drain: true,
            direct: false,
            write: false,
        }
    }

    #[test]
    fn offsets_wrap_at_the_disk_end_after_the_first() {
        let p = plan_of(512 << 10, 128 << 10, 64 << 10, 40);
        let mb = 1 << 20;
        let got: Vec<u64> = (0..6).map(|i| p.offset_of(i, mb)).collect();
        assert_eq!(
            got,
            [512, 640, 768, 896, 0, 128].map(|k: u64| k << 10).to_vec()
        );
        // The first request is where it was asked for, even past the end.
        assert_eq!(plan_of(mb, 4096, 4096, 3).offset_of(0, mb), mb);
        assert_eq!(
            plan_of(0, u64::MAX, 1, 3).offset_of(2, mb),
            (2 * u128::from(u64::MAX) % u128::from(mb)) as u64
        );
        assert_eq!(p.written_range(mb), (0, mb));
        assert_eq!(
            plan_of(4096, 4096, 4096, 3).written_range(mb),
            (4096, 3 * 4096)
        );
    }
}
