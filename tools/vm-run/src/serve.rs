//! The emulator thread's loop once the guest runs: guest events, disk
//! queues, the console and control requests, until the VM ends. Nothing
//! here may end the VM by accident: a state.json that cannot be written
//! is reported to the caller and logged, and the VM stays as it was.

use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use vm_control::{Listener, Reply, Request, ShutdownMode};
use vm_spec::{Action, RunState, VmState};
use vmm::vcpu::VcpuEvent;

use crate::clients::{self, Clients, Incoming};
use crate::commit::CommitJob;
use crate::console;
use crate::jobs::{on_commit, on_migrate, on_save, Jobs};
use crate::migrate::MigrateJob;
use crate::monitor::{Machine, EXIT_CRASHED};
use crate::save::SaveJob;
use crate::timefmt::log;

pub(crate) enum Next {
    Continue,
    Exit(i32),
}

pub(crate) fn serve(
    m: &mut Machine,
    listener: &Listener,
    dir: &Path,
    state: &mut VmState,
    stop: RawFd,
) -> Result<i32> {
    let pollin = |fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let mut clients = Clients::default();
    let mut jobs = Jobs::default();
    loop {
        let mut fds = vec![
            pollin(listener.inner.as_raw_fd()),
            pollin(m.vm().event_fd()),
            pollin(stop),
        ];
        // The queues the emulator thread serves (disks without an iothread),
        // left alone while the VM is paused.
        let io = m.vm().io_fd().filter(|_| state.state != RunState::Paused);
        fds.push(pollin(io.unwrap_or(-1)));
        let console = m.endpoint.fds();
        fds.extend(console.iter().map(|&fd| pollin(fd)));
        let first_save = fds.len();
        fds.extend(jobs.save.iter().flat_map(SaveJob::fds).map(pollin));
        fds.extend(jobs.commit.iter().flat_map(CommitJob::fds).map(pollin));
        fds.extend(jobs.migrate.iter().flat_map(MigrateJob::fds).map(pollin));
        let first_client = fds.len();
        fds.extend(clients.fds().into_iter().map(pollin));
        // Input the serial FIFO could not take yet is retried shortly; a
        // client's deadline wakes us too.
        let pending = (!m.pending.is_empty()).then_some(10);
        let pending = match (pending, jobs.migrate.as_mut().and_then(|j| j.throttle(m))) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let timeout = match (pending, clients.timeout_ms()) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(-1),
        };
        // SAFETY: poll reads and writes the pollfd structs of the vector.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e).context("poll");
        }
        if fds[2].revents != 0 {
            log("stopping on a signal");
            return Ok(0);
        }
        if fds[3].revents != 0 {
            m.vm().service_io().context("serving disk queues")?;
        }
        if fds[1].revents != 0 {
            for ev in m.vm().take_events() {
                if let Next::Exit(code) = on_guest_event(m, dir, state, &ev)? {
                    return Ok(code);
                }
            }
        }
        if fds[first_save..first_client].iter().any(|p| p.revents != 0) {
            if let Next::Exit(code) = on_save(m, dir, state, &mut jobs.save) {
                return Ok(code);
            }
            on_commit(m, dir, state, &mut jobs.commit);
            if let Next::Exit(code) = on_migrate(m, dir, state, &mut jobs.migrate) {
                return Ok(code);
            }
        }
        for p in &fds[first_client..] {
            if p.revents != 0 {
                if let Some(req) = clients.on_ready(p.fd) {
                    if let Next::Exit(code) = on_request(m, dir, state, req, &mut jobs)? {
                        return Ok(code);
                    }
                }
            }
        }
        clients.expire();
        if fds[0].revents != 0 {
            clients.accept(listener);
        }
        for p in &fds[4..first_save] {
            if p.revents != 0 {
                m.endpoint.on_ready(p.fd, &mut m.pending);
            }
        }
        if let Some(vm) = m.vm.as_ref() {
            console::feed(vm, &mut m.pending);
        }
    }
}

/// Records a new state. On failure (a full file system, a folder where
/// state.json was) nothing changes and the caller hears why.
fn set_state(
    m: &Machine,
    dir: &Path,
    state: &mut VmState,
    s: RunState,
    reason: &str,
) -> Result<()> {
    let new = m.state(dir, s, reason);
    if let Err(e) = vm_control::write_state(dir, &new) {
        let msg = format!("cannot record the state {s} ({reason}): {e}");
        log(&msg);
        return Err(anyhow!(msg));
    }
    *state = new;
    log(&format!("state {s}: {reason}"));
    Ok(())
}

/// As `set_state` for what the guest did: it happened whatever the file
/// says, so the state in memory follows and a failed write is only logged.
pub(crate) fn record_event(
    m: &Machine,
    dir: &Path,
    state: &mut VmState,
    s: RunState,
    reason: &str,
) {
    if set_state(m, dir, state, s, reason).is_err() {
        *state = m.state(dir, s, reason);
    }
}

