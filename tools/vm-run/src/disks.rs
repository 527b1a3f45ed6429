//! Opening a spec's disks for the VMM: the format the spec names (never
//! probed), QEMU-compatible locks on every layer, O_DIRECT for the cache
//! modes that want it, and qcow2 L2 tables made ahead of the guest's
//! writes so a crash leaves at most leaked clusters.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use vm_image::lock::{ImageLock, LockMode};
use vm_image::qcow2::l2prep::prepare_l2_tables;
use vm_image::{Format, Image, OpenOptions};
use vm_spec::{Disk, DiskFormat, DiskState, IoMode, VmSpec};
use vmm::devices::virtio::blk::CachePolicy;
use vmm::DiskConfig;

/// A disk ready for the VMM; its locks last as long as this does.
#[derive(Debug)]
pub struct OpenDisk {
    pub config: DiskConfig,
    pub state: DiskState,
    /// The chain the VM reads and writes (`config.image` is this, or a
    /// wrapper around it while a live commit tracks the guest's writes).
    pub image: Arc<Image>,
    /// One per layer of `image`'s chain, with its path.
    locks: Vec<(PathBuf, LockMode, ImageLock)>,
}

/// The image format a spec names, for vm-image.
pub fn image_format(f: DiskFormat) -> Format {
    match f {
        DiskFormat::Raw => Format::Raw,
        DiskFormat::Qcow2 => Format::Qcow2,
    }
}

/// Opens every disk of `spec`, in order.
pub fn open_all(spec: &VmSpec) -> Result<Vec<OpenDisk>> {
    spec.disks.iter().map(open_one).collect()
}

/// Opens one disk of a spec.
pub fn open_one(d: &Disk) -> Result<OpenDisk> {
    open(d).with_context(|| format!("disk {}", d.id))
}

/// For `io: io_uring` (raw only, the spec checks): the image file again,
/// with the flags the cache mode asks for, for the ring to read and write.
fn uring_file(d: &Disk) -> Result<Option<File>> {
    if d.io != IoMode::IoUring {
        return Ok(None);
    }
    let mut o = std::fs::OpenOptions::new();
    o.read(true).write(!d.readonly);
    if d.cache.direct() {
        o.custom_flags(libc::O_DIRECT);
    }
    let f = o
        .open(&d.path)
        .with_context(|| format!("cannot open {} for io_uring", d.path.display()))?;
    Ok(Some(f))
}

impl OpenDisk {
    /// A live snapshot's new top for this disk: the qcow2 overlay that
    /// `d` names (the spec's disk with its new path), whose backing file
    /// must be this disk's top. Only the overlay is locked: the layers
    /// below are locked by `self` until it goes, after which the caller
    /// takes them with [`OpenDisk::lock_backing`]. The counters go on.
    pub fn overlay(&self, d: &Disk) -> Result<(OpenDisk, Vec<std::path::PathBuf>)> {
        let path = &d.path;
        let lock = ImageLock::acquire(path, LockMode::Write)
            .with_context(|| format!("cannot lock {}", path.display()))?;
        prepare_l2_tables(path, &[(0, u64::MAX)])
            .with_context(|| format!("preparing {}", path.display()))?;
        let image = Image::open(
            path,
            &OpenOptions {
                format: Some(Format::Qcow2),
                write: true,
                lock: false,
                direct: d.cache.direct(),
                backing: true,
                probe_backing: false,
                faults: None,
            },
        )
        .with_context(|| format!("cannot open {}", path.display()))?;
        let below = image.layers().get(1).map(|l| l.path.as_path());
        if !below.is_some_and(|b| vm_image::same_file(b, &self.state.top)) {
            bail!(
                "{}: its backing file is not {}, the disk's top",
                path.display(),
                self.state.top.display()
            );
        }
        let backing = image.layers()[1..].iter().map(|l| l.path.clone()).collect();
        let image = Arc::new(image);
        let mut config = self.config.clone();
        config.image = image.clone();
        config.uring_file = None;
        let disk = OpenDisk {
            config,
            state: DiskState {
                id: d.id.clone(),
                top: path.clone(),
                format: DiskFormat::Qcow2,
            },
            image,
            locks: vec![(path.clone(), LockMode::Write, lock)],
        };
        Ok((disk, backing))
    }

    /// Read locks on `layers` (a live snapshot's backing chain, once the
    /// old top's own write lock is gone).
    pub fn lock_backing(&mut self, layers: &[PathBuf]) -> Result<()> {
        for p in layers {
            let l = ImageLock::acquire(p, LockMode::Read)
                .with_context(|| format!("cannot lock {}", p.display()))?;
            self.locks.push((p.clone(), LockMode::Read, l));
        }
        Ok(())
    }

    /// Lets go of every lock (a migration's last pause: the destination
    /// opens the images next). [`OpenDisk::reopen`] takes them back.
    pub fn unlock(&mut self) {
        self.locks.clear();
    }

    /// Opens `d` afresh, locks and all, in place of this disk: after a
    /// migration that failed late, the destination may have touched the
    /// images' metadata (its L2 tables made ahead), so nothing cached
    /// here is trusted. The counters go on.
    pub fn reopen(&mut self, d: &Disk) -> Result<()> {
        let mut fresh = open(d)?;
        fresh.config.counters = Arc::clone(&self.config.counters);
        *self = fresh;
        Ok(())
    }

