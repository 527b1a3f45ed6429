//! `snapshot-disks` on the control socket: a live disk snapshot. The tool
//! (vm-snap) made each overlay, a qcow2 whose backing file is the disk's
//! current top, and sends its descriptor. Here the VM pauses (its queues
//! drained and flushed), every overlay is opened and checked, and only
//! then do all the disks switch to them. Any failure before the switch
//! leaves every disk as it was, and the VM runs on.

use std::os::fd::OwnedFd;
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use vm_control::{DiskSnapshot, SnapshotReport};
use vm_spec::{DiskFormat, IoMode};

use crate::monitor::Machine;
use crate::timefmt::log;

pub(crate) fn snapshot_disks(
    m: &mut Machine,
    running: bool,
    disks: &[DiskSnapshot],
    fds: &[OwnedFd],
) -> Result<SnapshotReport> {
    if disks.is_empty() {
        bail!("snapshot-disks names no disk");
    }
    if fds.len() != disks.len() {
        bail!(
            "snapshot-disks needs one descriptor per overlay ({} disks, {} descriptors)",
            disks.len(),
            fds.len()
        );
    }
    let mut at = Vec::new();
    for (s, fd) in disks.iter().zip(fds) {
        let i = m
            .disks
            .iter()
            .position(|d| d.state.id == s.id)
            .ok_or_else(|| anyhow!("the VM has no disk {}", s.id))?;
        if at.contains(&i) {
            bail!("disk {} is named twice", s.id);
        }
        if m.spec.disks[i].readonly {
            bail!("disk {} is read-only: it needs no snapshot", s.id);
        }
        crate::fds::same_file(&s.overlay, fd)?;
        at.push(i);
    }
    let t0 = Instant::now();
    if running {
        if let Err(e) = m.vm().pause() {
            m.vm().resume();
            return Err(anyhow!("no snapshot: {e}"));
        }
    }
    // Every overlay opened and checked before any disk switches.
    let mut new = Vec::new();
    for (s, &i) in disks.iter().zip(&at) {
        let mut d = m.spec.disks[i].clone();
        d.path.clone_from(&s.overlay);
        d.format = DiskFormat::Qcow2;
        if d.io == IoMode::IoUring {
            // io_uring serves raw files only.
            d.io = IoMode::Threads;
        }
        match m.disks[i].overlay(&d) {
            Ok((open, backing)) => new.push((i, d, open, backing)),
            Err(e) => {
                if running {
                    m.vm().resume();
                }
                return Err(e.context(format!("no snapshot of disk {}", s.id)));
            }
        }
    }
    for (i, d, open, backing) in new {
        let id = d.id.clone();
        m.vm.as_mut()
            .expect("the machine runs while served")
            .replace_disk(&id, &open.config.image)
            .map_err(|e| anyhow!("{e}"))?;
        // The old top's locks go with it; the chain below is locked again
        // for reading.
        m.disks[i] = open;
        if let Err(e) = m.disks[i].lock_backing(&backing) {
            log(&format!(
                "disk {id}: its backing chain stays unlocked: {e:#}"
            ));
        }
        m.spec.disks[i] = d;
    }
    if running {
        m.vm().resume();
    }
    let pause_us = t0.elapsed().as_micros() as u64;
    log(&format!(
        "disk snapshot of {}: paused {pause_us} us",
        disks
            .iter()
            .map(|d| d.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(SnapshotReport { pause_us })
}
