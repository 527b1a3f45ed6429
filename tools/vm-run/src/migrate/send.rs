//! The source's side of a live migration, on a thread of its own: the
//! hello, a full pass over guest memory while the guest runs, rounds of
//! the pages written meanwhile (KVM's dirty log and the devices' own),
//! and, once what is left fits the downtime budget, one pause in which
//! the emulator thread hands over the machine's state and the last pages
//! go. The VM ends only after the destination says it runs.

use std::io::{BufWriter, Read};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vm_control::{MigrateOptions, MigrationReport};
use vmm::state::stream::{End, Hello, Join, Reply, Writer};
use vmm::DirtyTracker;

use super::lanes::{self, Lane, Pass};
use super::pace::Pacer;
use super::storage::{Outgoing, Sent};
use super::Conn;
use vmm_sys_util::eventfd::EventFd;

const PAGE: u64 = 4096;
/// Rounds while the guest runs, at most, before the final pause (unless
/// a timeout says otherwise).
const MAX_ROUNDS: u32 = 30;
/// What a pause costs besides the last copy: stopping the vCPUs, reading
/// the state, and the destination building the machine and answering
/// (2 to 10 ms on the development machine).
const PAUSE_COST: Duration = Duration::from_millis(5);

/// What the copy thread and the emulator thread both see.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub(crate) phase: AtomicU32,
    pub(crate) bytes: AtomicU64,
    pub(crate) rounds: AtomicU32,
    pub(crate) dirty_rate: AtomicU64,
    pub(crate) remaining: AtomicU64,
    pub(crate) throttle: AtomicU32,
    pub(crate) downtime_ms: AtomicU64,
    pub(crate) disk_bytes: AtomicU64,
    /// The knobs, which `vm-migrate set` may change while the copy runs:
    /// the downtime budget, and the cap in MiB/s (0: none).
    pub(crate) max_downtime_ms: AtomicU64,
    pub(crate) bandwidth_mib: AtomicU64,
    pub(crate) cancel: AtomicBool,
    /// The commit is on its way: from here on the guest may run at the
    /// destination, so no failure may resume it here.
    pub(crate) committed: AtomicBool,
}

pub(crate) const SETUP: u32 = 0;
pub(crate) const ACTIVE: u32 = 1;
pub(crate) const STOPPING: u32 = 2;

impl Progress {
    pub(crate) fn report(&self, status: &str, t0: Instant) -> MigrationReport {
        MigrationReport {
            status: status.into(),
            total_ms: t0.elapsed().as_millis() as u64,
            downtime_ms: self.downtime_ms.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            rounds: self.rounds.load(Ordering::Relaxed),
            dirty_rate: self.dirty_rate.load(Ordering::Relaxed),
            remaining: self.remaining.load(Ordering::Relaxed),
            throttle: self.throttle.load(Ordering::Relaxed),
            disk_bytes: self.disk_bytes.load(Ordering::Relaxed),
            max_downtime_ms: self.max_downtime_ms.load(Ordering::Relaxed),
            bandwidth_mib: Some(self.bandwidth_mib.load(Ordering::Relaxed)).filter(|&b| b > 0),
        }
    }

    pub(crate) fn status(&self) -> &'static str {
        match self.phase.load(Ordering::Relaxed) {
            SETUP => "setup",
            ACTIVE => "active",
            _ => "stopping",
        }
    }
}

/// From the copy thread to the emulator thread.
#[derive(Debug)]
pub(crate) enum ToMain {
    /// What is left fits the budget: pause and send the state.
    WantStop,
    /// Over: the destination runs the guest (Ok), or it failed.
    Done(Result<(), String>),
    /// The commit went out but the destination's close did not come back:
    /// whether it runs the guest is not known, so the VM stays paused
    /// here (not ended, not resumed) for the user to decide.
    Unsure(String),
}

/// From the emulator thread, once the guest is paused.
#[derive(Debug)]
pub(crate) enum FromMain {
    /// The machine's state (JSON) and the queues' rings.
    Go {
        state: Vec<u8>,
        rings: Vec<(u64, u64)>,
    },
    /// The state could not be read: give up (the VM resumes).
    Abort(String),
}

