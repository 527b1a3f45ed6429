//! Releasing a finished VM's kernel objects off the caller's clock.
//!
//! Closing the last handle on a KVM VM that has the in-kernel irqchip and
//! PIT waits for an SRCU grace period per device it unregisters: 7-30 ms
//! on the development host, most of a short VM's whole run. Freeing a big
//! guest's memory takes longer still. Nobody who waits for the VMM to exit
//! needs either (disks and taps are closed before this point), so the last
//! handles go to a child process that drops them after this process has
//! let go of its own copies; the kernel then does the teardown in the
//! child. QEMU's async-teardown does the same for guest memory.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// What the teardown child does once the VM process has exited: write
/// `0` to each of `leave` (cgroup files: the child moves itself out of the
/// VM's groups) and remove each of `remove` (the VM's empty groups,
/// children first). Made before the fork, since the child may not
/// allocate.
#[derive(Debug, Default, Clone)]
pub struct AfterExit {
    pub leave: Vec<CString>,
    pub remove: Vec<CString>,
}

/// The kernel objects left of a VM once its threads have stopped and its
/// devices are closed: duplicates of the VM descriptor and of the guest
/// memory's memfd.
#[derive(Debug)]
pub struct Remains {
    handles: Vec<OwnedFd>,
}

impl Remains {
    pub(crate) fn new(handles: Vec<OwnedFd>) -> Self {
        Self { handles }
    }

    /// Drops the handles here, paying for the teardown now.
    pub fn release_now(self) {
        drop(self.handles);
    }

    /// Hands the handles to a child process (`vm-teardown`) and returns
    /// as soon as it holds the only copies. The child closes every other
    /// descriptor first, so no pipe, lock or tap of ours outlives this
    /// process through it. Where the child cannot be made, the handles are
    /// dropped here.
    pub fn release_in_background(self, after: &AfterExit) {
        let Ok((parent_end, child_end)) = UnixStream::pair() else {
            return self.release_now();
        };
        let mut keep: Vec<RawFd> = self.handles.iter().map(AsRawFd::as_raw_fd).collect();
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        keep.push(child_end.as_raw_fd());
        keep.sort_unstable();
        // SAFETY: fork in a process with other threads: the child runs only
        // async-signal-safe system calls (see `child`) and never returns.
        match unsafe { libc::fork() } {
            -1 => self.release_now(),
            0 => child(&keep, child_end.as_raw_fd(), parent, after),
            _ => {
                drop(child_end);
                let mut parent_end = parent_end;
                // The child's byte says it closed everything else.
                let mut b = [0u8; 1];
                let _ = parent_end.read(&mut b);
                drop(self.handles);
                // Our copies are gone: the child may drop the last ones.
                drop(parent_end);
            }
        }
    }
}

/// The child's whole life: close all but `keep`, tell the parent, wait for
/// the parent to let go (end of file on `sock`), drop the last handles
/// (the kernel's teardown runs here), then do `after` once the parent has
/// exited, and exit.
fn child(keep: &[RawFd], sock: RawFd, parent: libc::pid_t, after: &AfterExit) -> ! {
    // SAFETY: only async-signal-safe system calls on plain values and
    // stack buffers; the process ends with _exit and never returns.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"vm-teardown".as_ptr());
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::signal(sig, libc::SIG_DFL);
        }
        let mut low: u32 = 0;
        for &fd in keep {
            let fd = fd as u32;
            if fd > low {
                libc::syscall(libc::SYS_close_range, low, fd - 1, 0);
            }
            low = fd + 1;
        }
        libc::syscall(libc::SYS_close_range, low, u32::MAX, 0);
        let b = 1u8;
        libc::write(sock, (&raw const b).cast(), 1);
        let mut buf = [0u8; 1];
        while libc::read(sock, buf.as_mut_ptr().cast(), 1) > 0 {}
        libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0);
        after_exit(parent, after);
        libc::_exit(0)
    }
}

/// The child's last duty: out of the VM's groups, then (once the VM
/// process is gone and no longer holds them) remove them. The parent is
/// gone when we are re-parented, which the kernel does after it has left
/// its groups. A group still busy after a few seconds stays for the next
/// start's sweep.
///
/// # Safety
/// Runs in a child of a multi-threaded process: async-signal-safe calls
/// only, on memory made before the fork.
unsafe fn after_exit(parent: libc::pid_t, after: &AfterExit) {
    let pause = libc::timespec {
        tv_sec: 0,
        tv_nsec: 5_000_000,
    };
    // SAFETY: (for the whole body) open, write, close, getppid, nanosleep
    // and unlinkat with NUL-terminated paths that live in `after`.
    unsafe {
        if after.remove.is_empty() {
            return;
        }
        for f in &after.leave {
            let fd = libc::open(f.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd >= 0 {
                libc::write(fd, c"0".as_ptr().cast(), 1);
                libc::close(fd);
            }
        }
        for _ in 0..2000 {
            if libc::getppid() != parent {
                break;
            }
            libc::nanosleep(&raw const pause, std::ptr::null_mut());
        }
        for d in &after.remove {
            for _ in 0..400 {
                if libc::unlinkat(libc::AT_FDCWD, d.as_ptr(), libc::AT_REMOVEDIR) == 0
                    || *libc::__errno_location() != libc::EBUSY
                {
                    break;
                }
                libc::nanosleep(&raw const pause, std::ptr::null_mut());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The handed-over handle is released in the end, and no other
    /// descriptor of ours lives on in the child: once our own copy of an
    /// unrelated pipe is closed, its reader sees end of file at once.
    #[test]
    fn handles_are_released_and_nothing_else_is_kept() {
        let (mut handed_r, handed_w) = std::io::pipe().unwrap();
        let (mut other_r, other_w) = std::io::pipe().unwrap();
        Remains::new(vec![OwnedFd::from(handed_w)]).release_in_background(&AfterExit::default());
        drop(other_w);
        let mut s = String::new();
        other_r.read_to_string(&mut s).unwrap();
        handed_r.read_to_string(&mut s).unwrap();
        assert!(s.is_empty());
    }
}
