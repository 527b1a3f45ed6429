//! `commit-disk` on the control socket: a live blockcommit, which is how
//! a disk snapshot is deleted while the VM runs. One overlay of a disk's
//! chain is merged into the layer right below it (its base).
//!
//! A thread of its own copies the overlay's data into the base while the
//! guest runs. Where the overlay is the disk's top, the guest keeps
//! writing it, so its writes are tracked and copied again in later rounds.
//! Then, in one pause, the last writes are copied and the chain changes:
//! the base becomes the top, or the layer above the overlay is rebased
//! onto the base. The base's descriptor comes from the tool, open for
//! writing, so only a caller who may write the base can have it changed.
//! A failure before the chain changes leaves the VM on its old chain; the
//! base then holds some of the overlay's data where the overlay hides it
//! (the tool marks the snapshot as being deleted, so it is not reverted
//! to).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use vm_control::CommitReport;
use vm_image::qcow2::l2prep::prepare_l2_tables;
use vm_image::tracked::Tracked;
use vm_image::{commit, Block, Format, Image, OpenOptions};
use vm_spec::DiskFormat;
use vmm_sys_util::eventfd::EventFd;

use crate::monitor::Machine;
use crate::timefmt::log;

/// Copy rounds while the guest runs, at most, before the final pause.
const MAX_ROUNDS: u32 = 8;
/// Writes left for the final pause: a round that finds no more than this
/// stops the copying.
const PAUSE_BYTES: u64 = 4 << 20;

/// A live commit in progress.
pub(crate) struct CommitJob {
    pub(crate) stream: UnixStream,
    /// The VM ran when the job began (pause and resume are refused while
    /// it lasts, so it still does at the end).
    running: bool,
    /// Index of the disk in `Machine::disks`.
    disk: usize,
    /// Depth of the overlay in the disk's chain (0: the top).
    depth: usize,
    /// The overlay's chain, which the copy reads.
    src: Arc<Image>,
    base: Arc<Image>,
    base_format: DiskFormat,
    tracker: Option<Arc<Tracked>>,
    done: EventFd,
    result: Receiver<std::io::Result<(u64, u32)>>,
    t0: Instant,
}

impl std::fmt::Debug for CommitJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitJob")
            .field("disk", &self.disk)
            .field("depth", &self.depth)
            .finish_non_exhaustive()
    }
}

/// Checks that the descriptor is `path`'s file and open for writing.
fn writable_fd(path: &Path, fds: &[OwnedFd]) -> Result<()> {
    let [fd] = fds else {
        bail!("commit-disk needs exactly one descriptor (the base, open for writing)");
    };
    crate::fds::same_file(path, fd)?;
    if !crate::fds::writable(fd) {
        bail!("{}: the descriptor is not open for writing", path.display());
    }
    Ok(())
}

