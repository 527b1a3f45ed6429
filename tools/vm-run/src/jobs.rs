//! The requests that outlast their turn in the emulator thread's loop
//! (a save, a live disk commit, a migration): what happens when their
//! thread reports, and the VM's state and the client's reply that follow.

use std::path::Path;

use vm_control::Reply;
use vm_spec::{RunState, VmState};

use crate::clients;
use crate::commit::CommitJob;
use crate::migrate::{MigrateEvent, MigrateJob};
use crate::monitor::Machine;
use crate::save::{SaveEvent, SaveJob};
use crate::serve::{record_event, Next};
use crate::timefmt::log;

/// The requests that run past their reply's turn in the loop; one at a
/// time.
#[derive(Default)]
pub(crate) struct Jobs {
    pub(crate) save: Option<SaveJob>,
    pub(crate) commit: Option<CommitJob>,
    pub(crate) migrate: Option<MigrateJob>,
}

/// A migration's copy thread spoke: pause for the last copy, or its end.
pub(crate) fn on_migrate(
    m: &mut Machine,
    dir: &Path,
    state: &mut VmState,
    migrate: &mut Option<MigrateJob>,
) -> Next {
    let Some(job) = migrate.as_mut() else {
        return Next::Continue;
    };
    let was_stopped = job.stopped;
    let event = job.on_ready(m);
    if job.stopped && !was_stopped && job.was_running {
        record_event(m, dir, state, RunState::Paused, "migrating: the last copy");
    }
    let (reply, next) = match event {
        MigrateEvent::Pending => return Next::Continue,
        MigrateEvent::Completed(report) => {
            log(&format!(
                "migrated: {} ms, downtime {} ms, {} bytes in {} rounds",
                report.total_ms, report.downtime_ms, report.bytes, report.rounds
            ));
            let mut s = state.clone();
            s.state = RunState::Shutoff;
            s.reason = "migrated".into();
            let mut r = Reply::ok(Some(s));
            r.migration = Some(report);
            (r, Next::Exit(0))
        }
        MigrateEvent::Failed(report, why) => {
            log(&format!(
                "migration {}: {why}; the VM goes on here",
                report.status
            ));
            let back = if job.stopped {
                crate::migrate::take_disks_back(m)
            } else {
                job.untrack(m);
                Ok(())
            };
            let mut r = match back {
                Ok(()) => {
                    if job.stopped && job.was_running {
                        m.vm().resume();
                        record_event(m, dir, state, RunState::Running, "migration failed");
                    }
                    Reply::err(format!("not migrated: {why}"))
                }
                Err(e) => {
                    // Its disks are in use elsewhere: running it here
                    // could corrupt them. It stays paused.
                    log(&format!("the disks could not be taken back: {e:#}"));
                    record_event(m, dir, state, RunState::Paused, "migration failed");
                    Reply::err(format!(
                        "not migrated: {why}; the VM stays paused here: its disks could not \
                         be taken back ({})",
                        crate::one_line(&e)
                    ))
                }
            };
            r.migration = Some(report);
            (r, Next::Continue)
        }
        MigrateEvent::Unsure(report, why) => {
            log(&format!(
                "migration outcome unknown: {why}; the VM stays paused"
            ));
            job.untrack(m);
            record_event(m, dir, state, RunState::Paused, "migration outcome unknown");
            let mut r = Reply::err(format!(
                "{why}: the VM stays paused here; if the destination does not run it, \
                 `vm-run resume` it here"
            ));
            r.migration = Some(report);
            (r, Next::Continue)
        }
    };
    clients::reply(&job.stream, &reply);
    *migrate = None;
    next
}

/// A live commit's copy finished: the chain changed (or not), and its
/// client hears which.
pub(crate) fn on_commit(
    m: &mut Machine,
    dir: &Path,
    state: &mut VmState,
    commit: &mut Option<CommitJob>,
) {
    let Some(job) = commit.as_mut() else {
        return;
    };
    let Some(r) = job.on_ready(m) else {
        return;
    };
    let reply = match r {
        Ok(report) => {
            // The spec may name another top now: state.json says so.
            record_event(m, dir, state, state.state, "disk commit");
            let mut r = Reply::ok(Some(state.clone()));
            r.commit = Some(report);
            r
        }
        Err(e) => {
            log(&format!("{e:#}"));
            Reply::err(crate::one_line(&e))
        }
    };
    clients::reply(&job.stream, &reply);
    *commit = None;
}

/// A save's writer finished or its client spoke.
pub(crate) fn on_save(
    m: &mut Machine,
    dir: &Path,
    state: &mut VmState,
    save: &mut Option<SaveJob>,
) -> Next {
    let Some(job) = save.as_mut() else {
        return Next::Continue;
    };
    match job.on_ready() {
        SaveEvent::Pending => Next::Continue,
        SaveEvent::Written(reply) => {
            log("saved; waiting for the commit");
            clients::reply(job.stream(), &reply);
            Next::Continue
        }
        SaveEvent::Commit => {
            log("save committed: the VM ends");
            let mut s = state.clone();
            s.state = RunState::Shutoff;
            s.reason = "saved".into();
            clients::reply(job.stream(), &Reply::ok(Some(s)));
            Next::Exit(0)
        }
        SaveEvent::Abandoned(reply, why) => {
            log(&format!("save abandoned ({why}): the VM goes on as it was"));
            if let Some(r) = reply {
                clients::reply(job.stream(), &r);
            }
            if job.was_running {
                m.vm().resume();
                record_event(m, dir, state, RunState::Running, "save abandoned");
            }
            *save = None;
            Next::Continue
        }
    }
}
