//! What the reading commands (map, convert, compare) read: an image
//! chain of local files, an NBD export, the null device, or a quorum of
//! any of them. A raw export, the null device and a quorum are one raw
//! disk with block status; a qcow2 inside an export is an image of one
//! layer (its backing file is not opened through the export).

pub mod blkdebug;
pub mod names;
pub mod quorum;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use vm_image::crypto::EncryptedImage;
use vm_image::host::Faults;
use vm_image::nbd::Client;
use vm_image::{Block, Extent, Format, Image};

pub use names::{locate, target, target_with_locking, Located};

use crate::secrets::Secrets;
use crate::util;

#[derive(Debug)]
pub enum Input {
    Image(Image),
    /// An encrypted image, opened with its password.
    Encrypted(EncryptedImage),
    Nbd(Client),
    /// Errors injected as QEMU's blkdebug injects them.
    Debug(Box<blkdebug::Debug>),
    /// Copies voted on, as QEMU's quorum does.
    Quorum(Box<quorum::Quorum>),
    Null {
        size: u64,
        read_zeroes: bool,
    },
}

impl Input {
    /// Opens what `name` names, read-only; `force_share` is `-U`;
    /// `secrets` holds the passwords of encrypted images.
    pub fn open(
        name: &Path,
        format: Option<&str>,
        image_opts: bool,
        force_share: bool,
        secrets: &Secrets,
    ) -> Result<Self> {
        names::share_conflict(name, image_opts, force_share)?;
        Self::open_located(
            locate(name, format, image_opts)?,
            name,
            force_share,
            secrets,
        )
    }

    /// As `open`, for a name already parsed.
    pub fn open_located(
        located: Located,
        name: &Path,
        force_share: bool,
        secrets: &Secrets,
    ) -> Result<Self> {
        match located {
            Located::File {
                path,
                format,
                locking,
                key_secret,
                direct,
            } => {
                let what = || format!("Could not open '{}'", path.display());
                let luks = format.as_deref() == Some("luks");
                match key_secret {
                    Some(id) => {
                        let password = secrets.get(&id)?;
                        let img = if luks {
                            EncryptedImage::open_luks(&path, password)
                        } else {
                            EncryptedImage::open_qcow2(&path, password)
                        };
                        img.map(Self::Encrypted).with_context(what)
                    }
                    None if luks => {
                        bail!("{}: Parameter 'key-secret' is required for cipher", what())
                    }
                    None => util::open_read_with(
                        &path,
                        format.as_deref(),
                        force_share || !locking,
                        direct,
                    )
                    .map(Self::Image),
                }
            }
            Located::Nbd { address, format } => {
                let uri = address.uri();
                // A format named over the export is refused before any
                // connection is made.
                let named = match format.as_deref() {
                    None => None,
                    Some(f) => Some(f.parse::<Format>().map_err(|_| {
                        anyhow::anyhow!(
                            "'{uri}': format '{f}' over NBD is not supported (raw and qcow2 are)"
                        )
                    })?),
                };
                let client =
                    Client::connect(&address).with_context(|| format!("Could not open '{uri}'"))?;
                let format = match named {
                    Some(f) => f,
                    None => probe_export(&client, &uri)?,
                };
                if format == Format::Raw {
                    // Read as itself: block status says where its data is.
                    return Ok(Self::Nbd(client));
                }
                let opts = vm_image::OpenOptions {
                    format: Some(format),
                    ..vm_image::OpenOptions::default()
                };
                Image::open_nbd(std::sync::Arc::new(client), &opts)
                    .map(Self::Image)
                    .with_context(|| format!("Could not open '{uri}'"))
            }
            Located::Null { size, read_zeroes } => Ok(Self::Null { size, read_zeroes }),
            Located::Debug { inner, rules } => {
                let inner = Self::open_located(*inner, name, force_share, secrets)?;
                let name = name.display().to_string();
                let debug = blkdebug::Debug::new(inner, rules, name)?;
                Ok(Self::Debug(Box::new(debug)))
            }
            Located::Quorum {
                children,
                settings,
                format,
            } => {
                let text = name.display().to_string();
                if let Some(f) = format.as_deref().filter(|&f| f != "raw") {
                    bail!(
                        "'{text}': format '{f}' over quorum is not supported (info describes \
                         it; the other commands read a quorum as a raw disk)"
                    );
                }
                let children = children
                    .into_iter()
                    .map(|c| Self::open_located(c, name, force_share, secrets))
                    .collect::<Result<Vec<_>>>()?;
                let q = quorum::Quorum::new(&text, children, &settings)?;
                Ok(Self::Quorum(Box::new(q)))
            }
        }
    }

