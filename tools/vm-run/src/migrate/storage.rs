//! Storage migration (virsh migrate --copy-storage-all, --migrate-disks):
//! the contents of disks that are not on shared storage travel in the
//! stream, into images the destination has made with the same size.
//!
//! The source serves each such disk through a write tracker from before
//! its first read, so a range the guest writes while the copy runs is
//! sent again in a later round, and the last ones in the final pause
//! (which drains the queues). Disk contents go as data and zeroed
//! ranges, by the disk's index in the hello. The destination opens these
//! images at once (the source never held them), writes what arrives, and
//! syncs them before it says it runs; disks on shared storage it opens
//! only once the source has let go of them, as before.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use vm_control::MigrateOptions;
use vm_image::tracked::{merge, Tracked};
use vm_image::{Block, Image, OpenOptions};
use vm_spec::VmSpec;
use vmm::state::stream::{HelloDisk, Origin, Writer};

use crate::monitor::Machine;
use crate::timefmt::log;

/// Disk ranges are whole sectors.
const SECTOR: u64 = 512;
/// Bytes per disk record.
const CHUNK: u64 = 1 << 20;

/// The disks whose contents go along, as indexes into the spec: those
/// `--migrate-disks` names, or with `--copy-storage-all` every writable
/// one. A read-only disk is the shared kind (an ISO, a common base) and is
/// never copied.
pub(crate) fn chosen(spec: &VmSpec, o: &MigrateOptions) -> Result<Vec<usize>> {
    if o.disks.is_empty() {
        return Ok(if o.copy_storage_all {
            (0..spec.disks.len())
                .filter(|&i| !spec.disks[i].readonly)
                .collect()
        } else {
            Vec::new()
        });
    }
    let mut out = Vec::new();
    for id in &o.disks {
        let i = spec
            .disks
            .iter()
            .position(|d| &d.id == id)
            .ok_or_else(|| anyhow!("--migrate-disks: the VM has no disk {id}"))?;
        if spec.disks[i].readonly {
            bail!("--migrate-disks: disk {id} is read-only, so shared: it is not copied");
        }
        if out.contains(&i) {
            bail!("--migrate-disks: disk {id} is named twice");
        }
        out.push(i);
    }
    Ok(out)
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// Every disk of the VM for the hello: its size, whether it is copied,
/// and where its image's files are.
pub(crate) fn hello_disks(m: &Machine, copy: &[usize]) -> Vec<HelloDisk> {
    let boot = boot_id();
    m.disks
        .iter()
        .enumerate()
        .map(|(i, d)| HelloDisk {
            id: d.state.id.clone(),
            size: d.image.size(),
            copy: copy.contains(&i),
            origin: boot.clone().map(|boot_id| Origin {
                boot_id,
                files: d
                    .image
                    .layers()
                    .iter()
                    .filter_map(|l| l.file.as_file()?.metadata().ok())
                    .map(|md| (md.dev(), md.ino()))
                    .collect(),
            }),
        })
        .collect()
}

/// A disk whose contents go along, as the copy thread sees it.
pub(crate) struct Outgoing {
    /// Its index in the spec and the hello.
    pub(crate) index: u32,
    /// The chain the copy reads (all of it: the destination gets one
    /// image with the guest's view).
    pub(crate) image: Arc<Image>,
    pub(crate) tracker: Arc<Tracked>,
}

/// Serves each chosen disk through a write tracker. On an error the
/// disks tracked so far are served plainly again.
pub(crate) fn track(m: &mut Machine, running: bool, copy: &[usize]) -> Result<Vec<Outgoing>> {
    let mut out = Vec::new();
    for &i in copy {
        let image = m.disks[i].image.clone();
        let tracker = Arc::new(Tracked::new(image.clone()));
        if let Err(e) = m.serve_disk(running, i, tracker.clone()) {
            let done: Vec<usize> = out.iter().map(|o: &Outgoing| o.index as usize).collect();
            untrack(m, running, &done);
            return Err(e.context(format!("disk {}", m.spec.disks[i].id)));
        }
        out.push(Outgoing {
            index: i as u32,
            image,
            tracker,
        });
    }
    Ok(out)
}

/// The disks are served plainly again (the migration failed before its
/// last pause; after it, the disks are opened afresh instead).
pub(crate) fn untrack(m: &mut Machine, running: bool, disks: &[usize]) {
    for &i in disks {
        let plain: Arc<dyn Block> = m.disks[i].image.clone();
        if let Err(e) = m.serve_disk(running, i, plain) {
            log(&format!(
                "migration: untracking disk {}: {e:#}",
                m.spec.disks[i].id
            ));
        }
    }
}

/// What a send of disk contents did: records and payload bytes.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Sent {
    pub(crate) records: u64,
    pub(crate) bytes: u64,
}

