//! The files under an image: opening them safely, their sizes, and the
//! names backing files are given by.

use std::fs::{File, OpenOptions as FsOpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// True when `a` and `b` name one file (device and inode), however the
/// paths are spelt; false when either cannot be read.
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Resolves a backing file name as QEMU does: relative to the folder of the
/// image that names it. QEMU also takes `file:PATH` and a `json:` name
/// whose file is a local file; those give their path. A name for any other
/// protocol stays as it is, and then fails to open as a missing file.
pub fn resolve_backing(image: &Path, name: &str) -> PathBuf {
    let local = local_file(name).unwrap_or_else(|| name.to_string());
    let p = Path::new(&local);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        image.parent().unwrap_or(Path::new("")).join(p)
    }
}

/// The local file a `file:` or `json:` backing name names.
fn local_file(name: &str) -> Option<String> {
    if let Some(path) = name.strip_prefix("file:") {
        return Some(path.to_string());
    }
    let v: serde_json::Value =
        serde_json::from_str(&double_quoted(name.strip_prefix("json:")?)).ok()?;
    // A format over a local file, as QEMU writes one:
    // {"driver": "qcow2", "file": {"driver": "file", "filename": P}},
    // or over blkdebug over one (its faults are the tool's to apply).
    let mut file = v.get("file")?;
    if file.get("driver").is_some_and(|d| d == "blkdebug") {
        file = file.get("image")?;
        if let Some(path) = file.as_str() {
            return Some(path.to_string());
        }
    }
    if file.get("driver").is_some_and(|d| d != "file") {
        return None;
    }
    file.get("filename")?.as_str().map(str::to_string)
}

/// QEMU's JSON takes strings in single quotes too (its iotests write
/// them so): those become standard double-quoted strings.
fn double_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                out.push('"');
            }
            (Some(q), _) if c == q => {
                quote = None;
                out.push('"');
            }
            (Some(_), '\\') => match chars.next() {
                // An escaped single quote needs no escape in double quotes.
                Some('\'') => out.push('\''),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            },
            (Some('\''), '"') => out.push_str("\\\""),
            _ => out.push(c),
        }
    }
    out
}

/// Opens an image file: a regular file or a block device only. A FIFO or a
/// character device would block the open or every read, so the open does
/// not wait (O_NONBLOCK, which regular files and disks ignore) and the
/// type is checked before anything is read.
pub fn open_image_file(path: &Path, write: bool, direct: bool) -> Result<File> {
    let mut o = FsOpenOptions::new();
    o.read(true).write(write);
    let mut flags = libc::O_NONBLOCK;
    if direct {
        flags |= libc::O_DIRECT;
    }
    o.custom_flags(flags);
    let f = o.open(path).map_err(|e| Error::io(path, e))?;
    let ft = f.metadata().map_err(|e| Error::io(path, e))?.file_type();
    if !(ft.is_file() || std::os::unix::fs::FileTypeExt::is_block_device(&ft)) {
        return Err(Error::unsupported(
            path,
            "not a regular file or a block device",
        ));
    }
    Ok(f)
}

pub(super) fn open_file(path: &Path, write: bool, direct: bool) -> Result<File> {
    open_image_file(path, write, direct)
}

/// Reads up to one cluster of the file's start (2 MiB at most) for probing
/// and header parsing, through a buffered descriptor (O_DIRECT-safe).
pub(super) fn read_head(path: &Path) -> Result<(Vec<u8>, u64)> {
    let f = open_image_file(path, false, false)?;
    let len = file_len(&f).map_err(|e| Error::io(path, e))?;
    let mut buf = vec![0u8; len.min(2 << 20) as usize];
    f.read_exact_at(&mut buf, 0)
        .map_err(|e| Error::io(path, e))?;
    Ok((buf, len))
}

/// Size of a regular file or a block device.
pub fn file_len(f: &File) -> io::Result<u64> {
    let md = f.metadata()?;
    if md.file_type().is_file() {
        return Ok(md.len());
    }
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer we pass, which
    // lives for the call; the fd is open.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), 0x8008_1272, &raw mut size) };
    if r < 0 {
        return Ok(md.len());
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_backing_names_as_qemu_takes_them() {
        let single = "json:{'driver': 'qcow2', 'file': {'driver': 'file', 'filename': '/a/b'}}";
        assert_eq!(local_file(single).as_deref(), Some("/a/b"));
        let debug = "json:{'driver': 'qcow2', 'file': {'driver': 'blkdebug', 'inject-error': \
                     [{'event': 'write_aio', 'once': true}], 'image': {'driver': 'file', \
                     'filename': 'x\\'y\"z'}}}";
        assert_eq!(local_file(debug).as_deref(), Some("x'y\"z"));
        let bare = r#"json:{"driver": "raw", "file": {"driver": "blkdebug", "image": "/c"}}"#;
        assert_eq!(local_file(bare).as_deref(), Some("/c"));
        // Another protocol, or no file at all, names no local file.
        assert_eq!(
            local_file("json:{'file': {'driver': 'nbd', 'path': '/s'}}"),
            None
        );
        assert_eq!(local_file("json:{'driver': 'qcow2'}"), None);
        assert_eq!(local_file("json:{'unterminated"), None);
        assert_eq!(local_file("file:/d").as_deref(), Some("/d"));
    }
}