impl CommitJob {
    /// Checks the request against the disk's chain, takes the base's
    /// write lock and starts the copy. On an error nothing has changed.
    pub(crate) fn start(
        m: &mut Machine,
        running: bool,
        id: &str,
        overlay: &Path,
        base: &Path,
        fds: &[OwnedFd],
        stream: UnixStream,
    ) -> Result<Self> {
        let slot = m
            .disks
            .iter()
            .position(|d| d.state.id == id)
            .ok_or_else(|| anyhow!("the VM has no disk {id}"))?;
        if m.spec.disks[slot].readonly {
            bail!("disk {id} is read-only");
        }
        let layers = m.disks[slot].image.layers();
        let depth = layers
            .iter()
            .position(|l| vm_image::same_file(&l.path, overlay))
            .ok_or_else(|| anyhow!("{} is not in disk {id}'s chain", overlay.display()))?;
        let below = layers
            .get(depth + 1)
            .ok_or_else(|| anyhow!("{} has no backing file to commit into", overlay.display()))?;
        if !vm_image::same_file(&below.path, base) {
            bail!(
                "{} is not the backing file of {} (that is {})",
                base.display(),
                overlay.display(),
                below.path.display()
            );
        }
        if !std::fs::metadata(&below.path)?.file_type().is_file() {
            bail!(
                "{}: not a regular file (block devices are not committed into)",
                base.display()
            );
        }
        if below.size() < m.disks[slot].image.size() {
            bail!(
                "{} is smaller than the disk ({} < {} bytes)",
                base.display(),
                below.size(),
                m.disks[slot].image.size()
            );
        }
        writable_fd(&below.path, fds)?;
        let base_path: PathBuf = below.path.clone();
        let format = below.format;
        m.disks[slot].lock_for_commit(&base_path)?;
        let opened = open_base(&base_path, format, m.spec.disks[slot].cache.direct());
        let base_img = match opened {
            Ok(b) => Arc::new(b),
            Err(e) => {
                relock(m, slot);
                return Err(e);
            }
        };
        // What the copy reads: the overlay's own chain. Layers above it
        // (later snapshots) must not reach the base: it is to hold the
        // disk as it was when the next snapshot was taken.
        let src = if depth == 0 {
            Ok(m.disks[slot].image.clone())
        } else {
            let l = &m.disks[slot].image.layers()[depth];
            open_read(&l.path, l.format).map(Arc::new)
        };
        let ranges = src.and_then(|s| Ok((commit::above(&s, 1)?, s)));
        let (ranges, src) = match ranges {
            Ok(r) => r,
            Err(e) => {
                relock(m, slot);
                return Err(e);
            }
        };
        // The guest writes the top: track its writes from before the first
        // round reads anything.
        let tracker = if depth == 0 {
            let t = Arc::new(Tracked::new(src.clone()));
            if let Err(e) = m.serve_disk(running, slot, t.clone()) {
                relock(m, slot);
                return Err(e);
            }
            Some(t)
        } else {
            None
        };
        let done = EventFd::new(libc::EFD_NONBLOCK)?;
        let wake = done.try_clone()?;
        let (tx, rx) = channel();
        let (b, t, top) = (base_img.clone(), tracker.clone(), src.clone());
        let started = std::thread::Builder::new()
            .name("commit".into())
            .spawn(move || {
                let r = copy_rounds(&top, &b, &ranges, t.as_deref());
                let _ = tx.send(r);
                let _ = wake.write(1);
            });
        let job = Self {
            stream,
            running,
            disk: slot,
            depth,
            src,
            base: base_img,
            base_format: match format {
                Format::Raw => DiskFormat::Raw,
                Format::Qcow2 => DiskFormat::Qcow2,
            },
            tracker,
            done,
            result: rx,
            t0: Instant::now(),
        };
        if let Err(e) = started {
            job.abandon(m);
            return Err(anyhow!("starting the copy: {e}"));
        }
        log(&format!(
            "commit of disk {id}: {} into {}",
            overlay.display(),
            base_path.display()
        ));
        Ok(job)
    }

    pub(crate) fn fds(&self) -> Vec<RawFd> {
        vec![self.done.as_raw_fd()]
    }

    /// The copy thread is done (or not yet: `None`). On success the chain
    /// changes in one pause; either way the job is over.
    pub(crate) fn on_ready(&mut self, m: &mut Machine) -> Option<Result<CommitReport>> {
        let _ = self.done.read();
        let r = self.result.try_recv().ok()?;
        Some(match r {
            Ok((copied, rounds)) => self.finish(m, copied, rounds),
            Err(e) => {
                self.abandon(m);
                Err(anyhow!("not committed: copying: {e}"))
            }
        })
    }

    /// The last writes copied and the chain changed, in one pause.
    fn finish(&self, m: &mut Machine, mut copied: u64, rounds: u32) -> Result<CommitReport> {
        let running = self.running;
        let t = Instant::now();
        if running {
            if let Err(e) = m.vm().pause() {
                m.vm().resume();
                self.abandon(m);
                return Err(anyhow!("not committed: {e}"));
            }
        }
        let r = self.switch(m, &mut copied);
        if r.is_err() {
            self.abandon(m);
        }
        if running {
            m.vm().resume();
        }
        r?;
        let pause_us = t.elapsed().as_micros() as u64;
        let total_ms = self.t0.elapsed().as_millis() as u64;
        log(&format!(
            "commit of disk {}: {copied} bytes in {rounds} rounds, paused {pause_us} us",
            m.spec.disks[self.disk].id
        ));
        Ok(CommitReport {
            copied_bytes: copied,
            rounds,
            pause_us,
            total_ms,
        })
    }