impl std::ops::AddAssign for Sent {
    fn add_assign(&mut self, o: Self) {
        self.records += o.records;
        self.bytes += o.bytes;
    }
}

impl Outgoing {
    /// The first pass: every range of the guest's view, data as data and
    /// what reads as zero as zeroed ranges. `after` runs after each
    /// record with the stream's bytes (progress, pace, cancel).
    pub(crate) fn send_all<W: std::io::Write>(
        &self,
        w: &mut Writer<W>,
        after: &mut dyn FnMut(u64) -> Result<()>,
    ) -> Result<Sent> {
        let mut sent = Sent::default();
        let size = self.image.size();
        let mut pos = 0;
        // A window at a time: the map of a large, fragmented image is
        // not held whole.
        while pos < size {
            let n = (size - pos).min(1 << 30);
            for e in self.image.map(pos, n)? {
                if e.data {
                    sent += self.send_range(w, e.start, e.length, after)?;
                } else {
                    w.disk_zeroes(self.index, e.start, e.length)?;
                    sent.records += 1;
                    after(w.bytes)?;
                }
            }
            pos += n;
        }
        Ok(sent)
    }

    /// The ranges the guest wrote since they were last taken, merged with
    /// `pending` (taken before and not sent yet).
    pub(crate) fn take_dirty(&self, pending: &mut Vec<(u64, u64)>) -> u64 {
        pending.extend(self.tracker.take_dirty());
        merge(pending);
        pending.iter().map(|r| r.1).sum()
    }

    /// Sends `ranges` (written by the guest), whole sectors around them.
    pub(crate) fn send_ranges<W: std::io::Write>(
        &self,
        w: &mut Writer<W>,
        ranges: &[(u64, u64)],
        after: &mut dyn FnMut(u64) -> Result<()>,
    ) -> Result<Sent> {
        let size = self.image.size();
        let mut sent = Sent::default();
        for &(start, len) in ranges {
            let s = start / SECTOR * SECTOR;
            let e = start.saturating_add(len).div_ceil(SECTOR) * SECTOR;
            let e = e.min(size);
            if s < e {
                sent += self.send_range(w, s, e - s, after)?;
            }
        }
        Ok(sent)
    }

    /// Reads `[start, start + len)` chunk by chunk: a chunk of zeroes goes
    /// as a zeroed range, any other as data.
    fn send_range<W: std::io::Write>(
        &self,
        w: &mut Writer<W>,
        start: u64,
        len: u64,
        after: &mut dyn FnMut(u64) -> Result<()>,
    ) -> Result<Sent> {
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> =
                std::cell::RefCell::new(vec![0u8; CHUNK as usize]);
        }
        let mut sent = Sent::default();
        let mut pos = start;
        while pos < start + len {
            let n = (start + len - pos).min(CHUNK);
            BUF.with_borrow_mut(|buf| -> Result<()> {
                let b = &mut buf[..n as usize];
                self.image
                    .read_at(b, pos)
                    .with_context(|| format!("reading disk {} at {pos}", self.index))?;
                if vmm::memory::is_zero(b) {
                    w.disk_zeroes(self.index, pos, n)?;
                } else {
                    w.disk(self.index, pos, b)?;
                    sent.bytes += n;
                }
                Ok(())
            })?;
            sent.records += 1;
            after(w.bytes)?;
            pos += n;
        }
        Ok(sent)
    }
}

