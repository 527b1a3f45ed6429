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