    pub fn size(&self) -> u64 {
        match self {
            Self::Image(i) => i.size(),
            Self::Encrypted(e) => e.size(),
            Self::Nbd(c) => c.size(),
            Self::Debug(d) => d.inner.size(),
            Self::Quorum(q) => q.size(),
            Self::Null { size, .. } => *size,
        }
    }

    /// The local image, when this is one.
    pub fn image(&self) -> Option<&Image> {
        match self {
            Self::Image(i) => Some(i),
            Self::Debug(d) => d.inner.image(),
            _ => None,
        }
    }

    pub fn format(&self) -> Format {
        self.image().map_or(Format::Raw, Image::format)
    }

    pub fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        match self {
            Self::Image(i) => i.read_at(buf, pos),
            Self::Encrypted(e) => e.read_at(buf, pos),
            Self::Nbd(c) => Ok(c.read_at(buf, pos)?),
            Self::Debug(d) => d.read_at(buf, pos),
            Self::Quorum(q) => q.read_at(buf, pos),
            Self::Null { size, .. } => {
                if pos.checked_add(buf.len() as u64).is_none_or(|e| e > *size) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "read past the end of the null device",
                    ));
                }
                buf.fill(0);
                Ok(())
            }
        }
    }

    /// qemu-img map's extents for `[start, start + len)`. For an export
    /// or the null device, the offset is the disk offset itself (QEMU maps
    /// them onto themselves), and a range that is neither data nor zero
    /// is "not present".
    pub fn map(&self, start: u64, len: u64) -> io::Result<Vec<Extent>> {
        let end = start.saturating_add(len).min(self.size());
        let mut out: Vec<Extent> = Vec::new();
        let mut pos = start;
        while pos < end {
            let (length, data, zero) = match self {
                Self::Image(i) => return i.map(start, len),
                Self::Encrypted(e) => return e.map(start, len),
                Self::Debug(d) => return d.map(start, len),
                Self::Quorum(q) => return q.map(start, len),
                Self::Nbd(c) => {
                    let s = c.block_status(pos, end - pos)?;
                    (s.length, !s.hole, s.zero)
                }
                Self::Null { read_zeroes, .. } => (end - pos, false, *read_zeroes),
            };
            let present = data || zero;
            let e =
                Extent::single_layer((pos, length), present, data, zero, present.then_some(pos));
            Extent::push_merged(&mut out, e);
            pos += length;
        }
        Ok(out)
    }

    /// The name qemu-img prints for this input.
    pub fn display(&self, given: &Path) -> String {
        match self {
            Self::Image(i) => i.path().display().to_string(),
            Self::Encrypted(e) => e.path().display().to_string(),
            Self::Debug(d) => d.name().to_string(),
            Self::Nbd(c) => c.address().uri(),
            // QEMU names a null device with no option beyond its size by
            // its protocol alone, however it was given.
            Self::Null {
                read_zeroes: false, ..
            } => "null-co://".to_string(),
            Self::Quorum(_) | Self::Null { .. } => given.display().to_string(),
        }
    }
}

/// The image an edit writes, and blkdebug's rules over it where the name
/// says so (`blkdebug:CONFIG:FILE`, as QEMU's iotests fail edits).
#[derive(Debug)]
pub struct EditTarget {
    pub path: PathBuf,
    pub format: Option<String>,
    pub faults: Option<Arc<dyn Faults>>,
}

pub fn edit_target(name: &Path, format: Option<&str>, image_opts: bool) -> Result<EditTarget> {
    if let Located::Debug { inner, rules } = locate(name, format, image_opts)? {
        if let Located::File { path, format, .. } = *inner {
            blkdebug::check_placement(&rules, format.as_deref())?;
            let faults: Arc<dyn Faults> = blkdebug::Engine::new(rules);
            return Ok(EditTarget {
                path,
                format,
                faults: Some(faults),
            });
        }
    }
    let (path, format) = target(name, format, image_opts)?;
    Ok(EditTarget {
        path,
        format,
        faults: None,
    })
}

/// The format of what an export holds, guessed from its first sector
/// (vm-img's reading commands guess a local file's the same way).
pub fn probe_export(client: &Client, uri: &str) -> Result<Format> {
    let mut head = vec![0u8; client.size().min(512) as usize];
    client
        .read_at(&mut head, 0)
        .with_context(|| format!("Could not read '{uri}'"))?;
    Ok(Format::probe(&head))
}
