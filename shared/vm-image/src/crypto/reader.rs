//! Reading encrypted images with their password: a qcow2 image with a
//! LUKS header (its clusters encrypted with the host offset's sector as
//! IV, as QEMU writes them) and a `luks` file (a LUKS header, then the
//! disk, IVs counted from the payload's start). Read-only, one layer: an
//! encrypted qcow2 image with a backing file is refused for now.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::luks::{self, Header as LuksHeader};
use super::{Cipher, Error, SECTOR};
use crate::image::{file_len, open_image_file, Extent};
use crate::qcow2::header::{CRYPT_AES, CRYPT_LUKS, OFFSET_MASK};
use crate::qcow2::meta::{L2Entry, Meta};

#[derive(Debug)]
enum Layout {
    /// A qcow2 image; `physical`: the IV counts host sectors (LUKS), not
    /// guest ones (the old AES).
    Qcow2 { meta: Box<Meta>, physical: bool },
    /// Where the payload starts in the file.
    Luks(u64),
}

#[derive(Debug)]
pub struct EncryptedImage {
    path: PathBuf,
    file: File,
    layout: Layout,
    cipher: Cipher,
    size: u64,
    /// The last L2 table read (its offset): reads go cluster by cluster.
    l2_cache: std::sync::Mutex<Option<(u64, std::sync::Arc<Vec<L2Entry>>)>>,
}

fn bad(path: &Path, e: impl std::fmt::Display) -> crate::Error {
    crate::Error::Invalid(format!("{}: {e}", path.display()))
}

/// The LUKS header area at `off` (`len` bytes), read and checked.
fn read_area(path: &Path, f: &File, off: u64, len: u64) -> crate::Result<(LuksHeader, Vec<u8>)> {
    if len > luks::MAX_AREA {
        return Err(bad(path, "LUKS header area too large"));
    }
    let mut area = vec![0u8; len as usize];
    f.read_exact_at(&mut area, off)
        .map_err(|e| crate::Error::io(path, e))?;
    let h = LuksHeader::parse(&area, len).map_err(|e| bad(path, e))?;
    Ok((h, area))
}

fn unlock(path: &Path, h: &LuksHeader, area: &[u8], password: &[u8]) -> crate::Result<Cipher> {
    let mk = h.unlock(area, password).map_err(|e| bad(path, e))?;
    Cipher::xts(&mk).map_err(|e: Error| bad(path, e))
}