/// Everything the copy thread takes with it.
pub(crate) struct Copy {
    /// The migration's streams: the first carries the hello, the disks,
    /// the state and the end; each carries its share of guest memory.
    pub(crate) conns: Vec<Conn>,
    pub(crate) tracker: DirtyTracker,
    pub(crate) touched: Vec<(u64, u64)>,
    /// Disks whose contents go along (storage migration).
    pub(crate) disks: Vec<Outgoing>,
    pub(crate) hello: Hello,
    pub(crate) options: MigrateOptions,
    pub(crate) progress: Arc<Progress>,
    pub(crate) to_main: Sender<ToMain>,
    pub(crate) wake: EventFd,
    pub(crate) from_main: Receiver<FromMain>,
}

impl Copy {
    /// The thread's body; tells the emulator thread how it ended.
    pub(crate) fn run(self) {
        // A bug here must not leave the VM waiting for a migration that
        // is gone: where panics unwind (test builds), a panic ends it
        // like an error and the VM runs on. Release builds abort on a
        // panic (Cargo.toml), which ends the VM, so nothing here may
        // panic on what a request gives it (a cap of 0 MiB/s once did).
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.migrate()));
        let msg = match r {
            Ok(Ok(())) => ToMain::Done(Ok(())),
            Ok(Err(e)) if e.is::<Unsure>() => ToMain::Unsure(format!("{e:#}")),
            Ok(Err(e)) => ToMain::Done(Err(format!("{e:#}"))),
            Err(_) if self.progress.committed.load(Ordering::SeqCst) => {
                ToMain::Unsure("the migration thread failed after its commit".into())
            }
            Err(_) => ToMain::Done(Err("the migration thread failed (see vm.log)".into())),
        };
        let _ = self.tracker.stop();
        let _ = self.to_main.send(msg);
        let _ = self.wake.write(1);
    }

    fn migrate(&self) -> Result<()> {
        let t0 = Instant::now();
        let mut reader = self.conns[0].try_clone()?;
        reader.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut lanes = self
            .conns
            .iter()
            .map(Lane::new)
            .collect::<Result<Vec<_>>>()?;
        let r = self.copy(t0, &mut reader, &mut lanes);
        // A cancel comes between records: the first stream can still say
        // so, and the destination reports that rather than a cut stream.
        // (With several streams, the others were shut at once and the
        // destination may well hear of those first.)
        if let Err(e) = &r {
            if e.is::<Cancelled>() {
                let _ = lanes[0].w.abort(&Cancelled.to_string());
            }
        }
        r
    }

    /// The copy, from the joins and the hello to the destination's word.
    fn copy(&self, t0: Instant, reader: &mut Conn, lanes: &mut [Lane]) -> Result<()> {
        // Further streams open with their join, so the destination can
        // take them before it answers the hello.
        for (k, lane) in lanes.iter_mut().enumerate().skip(1) {
            lane.w
                .join(&Join {
                    token: self.hello.token.clone(),
                    stream: k as u32,
                })
                .with_context(|| format!("opening stream {k}"))?;
        }
        let sent = lanes[0]
            .w
            .hello(&self.hello)
            .and_then(|()| lanes[0].w.flush());
        // A destination that refuses may close before the hello is all
        // written: its reason is still worth reading.
        match (sent, Reply::read(reader)) {
            (_, Ok(Reply::Error { error })) => bail!("the destination refused: {error}"),
            (Err(e), _) => return Err(anyhow::Error::new(e).context("sending the hello")),
            (Ok(()), Err(e)) => {
                return Err(anyhow::Error::new(e).context("the destination's answer"))
            }
            (Ok(()), Ok(Reply::Ready)) => {}
            (Ok(()), Ok(Reply::Running)) => bail!("the destination answered out of turn"),
        }
        let opened: u64 = lanes.iter().map(|l| l.w.bytes).sum();
        self.progress.bytes.store(opened, Ordering::Relaxed);
        let pacer = Pacer::new(&self.progress, opened);
        self.tracker.start().context("starting the dirty log")?;
        self.progress.phase.store(ACTIVE, Ordering::Relaxed);
        let mem = self.tracker.memory();
        // Disks first, on the first stream: their contents are most of
        // what moves, and the guest's writes meanwhile are tracked for
        // the rounds.
        let mut disk = Sent::default();
        for d in &self.disks {
            disk += self.send_disk(&mut lanes[0], &pacer, |w, after| d.send_all(w, after))?;
        }
        let mut pending: Vec<Vec<(u64, u64)>> = vec![Vec::new(); self.disks.len()];
        // The first pass: every page that may hold data.
        lanes::send(
            lanes,
            &self.conns,
            mem,
            Pass::Ranges(&self.touched),
            &pacer,
            &self.progress,
        )?;
        let mut rounds = 1;
        let mut last_round = Instant::now();
        // A timeout too far off to reckon is none (adding it would panic).
        let deadline = self
            .options
            .timeout_s
            .and_then(|s| t0.checked_add(Duration::from_secs(s)));
        let mut prev_dirty = u64::MAX;
        // Bytes per second of the last round of dirty pages.
        let mut round_rate: Option<f64> = None;
        loop {
            self.check_cancel()?;
            let budget =
                Duration::from_millis(self.progress.max_downtime_ms.load(Ordering::Relaxed));
            let bitmaps = self.tracker.pages()?;
            let dirty: u64 = bitmaps
                .iter()
                .flatten()
                .map(|w| u64::from(w.count_ones()))
                .sum();
            let disk_dirty: u64 = self
                .disks
                .iter()
                .zip(pending.iter_mut())
                .map(|(d, p)| d.take_dirty(p))
                .sum();
            let secs = last_round.elapsed().as_secs_f64().max(1e-3);
            self.progress
                .dirty_rate
                .store((dirty as f64 / secs) as u64, Ordering::Relaxed);
            let left = dirty * PAGE + disk_dirty;
            self.progress.remaining.store(left, Ordering::Relaxed);
            // Scattered dirty pages go slower than the first pass's long
            // runs (2.5 against 4 GB/s here), so the last copy is reckoned
            // at the last round's rate, or at half the average before any
            // round: reckoned at the average, a guest dirtying 64 MiB was
            // paused for 45 ms against a budget of 30.
            let sent = self.progress.bytes.load(Ordering::Relaxed);
            let rate = sent as f64 / pacer.t0.elapsed().as_secs_f64().max(1e-3);
            let rate = round_rate.unwrap_or(rate / 2.0).min(rate);
            let last_copy = Duration::from_secs_f64(left as f64 / rate.max(1.0)) + PAUSE_COST;
            let fits = left == 0 || last_copy <= budget;
            let late = deadline.is_some_and(|d| Instant::now() >= d);
            if fits || late || rounds >= MAX_ROUNDS {
                // The rest goes in the pause, with what these bitmaps hold.
                let last = Last {
                    bitmaps,
                    disks: pending,
                    disk,
                    rounds,
                };
                return self.finish(lanes, reader, mem, last);
            }
            if self.options.auto_converge && dirty.saturating_mul(10) > prev_dirty.saturating_mul(9)
            {
                // The rounds do not shrink: hold the vCPUs back more.
                let t = (self.progress.throttle.load(Ordering::Relaxed) + 20).min(99);
                self.progress.throttle.store(t, Ordering::Relaxed);
                // The emulator thread applies it, and may be asleep in
                // poll with no deadline: a guest that only computes makes
                // no exits that would wake it.
                self.wake.write(1)?;
            }
            prev_dirty = dirty;
            last_round = Instant::now();
            lanes::send(
                lanes,
                &self.conns,
                mem,
                Pass::Dirty(&bitmaps),
                &pacer,
                &self.progress,
            )?;
            let secs = last_round.elapsed().as_secs_f64().max(1e-4);
            let now = self.progress.bytes.load(Ordering::Relaxed);
            round_rate = Some((now - sent) as f64 / secs).filter(|&r| r > 0.0);
            for (d, p) in self.disks.iter().zip(pending.iter_mut()) {
                disk +=
                    self.send_disk(&mut lanes[0], &pacer, |w, after| d.send_ranges(w, p, after))?;
                p.clear();
            }
            rounds += 1;
            self.progress.rounds.store(rounds, Ordering::Relaxed);
        }
    }

    /// Sends disk records on `lane` with `f`, counting their bytes into
    /// the progress after each, holding the pace, and heeding a cancel.
    fn send_disk(
        &self,
        lane: &mut Lane,
        pacer: &Pacer<'_>,
        f: impl FnOnce(&mut Writer<BufWriter<Conn>>, &mut dyn FnMut(u64) -> Result<()>) -> Result<Sent>,
    ) -> Result<Sent> {
        let mut seen = lane.w.bytes;
        let sent = f(&mut lane.w, &mut |b| {
            let total = self.progress.bytes.fetch_add(b - seen, Ordering::Relaxed) + b - seen;
            seen = b;
            pacer.wait(total);
            self.check_cancel()
        })?;
        self.progress
            .disk_bytes
            .fetch_add(sent.bytes, Ordering::Relaxed);
        Ok(sent)
    }

    fn check_cancel(&self) -> Result<()> {
        if self.progress.cancel.load(Ordering::Relaxed) {
            return Err(Cancelled.into());
        }
        Ok(())
    }

    /// The pause: the emulator thread stops the guest and hands over its
    /// state; the pages written since the last round go on every
    /// stream, each further stream ends, and the disks' last ranges, the
    /// state and the end go on the first; then the destination's word.
    fn finish(
        &self,
        lanes: &mut [Lane],
        reader: &mut Conn,
        mem: &vmm::memory::GuestMemory,
        last_round: Last,
    ) -> Result<()> {
        let Last {
            bitmaps: before,
            disks: mut pending,
            mut disk,
            rounds,
        } = last_round;
        self.progress.phase.store(STOPPING, Ordering::Relaxed);
        self.to_main.send(ToMain::WantStop)?;
        self.wake.write(1)?;
        let (state, rings) = match self.from_main.recv()? {
            FromMain::Go { state, rings } => (state, rings),
            FromMain::Abort(why) => bail!("{why}"),
        };
        let paused = Instant::now();
        let mut last = self.tracker.pages()?;
        for (a, b) in last.iter_mut().zip(&before) {
            for (x, y) in a.iter_mut().zip(b) {
                *x |= y;
            }
        }
        lanes::mark_ranges(mem, &mut last, &rings);
        let pacer = Pacer::uncapped();
        lanes::send(
            lanes,
            &self.conns,
            mem,
            Pass::Dirty(&last),
            &pacer,
            &self.progress,
        )?;
        let end = |lane: &Lane, disk_records| End {
            page_records: lane.records,
            rounds: rounds + 1,
            disk_records,
        };
        for lane in lanes.iter_mut().skip(1) {
            let e = end(lane, 0);
            lane.w.end(&e)?;
        }
        let w = &mut lanes[0];
        // The queues are drained: every write the guest made is tracked.
        for (d, p) in self.disks.iter().zip(pending.iter_mut()) {
            d.take_dirty(p);
            disk += self.send_disk(w, &pacer, |w, after| d.send_ranges(w, p, after))?;
        }
        w.w.state(&state)?;
        let e = end(w, disk.records);
        w.w.end(&e)?;
        let total: u64 = lanes.iter().map(|l| l.w.bytes).sum();
        self.progress.bytes.store(total, Ordering::Relaxed);
        self.progress.rounds.store(rounds + 1, Ordering::Relaxed);
        match Reply::read(reader)? {
            Reply::Running => {}
            Reply::Error { error } => bail!("the destination failed: {error}"),
            Reply::Ready => bail!("the destination answered out of turn"),
        }
        // From the commit on, the guest belongs to the destination: it
        // runs there once the commit arrives and then closes the stream.
        self.progress.committed.store(true, Ordering::SeqCst);
        if let Err(e) = lanes[0].w.commit() {
            return Err(anyhow::Error::new(Unsure(format!(
                "sending the commit: {e}"
            ))));
        }
        self.progress
            .downtime_ms
            .store(paused.elapsed().as_millis() as u64, Ordering::Relaxed);
        let mut b = [0u8; 1];
        match reader.read(&mut b) {
            Ok(0) => Ok(()),
            Ok(_) => Err(anyhow::Error::new(Unsure(
                "the destination sent more after the commit".into(),
            ))),
            Err(e) => Err(anyhow::Error::new(Unsure(format!(
                "no word from the destination after the commit: {e}"
            )))),
        }
    }
}

/// What the last copy starts from: the dirty pages and disk ranges the
/// last round found, and the counts so far.
struct Last {
    bitmaps: Vec<Vec<u64>>,
    disks: Vec<Vec<(u64, u64)>>,
    disk: Sent,
    rounds: u32,
}

/// The commit was sent, and then the destination was not heard from.
#[derive(Debug)]
struct Unsure(String);

impl std::fmt::Display for Unsure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unsure {}

/// The migration was cancelled (`vm-migrate cancel`, or the tool that
/// asked for it went away), between two records.
#[derive(Debug)]
pub(crate) struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cancelled")
    }
}

impl std::error::Error for Cancelled {}
