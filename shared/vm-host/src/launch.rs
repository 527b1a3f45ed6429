//! Starting a program as a child, born in a cgroup where one is given.
//!
//! Moving a process into a cgroup v2 group (`cgroup.procs`) takes the
//! kernel's global threadgroup lock for writing, which waits for an RCU
//! grace period: 5-20 ms on the development host, more than the rest of a
//! VM's launch. A child cloned with `CLONE_INTO_CGROUP` (Linux 5.7) starts
//! in its group and pays nothing. The child only rearranges descriptors
//! and calls execve: after a raw clone the C library's idea of the thread
//! is the parent's, so nothing else may run there.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `CLONE_INTO_CGROUP` from linux/sched.h (libc's constant does not fit
/// its declared type on every target).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Descriptors at or above this number are free for staging: the child's
/// targets are below it.
const STAGING_FD: RawFd = 64;

/// What the child gets.
#[derive(Debug, Default)]
pub struct Spawn<'a> {
    /// Extra environment, added to this process's.
    pub env: Vec<(&'a str, &'a OsStr)>,
    /// Descriptors the child has at given numbers (below 64); every other
    /// descriptor opened with close-on-exec stays behind.
    pub fds: Vec<(BorrowedFd<'a>, RawFd)>,
    /// Start a new session (a detached VM).
    pub setsid: bool,
    /// The signal the child gets when this process dies (a foreground
    /// VM whose launcher was killed stops with it).
    pub parent_death: Option<libc::c_int>,
}

fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in an argument"))
}

/// A pipe, both ends close-on-exec: (read, write).
pub fn pipe() -> io::Result<(std::fs::File, std::fs::File)> {
    let mut p = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return last_error();
    }
    // SAFETY: both descriptors were just made and are owned here alone.
    unsafe {
        Ok((
            std::fs::File::from_raw_fd(p[0]),
            std::fs::File::from_raw_fd(p[1]),
        ))
    }
}

fn last_error<T>() -> io::Result<T> {
    Err(io::Error::last_os_error())
}

