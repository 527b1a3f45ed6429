//! `vm-migrate send VM TO` (virsh migrate --live): opens the transport,
//! hands the connection to the VM's vm-run, which does the copying on a
//! thread of its own, and waits for the end; a progress line on a
//! terminal meanwhile, and a JSON summary at the end.

use std::io::{IsTerminal, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use vm_control::{MigrateOptions, Request, Session};

use crate::cli::SendArgs;
use crate::transport::{self, Target};

/// One stream unless --streams says more, as QEMU (multifd is off by
/// default): on the 2-core development host a migration over loopback
/// already keeps both cores busy with one, and two were no faster
/// (docs/vm-migrate.md, "Several streams").
const DEFAULT_STREAMS: u32 = 1;

pub fn run(a: &SendArgs) -> Result<i32> {
    let target: Target = a.to.parse()?;
    if target == Target::Stdio {
        bail!("'-' is for vm-migrate recv");
    }
    let (name, sock) = super::control_socket(&a.vm)?;
    let options = MigrateOptions {
        max_downtime_ms: a.max_downtime,
        bandwidth_mib: a.bandwidth,
        auto_converge: a.auto_converge,
        timeout_s: a.timeout,
        disks: a.migrate_disks.clone(),
        copy_storage_all: a.copy_storage_all && a.migrate_disks.is_empty(),
    };
    let streams = match (&target, a.streams) {
        (Target::Exec(_), Some(n)) if n > 1 => bail!("exec: carries one stream (--streams 1)"),
        (Target::Exec(_), _) => 1,
        (_, n) => n.unwrap_or(DEFAULT_STREAMS),
    };
    let (conn, child) = transport::connect(&target)?;
    // The further streams connect now, while the destination has only
    // started to read the first: they wait in its listener's queue.
    let mut more = Vec::new();
    for _ in 1..streams {
        more.push(transport::connect(&target)?.0);
    }
    let fds: Vec<_> = std::iter::once(&conn)
        .chain(&more)
        .map(AsRawFd::as_raw_fd)
        .collect();
    // After the transport's command (if any) has started: it keeps the
    // signals as they were.
    cancel_on_signals(&name, &sock)?;
    let done = Arc::new(AtomicBool::new(false));
    let bar = (!a.quiet && std::io::stderr().is_terminal()).then(|| {
        let (done, sock) = (Arc::clone(&done), sock.clone());
        std::thread::spawn(move || progress(&sock, &done))
    });
    let reply = Session::connect(&sock)?.call(&Request::MigrateSend { options }, &fds, None);
    done.store(true, Ordering::Relaxed);
    if let Some(b) = bar {
        let _ = b.join();
    }
    drop(conn);
    drop(more);
    if let Some(mut c) = child {
        let _ = c.wait();
    }
    let reply = reply?;
    if !reply.ok {
        bail!(
            "{}",
            reply.error.unwrap_or_else(|| "the migration failed".into())
        );
    }
    // The VM has ended here: wait until its process has let go of its
    // folder and disks, so what follows (a start of the same name, a
    // look at the images) sees it gone.
    let t0 = std::time::Instant::now();
    while matches!(
        vm_control::lookup(&name),
        Ok(vm_control::Lookup::Running { .. })
    ) && t0.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut v = serde_json::to_value(reply.migration.unwrap_or_default())?;
    v["vm"] = name.into();
    v["to"] = a.to.clone().into();
    println!("{v}");
    Ok(0)
}

/// Ctrl-C, SIGTERM or SIGHUP while the copy runs cancels it, as virsh
/// migrate does: the VM runs on here and the reply says "cancelled". The
/// signals go to a thread of their own (sigwait). In the last copy it is
/// too late, and the migration finishes. (Were this process killed
/// outright, the VM would cancel on its own when the connection closes.)
fn cancel_on_signals(name: &str, sock: &std::path::Path) -> Result<()> {
    // SAFETY: a sigset_t is plain data; sigemptyset and sigaddset fill it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` and `old` are valid; the calls only read dispositions
    // and write into `set` and the calling thread's mask, which every
    // thread spawned later inherits.
    unsafe {
        libc::sigemptyset(&raw mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // A signal the caller ignores stays ignored (nohup, a
            // background job of a script): blocked, it would be kept for
            // sigwait instead of dropped.
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &raw mut old) == 0
                && old.sa_sigaction == libc::SIG_IGN
            {
                continue;
            }
            libc::sigaddset(&raw mut set, sig);
        }
        let e = libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut());
        if e != 0 {
            bail!("blocking signals: {}", std::io::Error::from_raw_os_error(e));
        }
    }
    let (name, sock) = (name.to_string(), sock.to_path_buf());
    std::thread::spawn(move || loop {
        let mut sig = 0;
        // SAFETY: `set` and `sig` are valid for the call.
        if unsafe { libc::sigwait(&raw const set, &raw mut sig) } != 0 {
            return;
        }
        // Over the progress line, on a terminal.
        let clear = if std::io::stderr().is_terminal() {
            "\r\x1b[K"
        } else {
            ""
        };
        eprintln!("{clear}vm-migrate: cancelling the migration of '{name}'");
        match vm_control::call(&sock, &Request::MigrateCancel, Duration::from_secs(10)) {
            Ok(r) if !r.ok => eprintln!("vm-migrate: {}", r.error.unwrap_or_default()),
            Err(e) => eprintln!("vm-migrate: {e}"),
            Ok(_) => {}
        }
    });
    Ok(())
}

/// One line on stderr, redrawn as the rounds go.
fn progress(sock: &std::path::Path, done: &AtomicBool) {
    let mut err = std::io::stderr();
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        let Ok(r) = vm_control::call(sock, &Request::MigrateStatus, Duration::from_secs(2)) else {
            continue;
        };
        if let Some(m) = r.migration {
            let _ = write!(
                err,
                "\r\x1b[Kmigrating: {}, round {}, {} MiB sent ({} MiB of disks), {} MiB left, \
                 {} pages/s dirtied",
                m.status,
                m.rounds,
                m.bytes >> 20,
                m.disk_bytes >> 20,
                m.remaining >> 20,
                m.dirty_rate
            );
        }
    }
    let _ = write!(err, "\r\x1b[K");
}
