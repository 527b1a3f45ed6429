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

use anyhow::{anyhow, bail, Context, Result};
use vm_control::{MigrateOptions, MigrationReport};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm::state::stream::{End, Hello, Reply, Writer};
use vmm::DirtyTracker;

use super::storage::{Outgoing, Sent};
use super::Conn;
use vmm_sys_util::eventfd::EventFd;

const PAGE: u64 = 4096;
/// Pages per record (1 MiB).
const RUN: u64 = 256;
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
    pub(crate) conn: Conn,
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

/// Counts bytes and holds the pace to `--bandwidth`.
struct Pacer {
    t0: Instant,
    cap: Option<f64>,
}

impl Pacer {
    fn wait(&self, sent: u64) {
        if let Some(cap) = self.cap {
            let due = Duration::from_secs_f64(sent as f64 / cap);
            if let Some(ahead) = due.checked_sub(self.t0.elapsed()) {
                std::thread::sleep(ahead);
            }
        }
    }
}

impl Copy {
    /// The thread's body; tells the emulator thread how it ended.
    pub(crate) fn run(self) {
        // A bug here must not leave the VM waiting for a migration that
        // is gone: a panic ends it like an error (the VM runs on).
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
        let mut reader = self.conn.try_clone()?;
        reader.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut w = Writer::new(BufWriter::with_capacity(1 << 20, self.conn.try_clone()?))?;
        let sent = w.hello(&self.hello).and_then(|()| w.flush());
        // A destination that refuses may close before the hello is all
        // written: its reason is still worth reading.
        match (sent, Reply::read(&mut reader)) {
            (_, Ok(Reply::Error { error })) => bail!("the destination refused: {error}"),
            (Err(e), _) => return Err(anyhow::Error::new(e).context("sending the hello")),
            (Ok(()), Err(e)) => {
                return Err(anyhow::Error::new(e).context("the destination's answer"))
            }
            (Ok(()), Ok(Reply::Ready)) => {}
            (Ok(()), Ok(Reply::Running)) => bail!("the destination answered out of turn"),
        }
        let pacer = Pacer {
            t0: Instant::now(),
            cap: self.options.bandwidth_mib.map(|m| (m << 20) as f64),
        };
        self.tracker.start().context("starting the dirty log")?;
        self.progress.phase.store(ACTIVE, Ordering::Relaxed);
        let mem = self.tracker.memory();
        let mut records = 0u64;
        // Disks first: their contents are most of what moves, and the
        // guest's writes meanwhile are tracked for the rounds.
        let mut disk = Sent::default();
        for d in &self.disks {
            disk += d.send_all(&mut w, &mut |b| self.after_record(b, &pacer))?;
            self.progress
                .disk_bytes
                .store(disk.bytes, Ordering::Relaxed);
        }
        let mut pending: Vec<Vec<(u64, u64)>> = vec![Vec::new(); self.disks.len()];
        // The first pass: every page that may hold data; zero pages are
        // left out (the destination's memory starts zeroed).
        for &(gpa, len) in &self.touched {
            self.check_cancel()?;
            let mut at = gpa;
            while at < gpa + len {
                let n = (gpa + len - at).min(RUN * PAGE);
                records += send_range(&mut w, mem, at, n, true)?;
                at += n;
                self.progress.bytes.store(w.bytes, Ordering::Relaxed);
                pacer.wait(w.bytes);
            }
        }
        let mut rounds = 1;
        let mut last_round = Instant::now();
        let deadline = self.options.timeout_s.map(|s| t0 + Duration::from_secs(s));
        let budget = Duration::from_millis(self.options.max_downtime_ms);
        let mut prev_dirty = u64::MAX;
        // Bytes per second of the last round of dirty pages.
        let mut round_rate: Option<f64> = None;
        loop {
            self.check_cancel()?;
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
            let rate = w.bytes as f64 / pacer.t0.elapsed().as_secs_f64().max(1e-3);
            let rate = round_rate.unwrap_or(rate / 2.0).min(rate);
            let last_copy = Duration::from_secs_f64(left as f64 / rate.max(1.0)) + PAUSE_COST;
            let fits = left == 0 || last_copy <= budget;
            let late = deadline.is_some_and(|d| Instant::now() >= d);
            if fits || late || rounds >= MAX_ROUNDS {
                // The rest goes in the pause, with what these bitmaps hold.
                let last = Last {
                    bitmaps,
                    disks: pending,
                    records,
                    disk,
                    rounds,
                };
                return self.finish(&mut w, &mut reader, mem, last);
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
            let sent = w.bytes;
            records += send_dirty(&mut w, mem, &bitmaps, &pacer, &self.progress)?;
            let secs = last_round.elapsed().as_secs_f64().max(1e-4);
            round_rate = Some((w.bytes - sent) as f64 / secs).filter(|&r| r > 0.0);
            for (d, p) in self.disks.iter().zip(pending.iter_mut()) {
                disk += d.send_ranges(&mut w, p, &mut |b| self.after_record(b, &pacer))?;
                p.clear();
            }
            self.progress
                .disk_bytes
                .store(disk.bytes, Ordering::Relaxed);
            rounds += 1;
            self.progress.rounds.store(rounds, Ordering::Relaxed);
        }
    }

    /// After each disk record: progress, the pace, a cancel.
    fn after_record(&self, bytes: u64, pacer: &Pacer) -> Result<()> {
        self.progress.bytes.store(bytes, Ordering::Relaxed);
        pacer.wait(bytes);
        self.check_cancel()
    }

    fn check_cancel(&self) -> Result<()> {
        if self.progress.cancel.load(Ordering::Relaxed) {
            bail!("cancelled");
        }
        Ok(())
    }

    /// The pause: the emulator thread stops the guest and hands over its
    /// state; the pages written since the last round, the queues' rings,
    /// the state and the end go; then the destination's word.
    fn finish(
        &self,
        w: &mut Writer<BufWriter<Conn>>,
        reader: &mut Conn,
        mem: &vmm::memory::GuestMemory,
        last_round: Last,
    ) -> Result<()> {
        let Last {
            bitmaps: before,
            disks: mut pending,
            mut records,
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
        mark_ranges(mem, &mut last, &rings);
        let pacer = Pacer {
            t0: Instant::now(),
            cap: None,
        };
        records += send_dirty(w, mem, &last, &pacer, &self.progress)?;
        // The queues are drained: every write the guest made is tracked.
        for (d, p) in self.disks.iter().zip(pending.iter_mut()) {
            d.take_dirty(p);
            disk += d.send_ranges(w, p, &mut |_| Ok(()))?;
        }
        self.progress
            .disk_bytes
            .store(disk.bytes, Ordering::Relaxed);
        w.state(&state)?;
        w.end(&End {
            page_records: records,
            rounds: rounds + 1,
            disk_records: disk.records,
        })?;
        self.progress.bytes.store(w.bytes, Ordering::Relaxed);
        self.progress.rounds.store(rounds + 1, Ordering::Relaxed);
        match Reply::read(reader)? {
            Reply::Running => {}
            Reply::Error { error } => bail!("the destination failed: {error}"),
            Reply::Ready => bail!("the destination answered out of turn"),
        }
        // From the commit on, the guest belongs to the destination: it
        // runs there once the commit arrives and then closes the stream.
        self.progress.committed.store(true, Ordering::SeqCst);
        if let Err(e) = w.commit() {
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
    records: u64,
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

/// Sets the bits of every page that `ranges` touch.
fn mark_ranges(mem: &vmm::memory::GuestMemory, bitmaps: &mut [Vec<u64>], ranges: &[(u64, u64)]) {
    for &(gpa, len) in ranges {
        for (i, r) in mem.iter().enumerate() {
            for p in vmm::dirty::pages_in(r.start_addr().0, r.len(), gpa, len) {
                if let Some(w) = bitmaps[i].get_mut((p / 64) as usize) {
                    *w |= 1 << (p % 64);
                }
            }
        }
    }
}

/// Sends each page the bitmaps name, in runs; zero pages as zeroes.
fn send_dirty(
    w: &mut Writer<BufWriter<Conn>>,
    mem: &vmm::memory::GuestMemory,
    bitmaps: &[Vec<u64>],
    pacer: &Pacer,
    progress: &Progress,
) -> Result<u64> {
    let mut records = 0;
    for (r, bits) in mem.iter().zip(bitmaps) {
        let base = r.start_addr().0;
        let pages = r.len() / PAGE;
        let mut p = 0;
        while p < pages {
            if bits[(p / 64) as usize] & (1 << (p % 64)) == 0 {
                // Skip a clean word at once.
                if p % 64 == 0 && bits[(p / 64) as usize] == 0 {
                    p += 64;
                } else {
                    p += 1;
                }
                continue;
            }
            let start = p;
            while p < pages && p - start < RUN && bits[(p / 64) as usize] & (1 << (p % 64)) != 0 {
                p += 1;
            }
            records += send_range(w, mem, base + start * PAGE, (p - start) * PAGE, false)?;
            progress.bytes.store(w.bytes, Ordering::Relaxed);
            pacer.wait(w.bytes);
        }
    }
    Ok(records)
}

/// Sends `[gpa, gpa + len)` (in one memory region) as runs of data pages
/// and runs of zero pages; with `skip_zero` the zero runs are left out.
/// Returns the records sent.
fn send_range(
    w: &mut Writer<BufWriter<Conn>>,
    mem: &vmm::memory::GuestMemory,
    gpa: u64,
    len: u64,
    skip_zero: bool,
) -> Result<u64> {
    let slice = mem
        .get_slice(GuestAddress(gpa), len as usize)
        .map_err(|e| anyhow!("reading guest memory at {gpa:#x}: {e}"))?;
    // SAFETY: the slice is `len` bytes of one mapped region, which stays
    // mapped while `mem` is borrowed. The guest may write these bytes
    // while they are read here (no copy first: it cost a fifth of the
    // source's time). Such bytes are only summed and sent, and a record
    // whose data changed between the two arrives torn: the destination
    // holds those pages owed until the next round, where the dirty log
    // sends them again; in the final pass the guest is paused.
    let data = unsafe { std::slice::from_raw_parts(slice.ptr_guard().as_ptr(), len as usize) };
    let mut records = 0;
    let mut pages = data
        .chunks(PAGE as usize)
        .map(vmm::memory::is_zero)
        .peekable();
    let mut start = 0usize;
    while let Some(zero) = pages.next() {
        let mut end = start + 1;
        while pages.next_if_eq(&zero).is_some() {
            end += 1;
        }
        let at = gpa + start as u64 * PAGE;
        if !zero {
            w.pages(at, &data[start * PAGE as usize..end * PAGE as usize])?;
            records += 1;
        } else if !skip_zero {
            w.zeroes(at, (end - start) as u64)?;
            records += 1;
        }
        start = end;
    }
    Ok(records)
}