/// Runs `exe args...` as a child, born in the cgroup `cgroup` where one is
/// given (a directory descriptor of a v2 group), and returns its pid once
/// exec succeeded. The child starts with no signal blocked, whatever this
/// process blocks. Kernels without clone3's cgroup flag fail with
/// `Unsupported`, so the caller can start it without a group.
pub fn spawn(
    cgroup: Option<BorrowedFd<'_>>,
    exe: &Path,
    args: &[&OsStr],
    how: &Spawn<'_>,
) -> io::Result<libc::pid_t> {
    // Everything the child needs is built here: it may not allocate.
    let path = cstr(exe.as_os_str().as_bytes())?;
    let argv: Vec<CString> = std::iter::once(path.clone())
        .chain(
            args.iter()
                .map(|a| cstr(a.as_bytes()))
                .collect::<io::Result<Vec<_>>>()?,
        )
        .collect();
    let mut envp = Vec::new();
    for (k, v) in std::env::vars_os() {
        if how.env.iter().any(|(n, _)| OsStr::new(n) == k) {
            continue;
        }
        envp.push(cstr(&[k.as_bytes(), b"=", v.as_bytes()].concat())?);
    }
    for (k, v) in &how.env {
        envp.push(cstr(&[k.as_bytes(), b"=", v.as_bytes()].concat())?);
    }
    let ptrs = |v: &[CString]| -> Vec<*const libc::c_char> {
        v.iter()
            .map(|c| c.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let (argv_p, envp_p) = (ptrs(&argv), ptrs(&envp));
    // Sources go above every target first, so no dup2 in the child can
    // overwrite a source it still needs.
    let mut staged = Vec::new();
    for (fd, target) in &how.fds {
        if !(0..STAGING_FD).contains(target) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "fd target out of range",
            ));
        }
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor we borrow; the result
        // is a new descriptor we own.
        let d = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, STAGING_FD) };
        if d < 0 {
            return last_error();
        }
        // SAFETY: `d` was just returned to us and is owned by nothing else.
        staged.push((unsafe { OwnedFd::from_raw_fd(d) }, *target));
    }
    let pairs: Vec<(RawFd, RawFd)> = staged.iter().map(|(f, t)| (f.as_raw_fd(), *t)).collect();
    // exec failures come back on this pipe; a successful exec closes it.
    let (err_r, err_w) = pipe()?;
    // No handler of ours may run in the child before exec: signals wait
    // until it has set its own mask.
    // SAFETY: sigset_t is plain data that sigfillset/sigprocmask fill.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both sets live for the calls.
    unsafe {
        libc::sigfillset(&raw mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &raw const all, &raw mut old);
    }
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let args = libc::clone_args {
        flags: if cgroup.is_some() {
            CLONE_INTO_CGROUP
        } else {
            0
        },
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup.map_or(0, |c| c.as_raw_fd() as u64),
    };
    // SAFETY: clone3 without CLONE_VM gives the child a copy of this
    // process, as fork does. The child runs only
    // async-signal-safe system calls on memory prepared above, then
    // execve or _exit.
    let pid = unsafe {
        if cgroup.is_some() {
            libc::syscall(
                libc::SYS_clone3,
                std::ptr::from_ref(&args),
                std::mem::size_of::<libc::clone_args>(),
            )
        } else {
            libc::c_long::from(libc::fork())
        }
    };
    if pid == 0 {
        // SAFETY: in the child; see above.
        unsafe {
            child(
                &pairs,
                how,
                parent,
                &path,
                &argv_p,
                &envp_p,
                err_w.as_raw_fd(),
            )
        }
    }
    let clone_err = io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &raw const old, std::ptr::null_mut()) };
    if pid < 0 {
        return Err(match clone_err.raw_os_error() {
            // No clone3, or one without the cgroup flag.
            Some(libc::ENOSYS | libc::EINVAL | libc::E2BIG) => {
                io::Error::new(io::ErrorKind::Unsupported, clone_err)
            }
            _ => clone_err,
        });
    }
    let pid = pid as libc::pid_t;
    drop(err_w);
    drop(staged);
    let mut errno = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        // SAFETY: reads into the array's remaining bytes.
        let n = unsafe { libc::read(err_r.as_raw_fd(), errno[got..].as_mut_ptr().cast(), 4 - got) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            break;
        }
        got += n as usize;
    }
    if got == 0 {
        return Ok(pid);
    }
    // SAFETY: reaps the child that failed to exec.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)))
}

/// The child between clone and exec.
///
/// # Safety
/// Only in the child of [`spawn_into`]'s clone, with pointers that stay
/// valid (the parent's memory, copied).
unsafe fn child(
    pairs: &[(RawFd, RawFd)],
    how: &Spawn<'_>,
    parent: libc::pid_t,
    path: &CString,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    err: RawFd,
) -> ! {
    let fail = |e: i32| -> ! {
        let b = e.to_ne_bytes();
        // SAFETY: write and _exit are async-signal-safe.
        unsafe {
            libc::write(err, b.as_ptr().cast(), 4);
            libc::_exit(127)
        }
    };
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    // SAFETY: plain system calls on descriptors and memory this process
    // has; see the function's contract.
    unsafe {
        if how.setsid && libc::setsid() < 0 {
            fail(errno());
        }
        if let Some(sig) = how.parent_death {
            libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong);
            // The parent may have died before the request took.
            if libc::getppid() != parent {
                libc::_exit(127);
            }
        }
        for &(src, target) in pairs {
            // dup2 clears close-on-exec on the new descriptor.
            if libc::dup2(src, target) < 0 {
                fail(errno());
            }
        }
        // As std's Command leaves a child: no signal blocked, SIGPIPE back
        // to its default.
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &raw const none, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
    }
    fail(errno())
}
