//! The seccomp filter every thread of a running VM gets once the machine is
//! built: an allow list of the system calls a running VMM makes (KVM and
//! device ioctls, file and socket I/O, memory, threads, signals, the state
//! and cgroup files, a reboot's new machine, the teardown child); anything
//! else, such as execve, ptrace, mounts, modules, bpf, keyrings or identity
//! changes, fails with EPERM. EPERM rather than a kill: a call missed here
//! fails one operation with a logged error instead of killing the guest.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

use crate::{Error, Result};

/// System calls allowed after setup.
const ALLOWED: &[i64] = &[
    // Files: state, logs, consoles, disks, /proc files. Folders, links
    // and modes are all made before the filter.
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_lseek,
    libc::SYS_openat,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_getdents64,
    // Resolving a live disk snapshot's backing chain (realpath).
    libc::SYS_readlink,
    libc::SYS_readlinkat,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fallocate,
    libc::SYS_ftruncate,
    libc::SYS_fcntl,
    libc::SYS_ioctl,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_dup,
    libc::SYS_dup2,
    libc::SYS_dup3,
    libc::SYS_pipe2,
    libc::SYS_memfd_create,
    libc::SYS_eventfd2,
    // Waiting.
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_futex,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_gettimeofday,
    libc::SYS_sched_yield,
    // The control and console sockets, and the teardown child's pair.
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_shutdown,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_socketpair,
    // io_uring disks, set up when the guest's driver starts them.
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    // Memory, and a rebooted machine's new guest memory.
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_mbind,
    libc::SYS_brk,
    // Threads (a reboot's new vCPU threads, which drop their capabilities
    // and may be pinned) and the teardown child (a process).
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_prctl,
    // vCPU threads add their own, stricter filter (filters only narrow).
    libc::SYS_seccomp,
    libc::SYS_capget,
    libc::SYS_capset,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_setaffinity,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_getppid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getrandom,
    libc::SYS_prlimit64,
    libc::SYS_uname,
    libc::SYS_sysinfo,
    // Signals: vCPU kicks, stop requests, pthread_kill.
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_tgkill,
];

/// What every machine thread (vCPU thread, iothread) may do on top of
/// [`ALLOWED`]: I/O on descriptors it already holds (serial and console
/// output, disk requests, taps, eventfds, a device reset's close), memory,
/// locks, signals and its own exit. Nothing that opens, names or creates:
/// no files, sockets, processes or threads. The guest drives these
/// threads, so they get the shortest lists.
const MACHINE_THREAD_ALLOWED: &[i64] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_lseek,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fallocate,
    libc::SYS_io_uring_enter,
    libc::SYS_close,
    libc::SYS_fcntl,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_clock_gettime,
    libc::SYS_gettimeofday,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_mprotect,
    libc::SYS_brk,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_tgkill,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// A vCPU thread's additions: KVM_RUN and device ioctls (a tap's offloads
/// at activation), the socket console, and sleeps.
const VCPU_EXTRA: &[i64] = &[
    libc::SYS_ioctl,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_rt_sigaction,
];

/// An iothread's additions: waiting on its loop.
const IOTHREAD_EXTRA: &[i64] = &[libc::SYS_epoll_wait, libc::SYS_epoll_pwait];

/// Which machine thread confines itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineThread {
    Vcpu,
    IoThread,
}

fn compile(allowed: &[i64]) -> Result<BpfProgram> {
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        allowed.iter().map(|&s| (s, Vec::new())).collect();
    let f = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| Error::Boot(format!("seccomp filter: {e}")))?;
    BpfProgram::try_from(f).map_err(|e| Error::Boot(format!("seccomp filter: {e}")))
}

/// The compiled filter for every thread.
pub fn filter() -> Result<BpfProgram> {
    compile(ALLOWED)
}

/// The compiled filter a machine thread adds to [`filter`] (filters
/// stack: a call must pass both).
pub fn machine_thread_filter(kind: MachineThread) -> Result<BpfProgram> {
    let extra = match kind {
        MachineThread::Vcpu => VCPU_EXTRA,
        MachineThread::IoThread => IOTHREAD_EXTRA,
    };
    compile(&[MACHINE_THREAD_ALLOWED, extra].concat())
}

/// Adds the machine-thread filter to the calling thread only. It must
/// come after [`install_all_threads`]: a thread with a filter of its own
/// makes the process-wide TSYNC install fail.
pub fn confine_this_thread(kind: MachineThread) -> Result<()> {
    seccompiler::apply_filter(&machine_thread_filter(kind)?)
        .map_err(|e| Error::Boot(format!("installing the {kind:?} seccomp filter: {e}")))
}

/// Installs the filter on every thread of the process (TSYNC); threads
/// created later inherit it.
pub fn install_all_threads() -> Result<()> {
    seccompiler::apply_filter_all_threads(&filter()?)
        .map_err(|e| Error::Boot(format!("installing seccomp: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denied_syscalls_fail_with_eperm_and_others_work() {
        // On a thread of its own: filters cannot be removed again.
        std::thread::spawn(|| {
            seccompiler::apply_filter(&filter().unwrap()).unwrap();
            let path = c"/bin/true";
            let argv = [path.as_ptr(), std::ptr::null()];
            // SAFETY: execve with a NUL-terminated path and a NULL-terminated
            // argv that live for the call; the filter makes it fail.
            let r = unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), std::ptr::null()) };
            assert_eq!(r, -1);
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EPERM)
            );
            // The raw syscall: glibc's setuid() would signal every thread
            // and abort when only this one is filtered.
            // SAFETY: setuid has no memory preconditions; the filter refuses it.
            assert_eq!(unsafe { libc::syscall(libc::SYS_setuid, 0) }, -1);
            assert!(std::fs::read_to_string("/proc/thread-self/status")
                .unwrap()
                .contains("Seccomp:\t2"));
            // An allow list: calls no deny list would name fail too.
            let dir = std::env::temp_dir().join(format!("seccomp-{}", std::process::id()));
            let e = std::fs::create_dir(&dir).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EPERM), "mkdir: {e}");
            assert!(!dir.exists());
            // Ordinary work goes on.
            assert!(std::fs::metadata("/").is_ok());
            assert!(std::fs::read_to_string("/proc/self/stat").is_ok());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_confined_vcpu_thread_cannot_open_files() {
        std::thread::spawn(|| {
            seccompiler::apply_filter(&filter().unwrap()).unwrap();
            confine_this_thread(MachineThread::Vcpu).unwrap();
            let e = std::fs::File::open("/proc/self/stat").unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EPERM), "open: {e}");
            // Nor make threads.
            assert!(std::thread::Builder::new().spawn(|| {}).is_err());
            // Writing to what it already holds still works.
            assert!(std::io::Write::write_all(&mut std::io::sink(), b"x").is_ok());
            // SAFETY: getpid has no preconditions; allowed by both filters.
            assert!(unsafe { libc::getpid() } > 0);
        })
        .join()
        .unwrap();
    }
}
