//! Opening one layer of a chain (and, through its header, the layers
//! below it): the checks before imago sees a file, the locks, and which
//! driver reads it (imago's raw or qcow2, or the extended-L2 view).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use imago::file::File as ImagoFile;
use imago::qcow2::Qcow2;
use imago::raw::Raw;
use imago::{DenyImplicitOpenGate, FormatAccess, FormatDriverBuilder, StorageOpenOptions};

use super::ext_l2::ExtView;
use super::files::{open_file, read_head, resolve_backing};
use super::storage::LayerFile;
use super::{Layer, OpenOptions, MAX_CHAIN};
use crate::host::Host;
use crate::lock::{ImageLock, LockMode};
use crate::qcow2::header::{CompressionType, Header};
use crate::{Error, Format, Result};

/// Where in the chain a layer is opened, and whether the chain may guess
/// backing formats (read-only opens of vm-img only).
#[derive(Debug, Clone, Copy)]
pub(super) enum Depth {
    Top { guess_backing: bool },
    Backing { guess_backing: bool },
}

pub(super) fn open_layer(
    path: &Path,
    format: Option<Format>,
    opts: &OpenOptions,
    depth: Depth,
    seen: &mut HashSet<PathBuf>,
    layers: &mut Vec<Layer>,
    locks: &mut Vec<ImageLock>,
) -> Result<FormatAccess<LayerFile>> {
    let (top, guess_backing) = match depth {
        Depth::Top { guess_backing } => (true, guess_backing),
        Depth::Backing { guess_backing } => (false, guess_backing),
    };
    let write = top && opts.write;
    let canonical = path.canonicalize().map_err(|e| {
        if top {
            Error::io(path, e)
        } else {
            Error::Backing {
                path: path.into(),
                message: e.to_string(),
            }
        }
    })?;
    if !seen.insert(canonical) {
        return Err(Error::corrupt(
            path,
            "backing chain loops back to this image",
        ));
    }
    if layers.len() >= MAX_CHAIN {
        return Err(Error::corrupt(path, "backing chain is too deep"));
    }
    if opts.lock {
        let mode = if write {
            LockMode::Write
        } else {
            LockMode::Read
        };
        locks.push(ImageLock::acquire(path, mode)?);
    }
    let (head, len) = read_head(path)?;
    let probed = format.is_none();
    let format = format.unwrap_or_else(|| Format::probe(&head));
    let header = layer_header(path, format, &head, len)?;
    if write && header.as_ref().is_some_and(Header::corrupt) {
        return Err(crate::qcow2::corrupt::refuse_write(path));
    }
    if let Some(h) = header.as_ref().filter(|h| h.extended_l2()) {
        // ext_l2.rs reads these; nothing writes them yet.
        let why = if write {
            Some("writing to it is not supported yet (convert it to an image without them)")
        } else if h.has_data_file() {
            Some("with an external data file it is not supported")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(Error::unsupported(
                path,
                format!("the image has extended L2 entries: {why}"),
            ));
        }
    }
    let file = open_file(path, write, opts.direct)?;
    let own = file.try_clone().map_err(|e| Error::io(path, e))?;
    let storage_opts = StorageOpenOptions::new()
        .filename(path)
        .write(write)
        .direct(opts.direct);
    let zstd = header
        .as_ref()
        .is_some_and(|h| h.compression_type == CompressionType::Zstd);
    let storage = LayerFile::new(
        ImagoFile::from_open_file(file, storage_opts).map_err(|e| Error::io(path, e))?,
        zstd,
    )
    .with_faults(if top { opts.faults.clone() } else { None });
    let backing_name = header.as_ref().and_then(|h| h.backing_file.clone());
    let backing_fmt = header.as_ref().and_then(|h| h.backing_format.clone());
    // Some(name) when the guest's clusters live in an external data file.
    let data_file_name = header
        .as_ref()
        .filter(|h| h.has_data_file())
        .map(|h| h.data_file.clone());
    let index = layers.len();
    layers.push(Layer {
        path: path.to_path_buf(),
        format,
        header,
        probed,
        file: Host::File(own),
        meta: OnceLock::new(),
    });
    match format {
        Format::Raw => {
            let raw = Raw::builder(storage)
                .write(write)
                .open(DenyImplicitOpenGate::default())
                .map_err(|e| Error::io(path, e))?;
            Ok(FormatAccess::new(raw))
        }
        Format::Qcow2 => {
            let backing = match backing_name {
                Some(name) if opts.backing => {
                    let bpath = resolve_backing(path, &name);
                    let bfmt = match backing_fmt.as_deref() {
                        Some(f) => Some(f.parse::<Format>().map_err(|m| Error::Backing {
                            path: bpath.clone(),
                            message: m,
                        })?),
                        None if guess_backing => None,
                        None => {
                            return Err(Error::UnrecordedBackingFormat {
                                image: path.to_path_buf(),
                                backing: name,
                            })
                        }
                    };
                    let sub = OpenOptions {
                        write: false,
                        faults: None,
                        ..opts.clone()
                    };
                    Some(
                        open_layer(
                            &bpath,
                            bfmt,
                            &sub,
                            Depth::Backing { guess_backing },
                            seen,
                            layers,
                            locks,
                        )
                        .map_err(|e| match e {
                            Error::Io { path, source } => Error::Backing {
                                path,
                                message: source.to_string(),
                            },
                            other => other,
                        })?,
                    )
                }
                _ => None,
            };
            if let Some(h) = layers[index].header.clone().filter(Header::extended_l2) {
                // Shown to imago as a raw disk over the decoded view.
                // Buffered even under O_DIRECT: the view reads subclusters
                // and table entries at any alignment (a read-only layer).
                let file = Host::File(open_file(path, false, false)?);
                let view = ExtView::open(file, h, backing)
                    .map_err(|e| Error::corrupt(path, e.to_string()))?;
                let raw = Raw::builder(LayerFile::ext(view))
                    .write(false)
                    .open(DenyImplicitOpenGate::default())
                    .map_err(|e| Error::io(path, e))?;
                return Ok(FormatAccess::new(raw));
            }
            let data_file = match &data_file_name {
                Some(name) => Some(open_data_file(path, name.as_deref(), write, opts, locks)?),
                None => None,
            };
            let q = Qcow2::<LayerFile>::builder(storage)
                .write(write)
                .backing(backing)
                .data_file(data_file)
                .open(DenyImplicitOpenGate::default())
                .map_err(|e| Error::corrupt(path, e.to_string()))?;
            Ok(FormatAccess::new(q))
        }
    }
}

