//! Starting the VM process.
//!
//! On cgroup v2 the launcher (`vm-run start`) makes the VM's group and
//! clones `vm-run serve` into it (vm_host::launch): a process that moves
//! into a v2 group waits for an RCU grace period (5-20 ms on the
//! development host), one born there does not. In the foreground the
//! launcher stays the process users signal: it forwards TERM, INT and HUP
//! and exits as the VM does. On v1, where a thread moves itself without
//! that wait, a foreground VM runs in the launcher's process and a
//! detached one in a fork of it, which goes on without exec: it already
//! has the spec and the checked saved file.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::Path;

use anyhow::Result;
use vm_host::cgroup::{Hierarchy, VmCgroup};
use vm_spec::VmSpec;

use crate::monitor::{RestoreFrom, RestoreSource};

/// What `vm-run serve` is told through its environment.
pub(crate) const ENV_FOREGROUND: &str = "VMTOOLS_SERVE_FOREGROUND";
pub(crate) const ENV_CONSOLE: &str = "VMTOOLS_SERVE_CONSOLE";
pub(crate) const ENV_PAUSED: &str = "VMTOOLS_SERVE_PAUSED";
pub(crate) const ENV_RESTORE: &str = "VMTOOLS_SERVE_RESTORE";
pub(crate) const ENV_INCOMING: &str = "VMTOOLS_SERVE_INCOMING";
pub(crate) const ENV_INCOMING_DISKS: &str = "VMTOOLS_SERVE_INCOMING_DISKS";
/// How many streams an incoming migration has (when more than one).
pub(crate) const ENV_INCOMING_STREAMS: &str = "VMTOOLS_SERVE_INCOMING_STREAMS";
pub(crate) const ENV_CGROUP: &str = "VMTOOLS_SERVE_CGROUP";
/// Where `vm-run serve` finds an incoming migration's stream.
pub(crate) const INCOMING_FD: RawFd = 3;
/// Where a foreground `vm-run serve` reads its spec (its stdin is the
/// console's).
pub(crate) const SPEC_FD: RawFd = 4;
/// Where `vm-run serve` finds an incoming migration's further streams:
/// stream k (from 1) at `MORE_STREAMS_FD + k - 1`.
pub(crate) const MORE_STREAMS_FD: RawFd = 10;

/// The VM's group, made by the launcher, on v2 only. None on v1, and
/// where the group cannot be made: the VM process then tries itself and
/// logs why it runs unplaced.
pub(crate) fn v2_group(spec: &VmSpec) -> Option<VmCgroup> {
    let h = Hierarchy::detect()?;
    if !matches!(h, Hierarchy::V2(_)) {
        return None;
    }
    crate::placement::make_cgroup(h, spec).ok()
}

/// The `vm-run serve` to start: its environment and the stream it takes.
pub(crate) struct Serve<'a> {
    env: Vec<(&'static str, OsString)>,
    /// An incoming migration's streams, in order.
    streams: Vec<BorrowedFd<'a>>,
}

impl<'a> Serve<'a> {
    pub(crate) fn new(
        console: Option<&Path>,
        restore: Option<&'a RestoreFrom>,
        foreground: bool,
    ) -> Result<Self> {
        let mut env = Vec::new();
        let mut streams = Vec::new();
        if foreground {
            env.push((ENV_FOREGROUND, OsString::from("1")));
        }
        if let Some(c) = console {
            env.push((ENV_CONSOLE, c.as_os_str().to_owned()));
        }
        if let Some(r) = restore {
            match &r.source {
                RestoreSource::Boot => {}
                RestoreSource::File(p) => env.push((ENV_RESTORE, p.as_os_str().to_owned())),
                RestoreSource::Stream(c, disks) => {
                    env.push((ENV_INCOMING, OsString::from(INCOMING_FD.to_string())));
                    env.push((ENV_INCOMING_DISKS, serde_json::to_string(disks)?.into()));
                    if c.len() > 1 {
                        env.push((ENV_INCOMING_STREAMS, c.len().to_string().into()));
                    }
                    streams = c.iter().map(AsFd::as_fd).collect();
                }
            }
            if r.paused {
                env.push((ENV_PAUSED, OsString::from("1")));
            }
        }
        Ok(Self { env, streams })
    }