fn apply(
    m: &mut Machine,
    dir: &Path,
    state: &mut VmState,
    action: Action,
    what: &str,
    crash: bool,
) -> Result<Next> {
    match action {
        Action::Destroy => {
            log(&format!("guest {what}: stopping"));
            Ok(Next::Exit(if crash { EXIT_CRASHED } else { 0 }))
        }
        Action::Restart => {
            log(&format!("guest {what}: restarting"));
            m.restart()?;
            record_event(m, dir, state, RunState::Running, "restarted");
            Ok(Next::Continue)
        }
        Action::Preserve => {
            let s = if crash {
                RunState::Crashed
            } else {
                RunState::Paused
            };
            record_event(m, dir, state, s, what);
            Ok(Next::Continue)
        }
    }
}

fn on_guest_event(
    m: &mut Machine,
    dir: &Path,
    state: &mut VmState,
    ev: &VcpuEvent,
) -> Result<Next> {
    match ev {
        VcpuEvent::Reset if m.shutdown_requested => {
            apply(m, dir, state, Action::Destroy, "shut down", false)
        }
        VcpuEvent::Reset => {
            let a = m.spec.on_reboot;
            apply(m, dir, state, a, "rebooted", false)
        }
        VcpuEvent::PowerOff => {
            let a = m.spec.on_poweroff;
            apply(m, dir, state, a, "powered off", false)
        }
        VcpuEvent::Crash(why) => {
            log(&format!("guest crashed: {why}"));
            let a = m.spec.on_crash;
            apply(m, dir, state, a, "crashed", true)
        }
        VcpuEvent::Failed(why) => {
            log(&format!("VMM failure: {why}"));
            Err(anyhow!("{why}"))
        }
    }
}

fn on_request(
    m: &mut Machine,
    dir: &Path,
    state: &mut VmState,
    incoming: Incoming,
    jobs: &mut Jobs,
) -> Result<Next> {
    let busy = matches!(
        incoming.request,
        Ok(Request::Pause
            | Request::Resume
            | Request::Shutdown { .. }
            | Request::Reboot
            | Request::Save { .. }
            | Request::SnapshotDisks { .. }
            | Request::CommitDisk { .. }
            | Request::MigrateSend { .. })
    );
    let job = if jobs.save.is_some() {
        Some("a save")
    } else if jobs.commit.is_some() {
        Some("a disk commit")
    } else if jobs.migrate.is_some() {
        Some("a migration")
    } else {
        None
    };
    if let (true, Some(what)) = (busy, job) {
        clients::reply(
            &incoming.stream,
            &Reply::err(format!("{what} is in progress; try again when it is done")),
        );
        return Ok(Next::Continue);
    }
    match &incoming.request {
        Ok(Request::MigrateStatus) => {
            let r = match &jobs.migrate {
                Some(j) => {
                    let mut r = Reply::ok(None);
                    r.migration = Some(j.report());
                    r
                }
                None => Reply::err("no migration in progress"),
            };
            clients::reply(&incoming.stream, &r);
            return Ok(Next::Continue);
        }
        Ok(Request::MigrateCancel) => {
            let r = match &jobs.migrate {
                Some(j) if !j.stopped => {
                    j.cancel();
                    Reply::ok(None)
                }
                Some(_) => Reply::err("the migration is in its last copy: too late to cancel"),
                None => Reply::err("no migration in progress"),
            };
            clients::reply(&incoming.stream, &r);
            return Ok(Next::Continue);
        }
        Ok(Request::MigrateSet {
            max_downtime_ms,
            bandwidth_mib,
        }) => {
            let r = match &jobs.migrate {
                Some(j) if !j.stopped => match j.set(*max_downtime_ms, *bandwidth_mib) {
                    Ok(()) => {
                        let mut r = Reply::ok(None);
                        r.migration = Some(j.report());
                        r
                    }
                    Err(e) => Reply::err(crate::one_line(&e)),
                },
                Some(_) => Reply::err("the migration is in its last copy: too late to change it"),
                None => Reply::err("no migration in progress"),
            };
            clients::reply(&incoming.stream, &r);
            return Ok(Next::Continue);
        }
        Ok(Request::MigrateSend { options }) => {
            let r = if matches!(state.state, RunState::Running | RunState::Paused) {
                let running = state.state == RunState::Running;
                let stream = incoming.stream.try_clone()?;
                MigrateJob::start(m, running, options.clone(), incoming.fds, stream)
            } else {
                Err(anyhow!("cannot migrate a VM that is {}", state.state))
            };
            match r {
                Ok(job) => jobs.migrate = Some(job),
                Err(e) => clients::reply(&incoming.stream, &Reply::err(crate::one_line(&e))),
            }
            return Ok(Next::Continue);
        }
        _ => {}
    }
    let save = &mut jobs.save;
    if let Ok(Request::Save { fsync }) = incoming.request {
        if !matches!(state.state, RunState::Running | RunState::Paused) {
            clients::reply(
                &incoming.stream,
                &Reply::err(format!("cannot save a VM that is {}", state.state)),
            );
            return Ok(Next::Continue);
        }
        let running = state.state == RunState::Running;
        match SaveJob::start(
            m,
            running,
            fsync,
            incoming.fds,
            incoming.stream.try_clone()?,
        ) {
            Ok(job) => {
                if running {
                    record_event(m, dir, state, RunState::Paused, "saving");
                }
                *save = Some(job);
            }
            Err(e) => clients::reply(&incoming.stream, &Reply::err(crate::one_line(&e))),
        }
        return Ok(Next::Continue);
    }
    if let Ok(Request::SnapshotDisks { disks }) = &incoming.request {
        if !matches!(state.state, RunState::Running | RunState::Paused) {
            clients::reply(
                &incoming.stream,
                &Reply::err(format!("cannot snapshot a VM that is {}", state.state)),
            );
            return Ok(Next::Continue);
        }
        let running = state.state == RunState::Running;
        let reply = match crate::snapshot::snapshot_disks(m, running, disks, &incoming.fds) {
            Ok(report) => {
                // The spec now names the overlays: state.json says so.
                record_event(m, dir, state, state.state, "disk snapshot");
                let mut r = Reply::ok(Some(state.clone()));
                r.snapshot = Some(report);
                r
            }
            Err(e) => Reply::err(crate::one_line(&e)),
        };
        clients::reply(&incoming.stream, &reply);
        return Ok(Next::Continue);
    }
    if let Ok(Request::CommitDisk { id, overlay, base }) = &incoming.request {
        if !matches!(state.state, RunState::Running | RunState::Paused) {
            clients::reply(
                &incoming.stream,
                &Reply::err(format!(
                    "cannot commit a disk of a VM that is {}",
                    state.state
                )),
            );
            return Ok(Next::Continue);
        }
        let running = state.state == RunState::Running;
        let stream = incoming.stream.try_clone()?;
        match CommitJob::start(m, running, id, overlay, base, &incoming.fds, stream) {
            Ok(job) => jobs.commit = Some(job),
            Err(e) => clients::reply(&incoming.stream, &Reply::err(crate::one_line(&e))),
        }
        return Ok(Next::Continue);
    }
    if let Ok(Request::SaveCommit) = incoming.request {
        clients::reply(&incoming.stream, &Reply::err("no save to commit"));
        return Ok(Next::Continue);
    }
    let (reply, next) = match incoming.request {
        Err(e) => (Reply::err(e), Next::Continue),
        Ok(req) => match handle(m, dir, state, &req) {
            Ok(r) => r,
            // A reboot that could not build the machine again ends the VM.
            Err(e) if m.vm.is_none() => return Err(e),
            Err(e) => (Reply::err(crate::one_line(&e)), Next::Continue),
        },
    };
    clients::reply(&incoming.stream, &reply);
    Ok(next)
}

