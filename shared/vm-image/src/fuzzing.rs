//! Entry points for fuzzing image parsing (the cargo-fuzz targets in fuzz/
//! and the stable replay test call these). Not part of the stable API.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::qcow2::check::{check, Repair};
use crate::qcow2::meta::Meta;
use crate::{Block, Format, Image, OpenOptions};

/// How much of a fuzzed image is mapped and read, so one input stays fast.
const MAP_LIMIT: u64 = 64 << 20;
const READ_LIMIT: usize = 1 << 20;

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn scratch_path() -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::var_os("VMTOOLS_FUZZ_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    dir.join(format!("vm-image-fuzz-{}-{n}.qcow2", std::process::id()))
}

/// Opens `data` as a qcow2 image (without its backing file: a fuzzed name
/// must not reach host files), maps and reads it, and checks it. Errors are
/// expected; panics, hangs and huge allocations are the bugs.
pub fn open_and_read(data: &[u8]) {
    let path = scratch_path();
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let opts = OpenOptions {
        format: Some(Format::Qcow2),
        lock: false,
        backing: false,
        ..OpenOptions::default()
    };
    if let Ok(img) = Image::open(&path, &opts) {
        let limit = img.size().min(MAP_LIMIT);
        if let Ok(extents) = img.map(0, limit) {
            let mut buf = vec![0u8; READ_LIMIT];
            for e in extents.iter().filter(|e| e.data).take(16) {
                let n = (e.length as usize).min(READ_LIMIT);
                let _ = img.read_at(&mut buf[..n], e.start);
            }
        }
        let mut buf = vec![0u8; 4096];
        let _ = img.read_at(&mut buf, 0);
    }
    if let Ok(f) = std::fs::File::open(&path) {
        if let Ok(meta) = Meta::open(&path, f) {
            let _ = check(&meta, Repair::None);
            let _ = meta.snapshots();
        }
    }
    let _ = std::fs::remove_file(&path);
}
