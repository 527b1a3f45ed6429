//! Helpers shared by the subcommands: formats, human sizes,
//! atomic output files.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicPtr, Ordering};

use anyhow::{anyhow, bail, Context, Result};
use vm_image::{Format, Image, OpenOptions};

pub use crate::input::{target, target_with_locking};

pub fn parse_format(f: Option<&str>) -> Result<Option<Format>> {
    f.map(|s| s.parse::<Format>().map_err(|m| anyhow!(m)))
        .transpose()
}

/// QEMU formats that QEMU itself can only read: asked to make one, vm-img
/// answers as qemu-img does rather than calling the format unknown.
const READ_ONLY_FORMATS: [&str; 3] = ["bochs", "cloop", "dmg"];

/// The format of an image to be made (create's -f, convert's -O).
pub fn output_format(name: &str) -> Result<Format> {
    if READ_ONLY_FORMATS.contains(&name) {
        bail!("Format driver '{name}' does not support image creation");
    }
    name.parse().map_err(|m: String| format_refused(name, m))
}

/// A format name vm-img does not make or read: in qemu-img's words where
/// QEMU has no such driver either, naming the formats we have where it is
/// one of QEMU's (vmdk, vdi...).
pub fn format_refused(name: &str, ours: String) -> anyhow::Error {
    if QEMU_DRIVERS.contains(&name) {
        anyhow!(ours)
    } else {
        anyhow!("Unknown file format '{name}'")
    }
}

/// QEMU 7.2's block drivers: what `rebase -u -F` may record as a backing
/// format without opening the backing file, as qemu-img records it.
const QEMU_DRIVERS: [&str; 42] = [
    "blkdebug",
    "blklogwrites",
    "blkreplay",
    "blkverify",
    "bochs",
    "cloop",
    "compress",
    "copy-before-write",
    "copy-on-read",
    "dmg",
    "file",
    "ftp",
    "ftps",
    "gluster",
    "host_cdrom",
    "host_device",
    "http",
    "https",
    "iscsi",
    "luks",
    "nbd",
    "nfs",
    "null-aio",
    "null-co",
    "nvme",
    "parallels",
    "preallocate",
    "qcow",
    "qcow2",
    "qed",
    "quorum",
    "raw",
    "rbd",
    "replication",
    "snapshot-access",
    "ssh",
    "throttle",
    "vdi",
    "vhdx",
    "vmdk",
    "vpc",
    "vvfat",
];

/// A backing format name for a header that is written, not opened.
pub fn recorded_format(name: &str) -> Result<&str> {
    if QEMU_DRIVERS.contains(&name) {
        Ok(name)
    } else {
        bail!("Invalid format name: '{name}'")
    }
}

/// Whether `name` is a format no image can be made in (see above).
pub fn read_only_format(name: &str) -> bool {
    READ_ONLY_FORMATS.contains(&name)
}

/// Whether the file starts with LUKS's magic (probing, as qemu-img does).
pub fn is_luks(path: &Path) -> bool {
    use std::os::unix::fs::FileExt;
    let mut magic = [0u8; 6];
    vm_image::open_image_file(path, false, false).is_ok_and(|f| {
        f.read_exact_at(&mut magic, 0).is_ok() && magic == vm_image::crypto::luks::MAGIC
    })
}

/// Opens an image for reading, with locks unless `force_share`. A LUKS
/// file is never probed as raw (its ciphertext would be taken for the
/// disk): it is read only with its password.
pub fn open_read(path: &Path, format: Option<&str>, force_share: bool) -> Result<Image> {
    open_read_with(path, format, force_share, false)
}

/// As `open_read`, with O_DIRECT where `direct` (`cache.direct=on`).
pub fn open_read_with(
    path: &Path,
    format: Option<&str>,
    force_share: bool,
    direct: bool,
) -> Result<Image> {
    if format.is_none() && is_luks(path) {
        bail!(
            "'{}' is a LUKS image: it is read with its password (--object secret,id=ID,data=... \
             --image-opts driver=luks,file.filename=PATH,key-secret=ID)",
            path.display()
        );
    }
    let opts = OpenOptions {
        format: parse_format(format)?,
        lock: !force_share,
        direct,
        ..OpenOptions::default()
    };
    Image::open(path, &opts).map_err(|e| could_not_open(path, e))
}

