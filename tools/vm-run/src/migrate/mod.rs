//! Live migration in vm-run: the source's job (the copy runs on its own
//! thread, `send`) and the destination's side of a start (`recv`).

pub(crate) mod lanes;
pub(crate) mod pace;
pub(crate) mod recv;
pub(crate) mod send;
pub(crate) mod storage;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use vm_control::{MigrateOptions, MigrationReport};
use vmm::state::stream::Hello;
use vmm_sys_util::eventfd::EventFd;

use crate::monitor::Machine;
use crate::timefmt::log;
use send::{Copy, FromMain, Progress, ToMain};

/// Socket buffers of two records: with the default (about 200 KiB for a
/// unix socket) each 1 MiB record had to be drained before the next was
/// written. Much larger ones hold data back at the last copy, which then
/// counts as downtime.
fn grow_buffers(fd: RawFd) {
    let size: libc::c_int = 2 << 20;
    for (force, plain) in [
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
    ] {
        for opt in [force, plain] {
            // SAFETY: setsockopt reads one int from the pointer, which
            // lives for the call.
            let r = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&raw const size).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            // The forcing option needs CAP_NET_ADMIN; the plain one is
            // capped by the host's rmem/wmem_max.
            if r == 0 {
                break;
            }
        }
    }
}

/// The most streams one migration may use (`vm-migrate send --streams`).
pub(crate) const MAX_STREAMS: usize = 16;

/// A random token for a migration's further streams, hex: only a
/// connection that shows it joins (a stranger who connects to the
/// destination's listener first is turned away).
fn token() -> Result<String> {
    let mut b = [0u8; 16];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        bail!("no random bytes for the migration's token");
    }
    Ok(b.iter().fold(String::new(), |mut s, x| {
        use std::fmt::Write as _;
        let _ = write!(s, "{x:02x}");
        s
    }))
}

/// What the threads of a migration's streams share while they run
/// ([`on_every_stream`]): which stream failed first, if any.
#[derive(Debug)]
pub(crate) struct Streams {
    first_failed: AtomicU32,
}

impl Streams {
    /// A stream has failed: the others should stop.
    pub(crate) fn failed(&self) -> bool {
        self.first_failed.load(Ordering::Relaxed) != u32::MAX
    }
}

/// Runs `first` (stream 0) on this thread and each of `rest` (streams 1
/// on) on a thread of its own, all at once. A stream that fails calls
/// `wake`, which shuts the others' sockets: one blocked on a peer that
/// has stopped would otherwise never end. The error returned is the one
/// that came first, not those that followed from it.
pub(crate) fn on_every_stream<A, F>(
    first: impl FnOnce(&Streams) -> Result<A>,
    rest: Vec<F>,
    wake: impl Fn() + Sync,
) -> Result<A>
where
    F: FnOnce(&Streams) -> Result<()> + Send,
{
    let streams = Streams {
        first_failed: AtomicU32::new(u32::MAX),
    };
    let failed = |k: u32| {
        let _ =
            streams
                .first_failed
                .compare_exchange(u32::MAX, k, Ordering::SeqCst, Ordering::SeqCst);
        wake();
    };
    std::thread::scope(|s| {
        let (streams, failed) = (&streams, &failed);
        let others: Vec<_> = rest
            .into_iter()
            .zip(1u32..)
            .map(|(f, k)| {
                s.spawn(move || {
                    let r = f(streams);
                    if r.is_err() {
                        failed(k);
                    }
                    r
                })
            })
            .collect();
        let main = first(streams);
        if main.is_err() {
            failed(0);
        }
        let mut results: Vec<Result<()>> = others
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a migration stream's thread failed")))
            })
            .collect();
        match streams.first_failed.load(Ordering::SeqCst) {
            0 | u32::MAX => {}
            k => results.swap_remove(k as usize - 1)?,
        }
        let main = main?;
        results.into_iter().collect::<Result<Vec<()>>>()?;
        Ok(main)
    })
}