    /// Takes the write lock on `layer` of this disk's chain in place of its
    /// read lock (a live commit writes into it). Another process reading
    /// it (a clone on the same base) makes this fail; the read lock is
    /// then taken again.
    pub fn lock_for_commit(&mut self, layer: &Path) -> Result<()> {
        let k = self
            .locks
            .iter()
            .position(|(p, _, _)| p == layer)
            .ok_or_else(|| anyhow::anyhow!("{} is not locked by this disk", layer.display()))?;
        // Our own read lock refuses writers too: it goes first.
        let (p, _, old) = self.locks.remove(k);
        drop(old);
        match ImageLock::acquire(&p, LockMode::Write) {
            Ok(l) => {
                self.locks.insert(k, (p, LockMode::Write, l));
                Ok(())
            }
            Err(e) => {
                let back = ImageLock::acquire(&p, LockMode::Read)
                    .with_context(|| format!("cannot lock {} again", p.display()))?;
                self.locks.insert(k, (p.clone(), LockMode::Read, back));
                Err(anyhow::Error::new(e).context(format!(
                    "{} is in use by another process (a clone or a reader on the same image)",
                    p.display()
                )))
            }
        }
    }

    /// The disk now reads and writes `image` (a chain one layer shorter
    /// after a commit): its top is locked for writing, every layer below
    /// for reading, and the locks of layers no longer in the chain go.
    pub fn rechain(&mut self, image: Arc<Image>, format: DiskFormat) -> Result<()> {
        let want: Vec<(PathBuf, LockMode)> = image
            .layers()
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let mode = if i == 0 && !self.config.read_only {
                    LockMode::Write
                } else {
                    LockMode::Read
                };
                (l.path.clone(), mode)
            })
            .collect();
        let mut old = std::mem::take(&mut self.locks);
        let mut kept: Vec<Option<(PathBuf, LockMode, ImageLock)>> = want
            .iter()
            .map(|(p, m)| {
                let k = old.iter().position(|(q, n, _)| q == p && n == m)?;
                Some(old.remove(k))
            })
            .collect();
        // What is left is not wanted as it is (a layer gone, or a mode
        // that changes): released before the new locks are taken.
        drop(old);
        for (slot, (p, m)) in kept.iter_mut().zip(&want) {
            if slot.is_none() {
                let l = ImageLock::acquire(p, *m)
                    .with_context(|| format!("cannot lock {}", p.display()))?;
                *slot = Some((p.clone(), *m, l));
            }
        }
        self.locks = kept.into_iter().flatten().collect();
        self.state.top = image.path().to_path_buf();
        self.state.format = format;
        self.config.image = image.clone();
        self.config.uring_file = None;
        self.image = image;
        Ok(())
    }
}

fn open(d: &Disk) -> Result<OpenDisk> {
    let path = &d.path;
    if !path.exists() {
        bail!("image {} does not exist", path.display());
    }
    // A FIFO or character device would block the start: refuse it before
    // the lock or anything else opens the path.
    vm_image::open_image_file(path, false, false)?;
    let write = !d.readonly;
    let format = image_format(d.format);
    // The top layer is locked before anything touches it, as QEMU does; a
    // VM or qemu-io that holds it makes us stop here.
    let mode = if write {
        LockMode::Write
    } else {
        LockMode::Read
    };
    let mut locks = vec![(
        path.clone(),
        mode,
        ImageLock::acquire(path, mode)
            .with_context(|| format!("cannot lock {}", path.display()))?,
    )];
    if write && format == Format::Qcow2 {
        prepare_l2_tables(path, &[(0, u64::MAX)])
            .with_context(|| format!("preparing {}", path.display()))?;
    }
    let image = Image::open(
        path,
        &OpenOptions {
            format: Some(format),
            write,
            lock: false,
            direct: d.cache.direct(),
            backing: true,
            // DESIGN.md: a VM's formats are never guessed, at any depth.
            probe_backing: false,
            faults: None,
        },
    )
    .with_context(|| format!("cannot open {}", path.display()))?;
    for layer in &image.layers()[1..] {
        locks.push((
            layer.path.clone(),
            LockMode::Read,
            ImageLock::acquire(&layer.path, LockMode::Read)
                .with_context(|| format!("cannot lock {}", layer.path.display()))?,
        ));
    }
    let image = Arc::new(image);
    Ok(OpenDisk {
        image: image.clone(),
        config: DiskConfig {
            id: d.id.clone(),
            image: image.clone(),
            read_only: d.readonly,
            cache: CachePolicy {
                write_through: d.cache.write_through(),
                ignore_flush: !d.cache.honours_flush(),
            },
            serial: d.serial.clone().unwrap_or_default(),
            iothread: d.iothread,
            uring_file: uring_file(d)?.map(Arc::new),
            counters: Arc::default(),
        },
        state: DiskState {
            id: d.id.clone(),
            top: path.clone(),
            format: d.format,
        },
        locks,
    })
}