/// qemu-img's error for an image that does not open: `Could not open
/// 'NAME': ` before the cause. Where the file itself did not open, QEMU's
/// file layer says `Could not open 'NAME': ` too, so qemu-img names the
/// file twice; so does this.
pub fn could_not_open(path: &Path, e: impl Into<anyhow::Error>) -> anyhow::Error {
    let e = e.into();
    // The file's own open failed: an I/O error about this path, or a bare
    // one (std's open).
    let source = match e.downcast_ref::<vm_image::Error>() {
        Some(vm_image::Error::Io { path: p, source }) if p == path => Some(source),
        Some(_) => None,
        None => e.downcast_ref::<io::Error>(),
    };
    if let Some(source) = source.filter(|s| {
        matches!(
            s.kind(),
            io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
        )
    }) {
        let name = path.display();
        return anyhow::Error::new(io::Error::new(source.kind(), source.to_string()))
            .context(format!("Could not open '{name}': Could not open '{name}'"));
    }
    e.context(format!("Could not open '{}'", path.display()))
}

/// qemu-img's human sizes: three significant digits and a binary unit,
/// "4 GiB", "196 KiB", "1.5 MiB".
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    // Pick the unit that keeps the number under 1000.
    let scaled = bytes as f64 * 1.024;
    let exp = if scaled < 1.0 {
        0
    } else {
        scaled.log2().floor() as usize
    };
    let i = (exp / 10).min(6);
    let v = bytes as f64 / (1u64 << (10 * i)) as f64;
    // printf's %0.3g: three significant digits, trailing zeros dropped.
    let decimals = if v == 0.0 {
        0
    } else {
        (2 - v.log10().floor() as i32).max(0) as usize
    };
    let text = trim_zeros(&format!("{v:.decimals$}"));
    format!("{text} {}B", UNITS[i])
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

/// Bytes the file occupies on disk (st_blocks), as qemu-img's disk size.
pub fn allocated_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

/// An output file written beside its final name and renamed into place
/// only when complete, so a failed or killed command never leaves a
/// half-written image where the user's file was. Block devices and other
/// special files are written in place.
#[derive(Debug)]
pub struct AtomicOutput {
    pub file: File,
    final_path: PathBuf,
    temp: Option<PathBuf>,
}