/// A migration's connection: a unix or TCP socket the tool made.
#[derive(Debug)]
pub enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    /// Takes a descriptor that must be a connected stream socket.
    pub(crate) fn from_fd(fd: OwnedFd) -> Result<Self> {
        let mut domain: libc::c_int = 0;
        let mut ty: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes one int through each pointer, which
        // live for the call; `len` says how much room there is.
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_DOMAIN,
                (&raw mut domain).cast(),
                &raw mut len,
            )
        };
        // SAFETY: as above.
        let r2 = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TYPE,
                (&raw mut ty).cast(),
                &raw mut len,
            )
        };
        if r < 0 || r2 < 0 || ty != libc::SOCK_STREAM {
            bail!("the migration's descriptor is not a stream socket");
        }
        grow_buffers(fd.as_raw_fd());
        match domain {
            libc::AF_UNIX => Ok(Self::Unix(UnixStream::from(fd))),
            libc::AF_INET | libc::AF_INET6 => {
                let s = TcpStream::from(fd);
                // Small records (replies, the state) must not wait.
                let _ = s.set_nodelay(true);
                Ok(Self::Tcp(s))
            }
            _ => bail!("the migration's socket is neither unix nor TCP"),
        }
    }

    pub(crate) fn try_clone(&self) -> std::io::Result<Self> {
        Ok(match self {
            Self::Unix(s) => Self::Unix(s.try_clone()?),
            Self::Tcp(s) => Self::Tcp(s.try_clone()?),
        })
    }

    /// Ends both directions, which wakes a thread blocked on it.
    pub(crate) fn shutdown(&self) {
        self.shutdown_how(std::net::Shutdown::Both);
    }

    fn shutdown_how(&self, how: std::net::Shutdown) {
        let _ = match self {
            Self::Unix(s) => s.shutdown(how),
            Self::Tcp(s) => s.shutdown(how),
        };
    }

    /// Ends what comes in, which wakes a thread blocked reading it; a
    /// reply can still be written.
    pub(crate) fn shutdown_read(&self) {
        self.shutdown_how(std::net::Shutdown::Read);
    }

    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        match self {
            Self::Unix(s) => s.set_read_timeout(t),
            Self::Tcp(s) => s.set_read_timeout(t),
        }
    }
}

impl std::os::fd::AsFd for Conn {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Self::Unix(s) => s.as_fd(),
            Self::Tcp(s) => s.as_fd(),
        }
    }
}

impl AsRawFd for Conn {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Self::Unix(s) => s.as_raw_fd(),
            Self::Tcp(s) => s.as_raw_fd(),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Unix(s) => s.read(buf),
            Self::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Unix(s) => s.write(buf),
            Self::Tcp(s) => s.write(buf),
        }
    }
    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        match self {
            Self::Unix(s) => s.write_vectored(bufs),
            Self::Tcp(s) => s.write_vectored(bufs),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Unix(s) => s.flush(),
            Self::Tcp(s) => s.flush(),
        }
    }
}

/// A migration in progress, as the emulator thread sees it.
#[derive(Debug)]
pub(crate) struct MigrateJob {
    /// The tool's control connection: the final reply goes there. It is
    /// watched too: the tool gone (Ctrl-C, killed) cancels the migration,
    /// as a save whose tool goes away is abandoned.
    pub(crate) stream: UnixStream,
    /// The tool has gone away (its connection closed).
    client_gone: bool,
    pub(crate) progress: Arc<Progress>,
    /// The VM ran when the migration began (it runs again on failure).
    pub(crate) was_running: bool,
    /// The guest is paused for the final copy.
    pub(crate) stopped: bool,
    /// The vCPUs are held back for auto-converge right now.
    held: bool,
    /// Disks served through a write tracker (their contents go along).
    tracked: Vec<usize>,
    done: EventFd,
    from_copy: Receiver<ToMain>,
    to_copy: Sender<FromMain>,
    t0: Instant,
}

/// What happened, for the emulator thread.
#[derive(Debug)]
pub(crate) enum MigrateEvent {
    Pending,
    /// The destination runs the guest: end here.
    Completed(MigrationReport),
    /// The migration failed or was cancelled: the VM goes on here.
    Failed(MigrationReport, String),
    /// Whether the destination runs the guest is not known: the VM stays
    /// paused here.
    Unsure(MigrationReport, String),
}

/// After a migration that failed in its last pause: the disks opened
/// afresh (locks and caches), before the guest may run again here.
pub(crate) fn take_disks_back(m: &mut Machine) -> Result<()> {
    for i in 0..m.disks.len() {
        let d = m.spec.disks[i].clone();
        m.disks[i]
            .reopen(&d)
            .map_err(|e| e.context(format!("disk {}", d.id)))?;
        let img = m.disks[i].config.image.clone();
        m.vm.as_mut()
            .expect("the machine runs while served")
            .replace_disk(&d.id, &img)
            .map_err(|e| anyhow!("{e}"))?;
    }
    Ok(())
}

