//! The seccomp filter every thread of a running VM gets once the machine is
//! built: the syscalls a VMM never needs after setup (new programs,
//! debugging other processes, kernel modules, mounts, identity changes...)
//! fail with EPERM. It is a deny list, so a syscall we do use in a rare path
//! (restart, state writes, logging) can never kill the VM.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

use crate::{Error, Result};

/// Syscalls refused after setup.
const DENIED: &[i64] = &[
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_fork,
    libc::SYS_vfork,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_setuid,
    libc::SYS_setgid,
    libc::SYS_setreuid,
    libc::SYS_setregid,
    libc::SYS_setresuid,
    libc::SYS_setresgid,
    libc::SYS_setgroups,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_userfaultfd,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_syslog,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_personality,
];

/// The compiled filter.
pub fn filter() -> Result<BpfProgram> {
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        DENIED.iter().map(|&s| (s, Vec::new())).collect();
    let f = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        TargetArch::x86_64,
    )
    .map_err(|e| Error::Boot(format!("seccomp filter: {e}")))?;
    BpfProgram::try_from(f).map_err(|e| Error::Boot(format!("seccomp filter: {e}")))
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
            // Ordinary work goes on.
            assert!(std::fs::metadata("/").is_ok());
        })
        .join()
        .unwrap();
    }
}