impl AtomicOutput {
    pub fn create(path: &Path, direct: bool) -> Result<Self> {
        if fs::metadata(path).is_ok_and(|m| m.is_dir()) {
            return Err(anyhow!(
                "Could not create '{}': Is a directory",
                path.display()
            ));
        }
        // Replacing an image that a VM or another tool is using would leave
        // it on the old file while the user thinks it has the new one.
        if path.exists() {
            // A lock held elsewhere is said after the file's name, as
            // qemu-img says it; other failures to open it are creating's.
            vm_image::lock::ImageLock::acquire(path, vm_image::lock::LockMode::Write).map_err(
                |e| match e {
                    vm_image::Error::Locked { .. } => anyhow::Error::new(e),
                    e => anyhow::Error::new(e)
                        .context(format!("Could not create '{}'", path.display())),
                },
            )?;
        }
        let special = fs::metadata(path)
            .is_ok_and(|m| m.file_type().is_block_device() || m.file_type().is_char_device());
        let mut o = fs::OpenOptions::new();
        o.read(true).write(true);
        if direct {
            o.custom_flags(libc::O_DIRECT);
        }
        if special {
            let file = o.open(path).map_err(|e| could_not_open(path, e))?;
            return Ok(Self {
                file,
                final_path: path.into(),
                temp: None,
            });
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .ok_or_else(|| anyhow!("'{}' is not a file name", path.display()))?;
        let temp = dir.join(format!(
            ".{}.vm-img-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        o.create_new(true).mode(0o644);
        let file = o
            .open(&temp)
            .with_context(|| format!("Could not create '{}'", path.display()))?;
        remove_on_signal(Some(&temp));
        Ok(Self {
            file,
            final_path: path.into(),
            temp: Some(temp),
        })
    }

    /// The path being written now (the temporary one until `commit`).
    pub fn working_path(&self) -> &Path {
        self.temp.as_deref().unwrap_or(&self.final_path)
    }

    /// Makes the file durable (unless `sync` is false) and moves it into place.
    pub fn commit(mut self, sync: bool) -> Result<()> {
        if sync {
            self.file
                .sync_all()
                .with_context(|| format!("Could not sync '{}'", self.final_path.display()))?;
        }
        if let Some(temp) = self.temp.take() {
            remove_on_signal(None);
            fs::rename(&temp, &self.final_path)
                .with_context(|| format!("Could not create '{}'", self.final_path.display()))?;
            if sync {
                let dir = self
                    .final_path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                File::open(dir).and_then(|d| d.sync_all()).ok();
            }
        }
        Ok(())
    }
}

impl Drop for AtomicOutput {
    fn drop(&mut self) {
        if let Some(t) = &self.temp {
            remove_on_signal(None);
            let _ = fs::remove_file(t);
        }
    }
}

/// The temporary output file a signal must not leave behind.
static SIGNAL_TEMP: AtomicPtr<libc::c_char> = AtomicPtr::new(std::ptr::null_mut());

/// SIGINT, SIGTERM, SIGHUP: remove the temporary output, then die of the
/// signal as before (exit status and all).
extern "C" fn on_fatal_signal(sig: libc::c_int) {
    let p = SIGNAL_TEMP.swap(std::ptr::null_mut(), Ordering::SeqCst);
    // SAFETY: unlink, signal and raise are async-signal-safe; `p` is a
    // NUL-terminated path leaked by `remove_on_signal` (never freed while
    // registered, so a handler running now reads valid memory).
    unsafe {
        if !p.is_null() {
            libc::unlink(p);
        }
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Registers `temp` to be removed if a signal ends vm-img (None: nothing
/// to remove any more). The handlers go in on first use.
fn remove_on_signal(temp: Option<&Path>) {
    use std::os::unix::ffi::OsStrExt;
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: installs a handler that only makes async-signal-safe
            // calls.
            unsafe { libc::signal(sig, on_fatal_signal as *const () as libc::sighandler_t) };
        }
    });
    let new = temp
        .and_then(|t| std::ffi::CString::new(t.as_os_str().as_bytes()).ok())
        .map_or(std::ptr::null_mut(), std::ffi::CString::into_raw);
    // The old path is leaked on purpose: a handler may be reading it; it
    // is one short string per output file.
    SIGNAL_TEMP.store(new, Ordering::SeqCst);
}

/// True for a block device (written in place, with no holes to rely on).
pub fn is_block_device(file: &File) -> bool {
    file.metadata()
        .is_ok_and(|m| m.file_type().is_block_device())
}

/// Gives an output file its size; a block device keeps its own, which must
/// be large enough (qemu-img: "Cannot grow device files").
pub fn set_output_len(file: &File, size: u64) -> Result<()> {
    if is_block_device(file) {
        let have = vm_image::file_len(file)?;
        if have < size {
            return Err(anyhow!(
                "Could not resize file: Cannot grow device files ({have} bytes, {size} asked)"
            ));
        }
        return Ok(());
    }
    file.set_len(size).context("Could not resize file")
}

/// Makes `[off, off + len)` of a block device read as zeroes (a fresh
/// file's holes do that by themselves).
pub fn zero_device_range(file: &File, off: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    // SAFETY: fallocate on an open descriptor; no memory is passed.
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
            off as i64,
            len as i64,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let zeroes = vec![0u8; len.min(1 << 20) as usize];
    let mut p = off;
    while p < off + len {
        let n = (off + len - p).min(zeroes.len() as u64) as usize;
        file.write_all_at(&zeroes[..n], p)?;
        p += n as u64;
    }
    Ok(())
}

/// Starts writeback of the file's dirty pages without waiting for it, so
/// the disk works while we read on and the final fsync has little left.
pub fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range on an open descriptor; no memory is passed.
    // Failure only means the final fsync does all the work.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// True when every byte is zero (word at a time).
pub fn is_zero(buf: &[u8]) -> bool {
    // SAFETY: align_to only reinterprets the aligned middle as u128, which
    // has no invalid bit patterns.
    let (head, mid, tail) = unsafe { buf.align_to::<u128>() };
    head.iter().all(|&b| b == 0) && mid.iter().all(|&w| w == 0) && tail.iter().all(|&b| b == 0)
}

pub fn io_context(e: io::Error, what: &str) -> anyhow::Error {
    anyhow::Error::new(e).context(what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes_like_qemu_img() {
        assert_eq!(human_size(4 << 30), "4 GiB");
        assert_eq!(human_size(24 << 30), "24 GiB");
        assert_eq!(human_size(200_704), "196 KiB");
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1536 << 10), "1.5 MiB");
        assert_eq!(human_size(1000), "0.977 KiB");
    }

    #[test]
    fn zero_detection() {
        let mut b = vec![0u8; 65537];
        assert!(is_zero(&b));
        b[65536] = 1;
        assert!(!is_zero(&b));
        b[65536] = 0;
        b[3] = 1;
        assert!(!is_zero(&b));
    }
}

/// The persistent bitmaps of an image written through the data path,
/// which clears their autoclear bit when it opens the image (QEMU would
/// then drop them as stale): loaded before the write, and stored after it
/// with the written ranges marked dirty in each enabled bitmap, as qemu-img
/// keeps them up to date. A write that fails leaves them dropped, never
/// wrong.
#[derive(Debug)]
pub struct KeptBitmaps(Option<vm_image::qcow2::bitmaps::Editor>);

impl KeptBitmaps {
    pub fn load(path: &Path) -> Result<Self> {
        vm_image::qcow2::bitmaps::Editor::keep(path)
            .map(Self)
            .with_context(|| format!("Could not read the bitmaps of '{}'", path.display()))
    }

    pub fn store(self, written: &[(u64, u64)]) -> Result<()> {
        let Some(ed) = self.0 else {
            return Ok(());
        };
        let what = || "Could not update the image's bitmaps";
        let mut ed = ed.refresh().with_context(what)?;
        ed.mark_written(written);
        ed.commit().with_context(what)
    }
}

/// qemu-img's report of a step that failed inside QEMU's qcow2 code: what
/// that code says first (a corruption it marked, a snapshot L1 table it
/// will not use), then `what` failed with the errno it returned. Other
/// errors pass through unchanged.
pub fn qcow2_failure(e: vm_image::Error, what: &str) -> anyhow::Error {
    match e {
        vm_image::Error::MarkedCorrupt { what: fault, .. } => {
            eprintln!(
                "qcow2: Marking image as corrupt: {fault}; further corruption events will be \
                 suppressed"
            );
            anyhow::anyhow!("{what}: {}", strerror(libc::EIO))
        }
        vm_image::Error::SnapshotL1(fault) => {
            crate::error_line(fault.message());
            anyhow::anyhow!("{what}: {}", strerror(fault.errno()))
        }
        e => anyhow::Error::from(e),
    }
}

/// An errno's words, as C's strerror gives them (what QEMU prints).
pub fn strerror(errno: i32) -> String {
    vm_image::os_text(&io::Error::from_raw_os_error(errno))
}

/// The format from the magic alone, for images too broken to open (check)
/// or whose metadata the command checks as it goes (amend). Opened as
/// every image is: a FIFO or other special file is refused, not waited on.
pub fn probe_magic(path: &Path) -> Result<vm_image::Format> {
    use std::io::Read;
    let mut magic = [0u8; 512];
    let n = vm_image::open_image_file(path, false, false)
        .map_err(|e| could_not_open(path, e))?
        .take(512)
        .read(&mut magic)
        .map_err(|e| could_not_open(path, e))?;
    Ok(vm_image::Format::probe(&magic[..n]))
}

/// A qcow2 image's header (with its L1 and refcount tables' places
/// checked), read through the same checked open as every image.
pub fn read_qcow2_header(path: &Path) -> vm_image::Result<vm_image::qcow2::header::Header> {
    let f = vm_image::open_image_file(path, false, false)?;
    Ok(vm_image::qcow2::meta::Meta::open(path, f)?.header)
}

/// As [`read_qcow2_header`], `None` where the file is not a qcow2 image
/// that parses.
pub fn qcow2_header(path: &Path) -> Option<vm_image::qcow2::header::Header> {
    read_qcow2_header(path).ok()
}

/// QEMU's refusal of an edit to an image marked corrupt (only `check -r`
/// writes into one).
pub fn refuse_corrupt(path: &Path, header: &vm_image::qcow2::header::Header) -> Result<()> {
    if header.corrupt() {
        return Err(could_not_open(
            path,
            vm_image::qcow2::corrupt::refuse_write(path),
        ));
    }
    Ok(())
}

/// Takes the write lock of an image to be edited in place, then opens it
/// (without its backing chain) to learn its format and header; the lock
/// lasts as long as the returned guard.
pub fn lock_for_edit(
    path: &Path,
    format: Option<vm_image::Format>,
) -> Result<(vm_image::lock::ImageLock, vm_image::Image)> {
    let lock = vm_image::lock::ImageLock::acquire(path, vm_image::lock::LockMode::Write)
        .map_err(|e| could_not_open(path, e))?;
    let opts = vm_image::OpenOptions {
        format,
        lock: false,
        backing: false,
        ..vm_image::OpenOptions::default()
    };
    // To be edited: an image marked corrupt is refused as QEMU refuses to
    // open it for writing (before imago's open, which has its own words).
    if format != Some(vm_image::Format::Raw) {
        if let Some(h) = qcow2_header(path) {
            refuse_corrupt(path, &h)?;
        }
    }
    let img = vm_image::Image::open(path, &opts).map_err(|e| could_not_open(path, e))?;
    Ok((lock, img))
}