/// Refuses knobs no migration can go by: a downtime budget of 0, or a
/// cap of 0 MiB/s given at the start (where none means no cap).
fn check_knobs(max_downtime_ms: Option<u64>, bandwidth_mib: Option<u64>) -> Result<()> {
    if max_downtime_ms == Some(0) {
        bail!("a downtime budget of 0 ms cannot be met");
    }
    if bandwidth_mib == Some(0) {
        bail!("a bandwidth cap of 0 MiB/s moves nothing (leave it out for no cap)");
    }
    Ok(())
}

impl MigrateJob {
    /// Starts the copy thread on the connection the tool handed over.
    pub(crate) fn start(
        m: &mut Machine,
        running: bool,
        options: MigrateOptions,
        fds: Vec<OwnedFd>,
        stream: UnixStream,
    ) -> Result<Self> {
        if fds.is_empty() || fds.len() > MAX_STREAMS {
            bail!("migrate-send needs 1 to {MAX_STREAMS} descriptors (the connections)");
        }
        let conns = fds
            .into_iter()
            .map(Conn::from_fd)
            .collect::<Result<Vec<_>>>()?;
        check_knobs(Some(options.max_downtime_ms), options.bandwidth_mib)?;
        let copied = storage::chosen(&m.spec, &options)?;
        let hello = Hello {
            spec: serde_json::to_value(&m.spec)?,
            cpuid: m.vm().guest_cpuid(),
            disks: storage::hello_disks(m, &copied),
            streams: conns.len() as u32,
            token: if conns.len() > 1 {
                token()?
            } else {
                String::new()
            },
        };
        let progress = Arc::new(Progress::default());
        progress
            .max_downtime_ms
            .store(options.max_downtime_ms, Ordering::Relaxed);
        progress
            .bandwidth_mib
            .store(options.bandwidth_mib.unwrap_or(0), Ordering::Relaxed);
        let done = EventFd::new(libc::EFD_NONBLOCK)?;
        let wake = done.try_clone()?;
        let (to_main, from_copy) = channel();
        let (to_copy, from_main) = channel();
        stream.set_nonblocking(false)?;
        // From here on a failure must serve the disks plainly again.
        let disks = storage::track(m, running, &copied)?;
        let vm = m.vm();
        let (mem, memfd) = vm.memory();
        let touched = vmm::memory::touched_ranges(mem, memfd);
        let copy = Copy {
            conns,
            tracker: vm.dirty_tracker(),
            touched,
            disks,
            hello,
            options,
            progress: Arc::clone(&progress),
            to_main,
            wake,
            from_main,
        };
        if let Err(e) = std::thread::Builder::new()
            .name("migrate".into())
            .spawn(move || copy.run())
        {
            storage::untrack(m, running, &copied);
            bail!("starting the migration thread: {e}");
        }
        Ok(Self {
            stream,
            client_gone: false,
            progress,
            was_running: running,
            stopped: false,
            held: false,
            tracked: copied,
            done,
            from_copy,
            to_copy,
            t0: Instant::now(),
        })
    }

    /// The migration is over here without a pause (it failed): the disks
    /// it tracked are served plainly again. After the last pause the
    /// disks are opened afresh instead ([`take_disks_back`]).
    pub(crate) fn untrack(&self, m: &mut Machine) {
        storage::untrack(m, self.was_running && !self.stopped, &self.tracked);
    }