impl EncryptedImage {
    /// An encrypted qcow2 image: LUKS, or QEMU's old AES-CBC (read to
    /// convert out of it; a wrong password there cannot be told, the data
    /// just reads as noise, as in QEMU).
    pub fn open_qcow2(path: &Path, password: &[u8]) -> crate::Result<Self> {
        let file = open_image_file(path, false, false)?;
        let meta = Meta::open(
            path,
            file.try_clone().map_err(|e| crate::Error::io(path, e))?,
        )?;
        let h = &meta.header;
        if h.crypt_method != CRYPT_LUKS && h.crypt_method != CRYPT_AES {
            return Err(bad(path, "not an encrypted qcow2 image"));
        }
        if h.backing_file.is_some() || h.has_data_file() {
            return Err(crate::Error::unsupported(
                path,
                "an encrypted image with a backing or data file is not read yet",
            ));
        }
        let physical = h.crypt_method == CRYPT_LUKS;
        let cipher = if physical {
            let (off, len) = h.crypto_area().ok_or_else(|| bad(path, "no LUKS header"))?;
            let (lh, area) = read_area(path, &file, off, len)?;
            unlock(path, &lh, &area, password)?
        } else {
            Cipher::qcow_aes(password)
        };
        let size = h.size;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            layout: Layout::Qcow2 {
                meta: Box::new(meta),
                physical,
            },
            cipher,
            size,
            l2_cache: std::sync::Mutex::default(),
        })
    }

    /// A `luks` file: the header, then the encrypted disk.
    pub fn open_luks(path: &Path, password: &[u8]) -> crate::Result<Self> {
        let file = open_image_file(path, false, false)?;
        let flen = file_len(&file).map_err(|e| crate::Error::io(path, e))?;
        let mut head = vec![0u8; luks::HEADER_LEN];
        file.read_exact_at(&mut head, 0)
            .map_err(|e| crate::Error::io(path, e))?;
        let lh = LuksHeader::parse(&head, u64::MAX).map_err(|e| bad(path, e))?;
        let payload = u64::from(lh.payload_offset) * SECTOR as u64;
        if payload > flen || payload > luks::MAX_AREA || payload < luks::HEADER_LEN as u64 {
            return Err(bad(path, "LUKS payload offset outside the file"));
        }
        let (lh, area) = read_area(path, &file, 0, payload)?;
        let cipher = unlock(path, &lh, &area, password)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            layout: Layout::Luks(payload),
            cipher,
            size: (flen - payload) / SECTOR as u64 * SECTOR as u64,
            l2_cache: std::sync::Mutex::default(),
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where guest byte `pos` is stored, and how many bytes from there
    /// stay in the same run: `Some(host)` for data, `None` for zeroes.
    fn locate(&self, pos: u64) -> io::Result<(Option<u64>, u64, bool)> {
        match &self.layout {
            Layout::Luks(payload) => Ok((Some(payload + pos), self.size - pos, true)),
            Layout::Qcow2 { meta, .. } => {
                let cs = meta.cluster_size();
                let per_l2 = meta.header.l2_entries();
                let cluster = pos / cs;
                let left = cs - pos % cs;
                let l1e = meta
                    .l1
                    .get((cluster / per_l2) as usize)
                    .copied()
                    .unwrap_or(0);
                let l2_at = l1e & OFFSET_MASK;
                if l2_at == 0 {
                    return Ok((None, left, false));
                }
                let l2 = self.l2_table(meta, l2_at)?;
                match l2.get((cluster % per_l2) as usize) {
                    Some(L2Entry::Data { host, .. }) => Ok((Some(host + pos % cs), left, true)),
                    Some(L2Entry::Zero { .. }) => Ok((None, left, true)),
                    Some(L2Entry::Compressed { .. }) => Err(io::Error::other(
                        "a compressed cluster in an encrypted image (QEMU never writes one)",
                    )),
                    Some(L2Entry::Unallocated) | None => Ok((None, left, false)),
                }
            }
        }
    }

    fn l2_table(&self, meta: &Meta, at: u64) -> io::Result<std::sync::Arc<Vec<L2Entry>>> {
        let mut cache = self
            .l2_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((off, t)) = cache.as_ref() {
            if *off == at {
                return Ok(t.clone());
            }
        }
        let t = std::sync::Arc::new(meta.read_l2(at).map_err(io::Error::other)?);
        *cache = Some((at, t.clone()));
        Ok(t)
    }

    /// The sector number the encrypted sector at `host` (guest `guest`)
    /// is keyed with.
    fn iv_sector(&self, host: u64, guest: u64) -> u64 {
        match &self.layout {
            Layout::Luks(payload) => (host - payload) / SECTOR as u64,
            Layout::Qcow2 { physical: true, .. } => host / SECTOR as u64,
            Layout::Qcow2 {
                physical: false, ..
            } => guest / SECTOR as u64,
        }
    }

    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > self.size)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "read past the end of the disk",
            ));
        }
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (host, run, _) = self.locate(pos)?;
            let n = (run.min((buf.len() - done) as u64)) as usize;
            let out = &mut buf[done..done + n];
            match host {
                None => out.fill(0),
                Some(h) => {
                    // Whole sectors around the range, decrypted.
                    let first = h / SECTOR as u64 * SECTOR as u64;
                    let end = (h + n as u64).div_ceil(SECTOR as u64) * SECTOR as u64;
                    let mut sectors = vec![0u8; (end - first) as usize];
                    self.file.read_exact_at(&mut sectors, first)?;
                    self.cipher
                        .decrypt(&mut sectors, self.iv_sector(first, pos - (h - first)));
                    let skip = (h - first) as usize;
                    out.copy_from_slice(&sectors[skip..skip + n]);
                }
            }
            done += n;
        }
        Ok(())
    }

    /// qemu-img map's extents: allocated clusters are data, zero clusters
    /// zero, the rest absent (no backing file).
    pub fn map(&self, start: u64, len: u64) -> io::Result<Vec<Extent>> {
        let end = start.saturating_add(len).min(self.size);
        let mut out = Vec::new();
        let mut pos = start;
        while pos < end {
            let (host, run, present) = self.locate(pos)?;
            let length = run.min(end - pos);
            // As QEMU: where encrypted data sits is not given out (reading
            // it there would give ciphertext).
            let e =
                Extent::single_layer((pos, length), present, host.is_some(), host.is_none(), None);
            Extent::push_merged(&mut out, e);
            pos += length;
        }
        Ok(out)
    }
}