/// A layer's qcow2 header from its first bytes (`None` for raw), refused
/// where imago must not open it.
pub(super) fn layer_header(
    path: &Path,
    format: Format,
    head: &[u8],
    len: u64,
) -> Result<Option<Header>> {
    if format == Format::Raw {
        return Ok(None);
    }
    let h = Header::parse(head, len).map_err(|m| Error::corrupt(path, m))?;
    h.check_snapshot_count(path)?;
    if h.crypt_method != 0 {
        return Err(Error::unsupported(
            path,
            "the image is encrypted: vm-img reads it given its password \
             (--object secret,id=ID,data=... --image-opts \
             driver=qcow2,file.filename=PATH,encrypt.key-secret=ID); \
             nothing else opens it yet",
        ));
    }
    if h.refcount_table_clusters == 0 {
        return Err(Error::corrupt(
            path,
            "image has no refcount table (check -r all builds one)",
        ));
    }
    Ok(Some(h))
}

/// Opens the external data file a qcow2 header names, locked as its image
/// is. Its name is taken as given, relative to the current folder, as QEMU
/// takes it (unlike a backing file's).
fn open_data_file(
    image: &Path,
    name: Option<&str>,
    write: bool,
    opts: &OpenOptions,
    locks: &mut Vec<ImageLock>,
) -> Result<LayerFile> {
    let name = name.ok_or_else(|| {
        Error::corrupt(
            image,
            "the image needs an external data file and names none",
        )
    })?;
    let path = Path::new(name);
    let what = |e: Error| Error::corrupt(image, format!("Could not open data file: {e}"));
    if opts.lock {
        let mode = if write {
            LockMode::Write
        } else {
            LockMode::Read
        };
        locks.push(ImageLock::acquire(path, mode).map_err(what)?);
    }
    let file = open_file(path, write, opts.direct).map_err(what)?;
    let storage_opts = StorageOpenOptions::new()
        .filename(path)
        .write(write)
        .direct(opts.direct);
    ImagoFile::from_open_file(file, storage_opts)
        .map(|f| LayerFile::new(f, false))
        .map_err(|e| what(Error::io(path, e)))
}