/// At the destination, before anything moves: each disk here has the
/// source's size, and a copied one is writable and not the very image
/// (or a backing file of it) that it comes from.
pub(crate) fn check(spec: &VmSpec, disks: &[HelloDisk]) -> Result<()> {
    if disks.len() != spec.disks.len() {
        bail!(
            "the source has {} disks and the spec here {}",
            disks.len(),
            spec.disks.len()
        );
    }
    let here = boot_id();
    for h in disks {
        let d = spec
            .disks
            .iter()
            .find(|d| d.id == h.id)
            .ok_or_else(|| anyhow!("the source has disk {} and the spec here has not", h.id))?;
        let p = &d.path;
        let format = crate::disks::image_format(d.format);
        // Only the header is read: the source may hold the image's locks.
        let size = Image::open(
            p,
            &OpenOptions {
                format: Some(format),
                write: false,
                lock: false,
                direct: false,
                backing: false,
                probe_backing: false,
                faults: None,
            },
        )
        .map_err(|e| anyhow!("disk {}: {}: {e}", h.id, p.display()))?
        .size();
        if size != h.size {
            bail!(
                "disk {}: {} is {size} bytes and the source's disk {} bytes",
                h.id,
                p.display(),
                h.size
            );
        }
        if !h.copy {
            continue;
        }
        if d.readonly {
            bail!(
                "disk {}: read-only here, so its contents cannot arrive",
                h.id
            );
        }
        if let (Some(o), Some(b)) = (&h.origin, &here) {
            if &o.boot_id == b && is_origin(p, o) {
                bail!(
                    "disk {}: {} is the source's own image (or one it is built on); \
                     give the copy an image of its own, or leave the disk shared",
                    h.id,
                    p.display()
                );
            }
        }
    }
    Ok(())
}

fn is_origin(p: &Path, o: &Origin) -> bool {
    std::fs::metadata(p).is_ok_and(|md| o.files.contains(&(md.dev(), md.ino())))
}

/// At the destination: where disk records land, by their index in the
/// hello.
pub(crate) struct Targets {
    images: Vec<Option<Arc<Image>>>,
    pub(crate) records: u64,
}

impl Targets {
    /// `opened[i]` is spec disk `i`'s image where its contents arrive.
    pub(crate) fn new(hello: &[HelloDisk], spec: &VmSpec, opened: &[Option<Arc<Image>>]) -> Self {
        let images = hello
            .iter()
            .map(|h| {
                let i = spec.disks.iter().position(|d| d.id == h.id)?;
                opened.get(i)?.clone().filter(|_| h.copy)
            })
            .collect();
        Self { images, records: 0 }
    }

    fn target(&self, disk: u32, offset: u64, len: u64) -> Result<&Arc<Image>> {
        let img = self
            .images
            .get(disk as usize)
            .and_then(Option::as_ref)
            .ok_or_else(|| anyhow!("disk contents for disk {disk}, which is not copied"))?;
        let inside = offset.checked_add(len).is_some_and(|end| end <= img.size());
        if !inside || offset % SECTOR != 0 || len % SECTOR != 0 {
            bail!("a disk range that is not whole sectors inside disk {disk} ({offset} + {len})");
        }
        Ok(img)
    }

    pub(crate) fn write(&mut self, disk: u32, offset: u64, data: &[u8]) -> Result<()> {
        let img = self.target(disk, offset, data.len() as u64)?;
        img.write_at(data, offset)
            .with_context(|| format!("writing disk {disk} at {offset}"))?;
        self.records += 1;
        Ok(())
    }

    /// Zeroes where the image here does not read as zero already (a new
    /// image mostly does: its unallocated ranges stay unallocated).
    pub(crate) fn zero(&mut self, disk: u32, offset: u64, len: u64) -> Result<()> {
        let img = self.target(disk, offset, len)?;
        for e in img.map(offset, len)? {
            if e.data {
                img.write_zeroes(e.start, e.length)
                    .with_context(|| format!("zeroing disk {disk} at {}", e.start))?;
            }
        }
        self.records += 1;
        Ok(())
    }

    /// Everything that arrived is on stable storage.
    pub(crate) fn sync(&self) -> Result<()> {
        for (i, img) in self.images.iter().enumerate() {
            if let Some(img) = img {
                img.sync().with_context(|| format!("syncing disk {i}"))?;
            }
        }
        Ok(())
    }
}
