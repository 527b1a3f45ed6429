//! Who runs a VM, as the kernel says it: the VM process holds an exclusive
//! flock on its folder for its whole life. Exactly one start of a name can
//! take it; the kernel's lock table (/proc/locks) names the holder's pid,
//! which no file can forge; a folder nobody holds belongs to a VM that is
//! dead, so only then may a tool clear it.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::dirs::{check_trusted, vm_dir};
use crate::{Error, Liveness, Result};

/// The running VM's hold on its folder; dropping it releases the name.
#[derive(Debug)]
pub struct VmLock {
    dir: PathBuf,
    _file: File,
}

pub(crate) fn open_dir(dir: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
}

impl VmLock {
    /// Makes (or reuses) the VM's folder and takes it, or says which
    /// process runs the VM already.
    pub fn claim(name: &str) -> Result<Self> {
        // A folder removed by its exiting VM between our open and our lock
        // is a different folder from the one at the path: take the new one.
        let t0 = std::time::Instant::now();
        loop {
            if t0.elapsed() > std::time::Duration::from_secs(2) {
                break;
            }
            let dir = vm_dir(name, true)?;
            let file = open_dir(&dir).map_err(Error::io(format!("opening {}", dir.display())))?;
            // SAFETY: flock on a descriptor we own; no memory is passed.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    let held_by = holder(&dir);
                    // A VM on its way out (main thread gone, the rest
                    // closing) lets go within moments.
                    if held_by.is_some_and(|p| Liveness::of(p) == Liveness::Dead) {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        continue;
                    }
                    let pid = held_by.map_or_else(String::new, |p| format!(" (pid {p})"));
                    return Err(Error::Busy(format!("VM '{name}' is already running{pid}")));
                }
                return Err(Error::io(format!("locking {}", dir.display()))(e));
            }
            let held = file
                .metadata()
                .map_err(Error::io(format!("locking {}", dir.display())))?;
            let now = std::fs::symlink_metadata(&dir).ok();
            if now.is_some_and(|m| m.ino() == held.ino() && m.dev() == held.dev()) {
                return Ok(Self { dir, _file: file });
            }
        }
        Err(Error::Busy(format!(
            "VM '{name}': could not take its folder (a VM of that name is ending); try again"
        )))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The pid of the process holding `dir`'s VM lock, from the kernel's lock
/// table; `None` when no VM process runs there.
pub fn holder(dir: &Path) -> Option<u32> {
    holder_of(&std::fs::symlink_metadata(dir).ok()?)
}

/// As [`holder`], for the folder `md` describes (the one that was at the
/// path then, whatever is there now).
pub(crate) fn holder_of(md: &std::fs::Metadata) -> Option<u32> {
    let (major, minor) = (libc::major(md.dev()), libc::minor(md.dev()));
    let want = format!("{major:02x}:{minor:02x}:{}", md.ino());
    let table = std::fs::read_to_string("/proc/locks").ok()?;
    table.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // "N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE START END"; waiters
        // carry a "->" after the number and hold nothing.
        (f.len() >= 6 && f[1] == "FLOCK" && f[3] == "WRITE" && f[5] == want)
            .then(|| f[4].parse().ok())
            .flatten()
    })
}

/// Removes a VM's folder when no VM process holds it and it is ours;
/// returns whether it did. A folder of another user, or of a VM that runs,
/// stays.
pub fn remove_if_dead(dir: &Path) -> Result<bool> {
    let Ok(file) = open_dir(dir) else {
        return Ok(false);
    };
    let md = file
        .metadata()
        .map_err(Error::io(format!("reading {}", dir.display())))?;
    // SAFETY: geteuid has no preconditions.
    if md.uid() != unsafe { libc::geteuid() } {
        return Ok(false);
    }
    // SAFETY: flock on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Ok(false);
    }
    check_trusted(dir)?;
    crate::dirs::remove_runtime(dir);
    Ok(true)
}

/// Sends `signal` to the VM process `pid` only while it provably is the
/// one holding `dir`: through a pidfd, so a pid reused between the check
/// and the signal cannot be hit.
pub fn signal_vm(dir: &Path, pid: u32, signal: i32) -> Result<()> {
    let refuse = || {
        Error::Untrusted(format!(
            "pid {pid} is not the VM process of {} (not signalled)",
            dir.display()
        ))
    };
    let pid_t = libc::pid_t::try_from(pid).map_err(|_| refuse())?;
    // SAFETY: pidfd_open takes a pid and flags; it returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid_t, 0) };
    if fd < 0 {
        return Err(refuse());
    }
    // SAFETY: the kernel just gave us this descriptor; we own it now.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    if holder(dir) != Some(pid) {
        return Err(refuse());
    }
    // SAFETY: pidfd_send_signal on our pidfd with no siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(Error::io(format!("signalling pid {pid}"))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_claim_wins_and_the_kernel_names_the_holder() {
        let d = tempfile::tempdir().unwrap();
        std::env::set_var("VMTOOLS_RUN_DIR", d.path());
        let lock = VmLock::claim("held").unwrap();
        assert_eq!(holder(lock.dir()), Some(std::process::id()));
        // flock conflicts between open files, even in one process.
        let e = VmLock::claim("held").unwrap_err().to_string();
        assert!(e.contains("already running"), "{e}");
        assert!(!remove_if_dead(lock.dir()).unwrap(), "a held folder stays");
        let dir = lock.dir().to_path_buf();
        drop(lock);
        assert_eq!(holder(&dir), None);
        assert!(remove_if_dead(&dir).unwrap());
        assert!(!dir.exists());
        // A pid that does not hold the folder is never signalled.
        let lock = VmLock::claim("held").unwrap();
        let e = signal_vm(lock.dir(), 1, 0).unwrap_err().to_string();
        assert!(e.contains("not the VM process"), "{e}");
        signal_vm(lock.dir(), std::process::id(), 0).unwrap();
    }
}