    /// Starts it with `fds` at their numbers (and the streams at
    /// INCOMING_FD and MORE_STREAMS_FD on), in the VM's v2 group where one is given:
    /// `Unsupported` where the kernel cannot start a child in a group.
    pub(crate) fn spawn(
        &self,
        cg: Option<&VmCgroup>,
        fds: &[(BorrowedFd<'_>, RawFd)],
        detached: bool,
    ) -> io::Result<libc::pid_t> {
        let dir = match cg {
            Some(cg) => Some(
                cg.dir()
                    .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "not a v2 group"))?
                    .map_err(io::Error::other)?,
            ),
            None => None,
        };
        let group = cg
            .and_then(|cg| cg.thread_groups.first())
            .map(|g| g.as_os_str().to_owned());
        let mut env: Vec<(&str, &OsStr)> =
            self.env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        if let Some(g) = &group {
            env.push((ENV_CGROUP, g.as_os_str()));
        }
        let mut all = fds.to_vec();
        all.extend(self.streams.iter().zip(0..).map(|(&s, k)| {
            let at = if k == 0 {
                INCOMING_FD
            } else {
                MORE_STREAMS_FD + k - 1
            };
            (s, at)
        }));
        let how = vm_host::launch::Spawn {
            env,
            fds: all,
            setsid: detached,
            // A foreground VM stops with a launcher that was killed.
            parent_death: (!detached).then_some(libc::SIGTERM),
        };
        let exe = std::env::current_exe()?;
        vm_host::launch::spawn(
            dir.as_ref().map(AsFd::as_fd),
            &exe,
            &[OsStr::new("serve")],
            &how,
        )
    }
}

/// A foreground VM on v2: `vm-run serve` in the VM's group with this
/// process's stdio, while this process forwards the stop signals a user
/// sends it and exits as the VM process does. `Unsupported` where the
/// kernel cannot start a child in a group.
pub(crate) fn foreground(
    spec: &VmSpec,
    console: Option<&Path>,
    restore: Option<&RestoreFrom>,
    cg: &VmCgroup,
) -> io::Result<i32> {
    let serve = Serve::new(console, restore, true).map_err(io::Error::other)?;
    let (spec_r, mut spec_w) = vm_host::launch::pipe()?;
    let forwarded = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGCHLD];
    // Blocked before the child exists, so none is missed; the child
    // starts with none blocked.
    let set = sigset(&forwarded);
    // SAFETY: the set lives for the call.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut()) };
    let pid = serve.spawn(Some(cg), &[(spec_r.as_fd(), SPEC_FD)], false);
    drop(spec_r);
    let pid = match pid {
        Ok(p) => p,
        Err(e) => {
            // SAFETY: as above.
            unsafe {
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &raw const set, std::ptr::null_mut())
            };
            return Err(e);
        }
    };
    // A child that died first is seen below; its exit is what counts.
    let _ = spec_w.write_all(serde_json::to_string(spec)?.as_bytes());
    drop(spec_w);
    let status = forward_until_exit(pid, &set);
    cg.remove_if_empty();
    Ok(exit_code(status))
}

fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data that sigemptyset initialises.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: the set lives for the calls; the signals are valid.
    unsafe {
        libc::sigemptyset(&raw mut set);
        for &s in signals {
            libc::sigaddset(&raw mut set, s);
        }
    }
    set
}

/// Waits for `pid`, passing on TERM, INT and HUP that someone sent this
/// process. Those the terminal sends (Ctrl-C, hangup) reach the whole
/// foreground process group, the VM included, and are not sent twice.
fn forward_until_exit(pid: libc::pid_t, set: &libc::sigset_t) -> libc::c_int {
    loop {
        // SAFETY: siginfo_t is plain data that sigwaitinfo fills.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: the set and info live for the call.
        let sig = unsafe { libc::sigwaitinfo(set, &raw mut info) };
        if sig == libc::SIGCHLD || sig < 0 {
            let mut status = 0;
            // SAFETY: reaps our own child if it has ended.
            let r = unsafe { libc::waitpid(pid, &raw mut status, libc::WNOHANG) };
            if r == pid
                || (r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD))
            {
                return status;
            }
        } else if info.si_code != libc::SI_KERNEL {
            // SAFETY: signals our own child, which is alive (not reaped).
            unsafe { libc::kill(pid, sig) };
        }
    }
}

/// The VM process's exit as ours: its code, or for a death by a signal
/// the same death (a shell then reports it as it would have).
fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // SAFETY: default disposition, unblocked, then raised: this
        // process ends as its child did.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            let set = sigset(&[sig]);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &raw const set, std::ptr::null_mut());
            libc::raise(sig);
        }
        return 128 + sig;
    }
    libc::WEXITSTATUS(status)
}

/// Whether this process has one thread, so that a fork of it may go on
/// running Rust without exec.
pub(crate) fn single_threaded() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l == "Threads:\t1"))
}