    fn switch(&self, m: &mut Machine, copied: &mut u64) -> Result<()> {
        let i = self.disk;
        let top = m.disks[i].image.clone();
        if let Some(t) = &self.tracker {
            let left = t.take_dirty();
            *copied += commit::copy_down(&self.src, 1, &self.base, &left, |_| {})
                .context("not committed: copying the last writes")?;
        }
        self.base
            .sync()
            .context("not committed: syncing the base")?;
        let new_top = if self.depth == 0 {
            m.disks[i].rechain(self.base.clone(), self.base_format)?;
            let d = &mut m.spec.disks[i];
            d.path = self.base.path().to_path_buf();
            d.format = self.base_format;
            m.disks[i].image.clone()
        } else {
            // The layer above the overlay now reads from the base. The
            // name is absolute: that layer may live in another folder.
            let above = &top.layers()[self.depth - 1];
            let base = std::fs::canonicalize(self.base.path())?;
            vm_image::qcow2::set_backing(
                &above.path,
                Some(&base.display().to_string()),
                Some(self.base.format().as_str()),
            )
            .context("rebasing the layer above the overlay")?;
            let d = &m.spec.disks[i];
            let fresh = Image::open(
                &d.path,
                &OpenOptions {
                    format: Some(top.format()),
                    write: true,
                    lock: false,
                    direct: d.cache.direct(),
                    backing: true,
                    probe_backing: false,
                    faults: None,
                },
            )
            .context("reopening the disk after the rebase")?;
            let format = m.disks[i].state.format;
            m.disks[i].rechain(Arc::new(fresh), format)?;
            m.disks[i].image.clone()
        };
        let img: Arc<dyn Block> = new_top;
        m.vm.as_mut()
            .expect("the machine runs while served")
            .replace_disk(&m.spec.disks[i].id, &img)
            .map_err(|e| anyhow!("{e}"))?;
        Ok(())
    }

    /// Ends the job without a change of chain: the guest's writes go to
    /// the plain image again and the base is only read.
    fn abandon(&self, m: &mut Machine) {
        let i = self.disk;
        if self.tracker.is_some() {
            let plain: Arc<dyn Block> = m.disks[i].image.clone();
            if let Err(e) = m.serve_disk(self.running, i, plain) {
                log(&format!("commit: untracking the disk: {e:#}"));
            }
        }
        relock(m, i);
    }
}

/// Opens the base on its own for writing (its chain below for reading),
/// with the L2 tables a copy may need made first.
fn open_base(path: &Path, format: Format, direct: bool) -> Result<Image> {
    if format == Format::Qcow2 {
        prepare_l2_tables(path, &[(0, u64::MAX)])
            .with_context(|| format!("preparing {}", path.display()))?;
    }
    Image::open(
        path,
        &OpenOptions {
            format: Some(format),
            write: true,
            lock: false,
            direct,
            backing: true,
            probe_backing: false,
            faults: None,
        },
    )
    .with_context(|| format!("cannot open {} for writing", path.display()))
}

/// An inner layer and its chain, read-only, without locks (the disk
/// holds them).
fn open_read(path: &Path, format: Format) -> Result<Image> {
    Image::open(
        path,
        &OpenOptions {
            format: Some(format),
            write: false,
            lock: false,
            direct: false,
            backing: true,
            probe_backing: false,
            faults: None,
        },
    )
    .with_context(|| format!("cannot open {}", path.display()))
}

/// The disk's locks as its chain wants them (the base read-only again).
fn relock(m: &mut Machine, i: usize) {
    let image = m.disks[i].image.clone();
    let format = m.disks[i].state.format;
    if let Err(e) = m.disks[i].rechain(image, format) {
        log(&format!(
            "commit: relocking disk {}: {e:#}",
            m.disks[i].state.id
        ));
    }
}

/// The copy thread: the first round copies every range the overlay
/// decides; later rounds (a tracked top) copy what the guest wrote during
/// the round before, until little is left for the final pause.
fn copy_rounds(
    top: &Image,
    base: &Image,
    ranges: &[(u64, u64)],
    tracker: Option<&Tracked>,
) -> std::io::Result<(u64, u32)> {
    let mut copied = commit::copy_down(top, 1, base, ranges, |_| {})?;
    let mut rounds = 1;
    if let Some(t) = tracker {
        while rounds < MAX_ROUNDS {
            let dirty = t.take_dirty();
            let bytes: u64 = dirty.iter().map(|r| r.1).sum();
            copied += commit::copy_down(top, 1, base, &dirty, |_| {})?;
            rounds += 1;
            if bytes <= PAUSE_BYTES {
                break;
            }
        }
    }
    base.flush()?;
    Ok((copied, rounds))
}