fn handle(
    m: &mut Machine,
    dir: &Path,
    state: &mut VmState,
    req: &Request,
) -> Result<(Reply, Next)> {
    let next = match req {
        Request::Status => {
            // A state.json that was deleted or garbled is written anew.
            if vm_control::read_state(dir).is_err() {
                let _ = vm_control::write_state(dir, state);
            }
            Next::Continue
        }
        Request::Pause => {
            if state.state == RunState::Running {
                let flushed = m.vm().pause();
                if let Err(e) = set_state(m, dir, state, RunState::Paused, "user") {
                    m.vm().resume();
                    return Err(e.context("not paused"));
                }
                flushed.map_err(|e| anyhow!("the VM is paused, but {e}"))?;
            }
            Next::Continue
        }
        Request::Resume => {
            if state.state == RunState::Paused {
                m.vm().resume();
                if let Err(e) = set_state(m, dir, state, RunState::Running, "unpaused") {
                    let _ = m.vm().pause();
                    return Err(e.context("not resumed"));
                }
            }
            Next::Continue
        }
        Request::Shutdown { mode } => {
            m.shutdown_requested = true;
            if state.state == RunState::Paused {
                m.vm().resume();
                record_event(m, dir, state, RunState::Running, "unpaused for shutdown");
            }
            match mode {
                ShutdownMode::Acpi => {
                    m.vm().power_button().context("pressing the power button")?;
                    log("shutdown requested: ACPI power button pressed");
                }
                ShutdownMode::CtrlAltDel => {
                    m.vm().ctrl_alt_del();
                    log("shutdown requested: Ctrl-Alt-Del sent");
                }
            }
            Next::Continue
        }
        Request::Kill => {
            log("destroyed by request");
            let mut s = state.clone();
            s.state = RunState::Shutoff;
            s.reason = "destroyed".into();
            return Ok((Reply::ok(Some(s)), Next::Exit(0)));
        }
        Request::Reboot => {
            m.restart()?;
            record_event(m, dir, state, RunState::Running, "rebooted by request");
            Next::Continue
        }
        Request::Stats => {
            let mut reply = Reply::ok(None);
            reply.stats = Some(m.stats());
            return Ok((reply, Next::Continue));
        }
        Request::Save { .. }
        | Request::SaveCommit
        | Request::SnapshotDisks { .. }
        | Request::CommitDisk { .. }
        | Request::MigrateSend { .. }
        | Request::MigrateStatus
        | Request::MigrateCancel
        | Request::MigrateSet { .. } => {
            unreachable!("answered in on_request")
        }
    };
    Ok((Reply::ok(Some(state.clone())), next))
}