    pub(crate) fn fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.done.as_raw_fd()];
        if !self.client_gone {
            fds.push(self.stream.as_raw_fd());
        }
        fds
    }

    /// Whether the tool's connection has closed. Bytes it sends (it has
    /// nothing more to say) are read away, a request's worth per call at
    /// most: a tool that keeps writing cannot hold the emulator thread
    /// (poll brings us back for the rest).
    fn client_hung_up(&self) -> bool {
        let mut buf = [0u8; 4096];
        for _ in 0..16 {
            // SAFETY: recv into our buffer, without blocking.
            let n = unsafe {
                libc::recv(
                    self.stream.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            match n {
                0 => return true,
                n if n > 0 => {}
                _ => {
                    let e = std::io::Error::last_os_error();
                    match e.kind() {
                        std::io::ErrorKind::Interrupted => {}
                        std::io::ErrorKind::WouldBlock => return false,
                        _ => return true,
                    }
                }
            }
        }
        false
    }

    pub(crate) fn report(&self) -> MigrationReport {
        self.progress.report(self.progress.status(), self.t0)
    }

    /// Auto-converge: in each 100 ms the vCPUs run for 100 - throttle ms
    /// and are held for the rest. Returns how soon to look again (ms).
    pub(crate) fn throttle(&mut self, m: &Machine) -> Option<i32> {
        let t = u128::from(self.progress.throttle.load(Ordering::Relaxed));
        if self.stopped || !self.was_running || t == 0 {
            return None;
        }
        let pos = self.t0.elapsed().as_millis() % 100;
        let hold = pos < t;
        if hold != self.held {
            m.vm().hold_vcpus(hold);
            self.held = hold;
        }
        let next = if hold { t - pos } else { 100 - pos };
        Some(next.clamp(1, 100) as i32)
    }

    /// Lets held vCPUs go (the migration is over, either way).
    fn release(&mut self, m: &Machine) {
        if self.held {
            m.vm().hold_vcpus(false);
            self.held = false;
        }
    }

    /// Changes the knobs of the copy under way (`bandwidth_mib` 0 lifts
    /// the cap); the copy thread heeds them from its next record or round.
    pub(crate) fn set(
        &self,
        max_downtime_ms: Option<u64>,
        bandwidth_mib: Option<u64>,
    ) -> Result<()> {
        if max_downtime_ms.is_none() && bandwidth_mib.is_none() {
            bail!("nothing to change: give a downtime budget or a bandwidth");
        }
        check_knobs(max_downtime_ms, None)?;
        if let Some(ms) = max_downtime_ms {
            self.progress.max_downtime_ms.store(ms, Ordering::Relaxed);
        }
        if let Some(mib) = bandwidth_mib {
            self.progress.bandwidth_mib.store(mib, Ordering::Relaxed);
        }
        Ok(())
    }

    pub(crate) fn cancel(&self) {
        self.progress.cancel.store(true, Ordering::Relaxed);
    }

    /// The copy thread spoke: pause and hand over the state, or the end;
    /// or the tool went away: cancel, unless the last copy has begun.
    pub(crate) fn on_ready(&mut self, m: &mut Machine) -> MigrateEvent {
        if !self.client_gone && self.client_hung_up() {
            self.client_gone = true;
            if self.stopped {
                log("the tool that asked for the migration went away; too late to cancel");
            } else {
                log("the tool that asked for the migration went away: cancelling");
                self.cancel();
            }
        }
        let _ = self.done.read();
        let mut event = MigrateEvent::Pending;
        while let Ok(msg) = self.from_copy.try_recv() {
            match msg {
                ToMain::WantStop => {
                    let go = self.stop(m);
                    let _ = self.to_copy.send(go);
                }
                ToMain::Done(Ok(())) => {
                    event = MigrateEvent::Completed(self.progress.report("completed", self.t0));
                }
                ToMain::Unsure(why) => {
                    self.release(m);
                    event = MigrateEvent::Unsure(self.progress.report("unknown", self.t0), why);
                }
                ToMain::Done(Err(why)) => {
                    self.release(m);
                    let status = if self.progress.cancel.load(Ordering::Relaxed) {
                        "cancelled"
                    } else {
                        "failed"
                    };
                    event = MigrateEvent::Failed(self.progress.report(status, self.t0), why);
                }
            }
        }
        event
    }

    /// Pauses the guest (queues drained, disks flushed), lets go of the
    /// disks' locks for the destination, and reads the machine's state.
    fn stop(&mut self, m: &mut Machine) -> FromMain {
        self.release(m);
        if self.was_running {
            if let Err(e) = m.vm().pause() {
                m.vm().resume();
                return FromMain::Abort(format!("pausing: {e}"));
            }
        }
        self.stopped = true;
        for d in &mut m.disks {
            d.unlock();
        }
        let vm = m.vm();
        match vm
            .save_state()
            .map_err(|e| e.to_string())
            .and_then(|s| serde_json::to_vec(&s).map_err(|e| e.to_string()))
        {
            Ok(state) => FromMain::Go {
                state,
                rings: vm.queue_rings(),
            },
            Err(e) => FromMain::Abort(format!("reading the machine's state: {e}")),
        }
    }
}