/// Points stdin and stdout at /dev/null (a detached VM process's).
pub(crate) fn stdio_to_null() {
    // SAFETY: opens /dev/null and duplicates it onto 0 and 1; plain
    // descriptor calls.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::close(null);
        }
    }
}

/// The child of `start --detach`'s fork on v1: the detached VM process,
/// in a session of its own with stderr in `log`. It never returns.
pub(crate) fn serve_forked(
    spec: VmSpec,
    console: Option<&Path>,
    restore: Option<RestoreFrom>,
    ready_r: File,
    ready: File,
    log: File,
) -> ! {
    drop(ready_r);
    // SAFETY: setsid and dup2 on descriptors this process owns.
    unsafe {
        libc::setsid();
        libc::dup2(log.as_raw_fd(), 2);
    }
    drop(log);
    stdio_to_null();
    let code = match crate::cmd::start::serve_detached(
        spec,
        console.map(Path::to_path_buf),
        restore,
        None,
        ready,
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vm-run: error: {}", crate::one_line(&e));
            1
        }
    };
    std::process::exit(code)
}

/// Waits for a child that failed to start its VM.
/// Waits for our own child; returns its wait status.
pub(crate) fn reap(pid: libc::pid_t) -> Option<libc::c_int> {
    let mut status = 0;
    // SAFETY: waits for our own child and writes its status into `status`,
    // which lives for the call.
    let r = unsafe { libc::waitpid(pid, &raw mut status, 0) };
    (r == pid).then_some(status)
}

/// Why a VM process that never reported ready ended: the panic or the
/// failed allocation in its log if there is one, else the log's last
/// line (its error), and the signal that ended it if one did.
pub(crate) fn why_not_started(log: &str, status: Option<libc::c_int>) -> String {
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    // A panic's message is the line after "panicked at FILE:LINE:".
    let panic = lines
        .iter()
        .position(|l| l.contains("panicked at"))
        .map(|i| format!("it panicked: {}", lines.get(i + 1).copied().unwrap_or("")));
    let alloc = lines
        .iter()
        .find(|l| l.starts_with("memory allocation of"))
        .map(|l| format!("it ran out of memory ({l})"));
    let last = lines
        .iter()
        .rev()
        .find(|l| !l.starts_with("note:") && !l.starts_with("stack backtrace") && !is_frame(l))
        .map(|l| l.split_once("error: ").map_or(*l, |(_, m)| m).to_string());
    let mut why = panic
        .or(alloc)
        .or(last)
        .unwrap_or_else(|| "no reason given".into());
    if let Some(s) = status.filter(|&s| libc::WIFSIGNALED(s)) {
        let sig = libc::WTERMSIG(s);
        let name = match sig {
            libc::SIGABRT => " (SIGABRT)",
            libc::SIGKILL => " (SIGKILL)",
            libc::SIGSEGV => " (SIGSEGV)",
            libc::SIGBUS => " (SIGBUS)",
            libc::SIGSYS => " (SIGSYS: a system call its seccomp filter refuses)",
            _ => "",
        };
        why = format!("{why}; the VM process ended on signal {sig}{name}");
    }
    why
}

/// A backtrace line: "12: name" or "at file:line".
fn is_frame(line: &str) -> bool {
    line.starts_with("at ")
        || line
            .split_once(':')
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::why_not_started;

    #[test]
    fn a_vm_that_did_not_start_says_why() {
        let plain = "2026-12-07T07:00:00Z vm-run: error: disk vda: No such file or directory\n";
        assert_eq!(
            why_not_started(plain, None),
            "disk vda: No such file or directory"
        );
        let panic = "\nthread 'main' (7) panicked at src/x.rs:3:5:\nattempt to add with overflow\n\
                     stack backtrace:\n   0: std::panicking\n             at /rustc/x.rs:1:2\n\
                     note: Some details are omitted, run with `RUST_BACKTRACE=full`\n";
        // SIGABRT's wait status: the signal number in the low bits.
        assert_eq!(
            why_not_started(panic, Some(libc::SIGABRT)),
            "it panicked: attempt to add with overflow; the VM process ended on signal 6 (SIGABRT)"
        );
        let oom = "memory allocation of 103079215128 bytes failed\nstack backtrace:\n   0: x\n";
        assert_eq!(
            why_not_started(oom, None),
            "it ran out of memory (memory allocation of 103079215128 bytes failed)"
        );
        assert!(why_not_started("", Some(libc::SIGSYS)).contains("seccomp"));
        assert_eq!(why_not_started("", Some(0)), "no reason given");
    }
}
