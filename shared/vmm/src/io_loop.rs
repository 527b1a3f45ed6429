//! Where virtio queues are served. The emulator (main) thread has one loop
//! whose epoll descriptor the VM's owner polls alongside its own; each
//! iothread (`iothread1`, ...) blocks on a loop of its own. A queue's
//! ioeventfd is in exactly one loop.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::{lock, MmioTransport};

/// The epoll data of a loop's stop descriptor.
const STOP: u64 = u64::MAX;
/// The epoll data of an iothread's park descriptor.
const PARK: u64 = u64::MAX - 1;
/// The epoll data of an iothread's confine descriptor.
const CONFINE: u64 = u64::MAX - 2;
/// Drain rounds at most: traffic arriving on a tap keeps a loop busy even
/// with the vCPUs stopped (the guest adds no buffers, so each round is
/// short), and a pause must not wait for the network to fall silent.
const DRAIN_ROUNDS: usize = 64;

/// What one turn of a loop did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Served this many ready descriptors.
    Served(usize),
    /// The stop descriptor fired.
    Stop,
    /// The park descriptor fired (after serving whatever else was ready).
    Park,
    /// The confine descriptor fired (likewise).
    Confine,
}

#[derive(Debug)]
enum Handler {
    /// A queue's notifier (ioeventfd).
    Queue {
        fd: EventFd,
        device: Arc<Mutex<MmioTransport>>,
        queue: usize,
    },
    /// A device's host descriptor (a tap queue), watched edge-triggered:
    /// the device reads until it would block, or until the guest has no
    /// buffers left (it reads on when the guest adds some), or for one
    /// ring's worth: then `again` (watched level-triggered, under the same
    /// handler) brings the loop back after the other descriptors had their
    /// turn, so a flood or a guest that keeps adding buffers cannot hold
    /// the thread.
    Backend {
        device: Arc<Mutex<MmioTransport>>,
        token: usize,
        again: EventFd,
        /// `again` was written and not yet read: only then is it read,
        /// so an ordinary wake costs no extra system call.
        armed: AtomicBool,
    },
}

#[derive(Debug)]
pub struct IoLoop {
    epoll: Epoll,
    handlers: Vec<Handler>,
}

impl IoLoop {
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            epoll: Epoll::new()?,
            handlers: Vec::new(),
        })
    }

    /// Serves `queue` of `device` whenever `fd` (its notifier) fires.
    pub fn add(
        &mut self,
        fd: EventFd,
        device: Arc<Mutex<MmioTransport>>,
        queue: usize,
    ) -> io::Result<()> {
        let data = self.handlers.len() as u64;
        self.epoll.ctl(
            ControlOperation::Add,
            fd.as_raw_fd(),
            EpollEvent::new(EventSet::IN, data),
        )?;
        self.handlers.push(Handler::Queue { fd, device, queue });
        Ok(())
    }

    /// Tells `device` whenever `fd` (which it owns) becomes readable.
    pub fn add_backend(
        &mut self,
        fd: RawFd,
        device: Arc<Mutex<MmioTransport>>,
        token: usize,
    ) -> io::Result<()> {
        let data = self.handlers.len() as u64;
        self.epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN | EventSet::EDGE_TRIGGERED, data),
        )?;
        let again = EventFd::new(libc::EFD_NONBLOCK)?;
        self.epoll.ctl(
            ControlOperation::Add,
            again.as_raw_fd(),
            EpollEvent::new(EventSet::IN, data),
        )?;
        self.handlers.push(Handler::Backend {
            device,
            token,
            again,
            armed: AtomicBool::new(false),
        });
        Ok(())
    }

    /// A new eventfd the loop reports as `data` (STOP, PARK, CONFINE).
    fn control_fd(&self, data: u64) -> io::Result<EventFd> {
        let fd = EventFd::new(libc::EFD_NONBLOCK)?;
        self.epoll.ctl(
            ControlOperation::Add,
            fd.as_raw_fd(),
            EpollEvent::new(EventSet::IN, data),
        )?;
        Ok(fd)
    }

    pub fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }

    /// Readable when a queue has work: poll it, then call `run_once(0)`.
    pub fn fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Serves every queue whose notifier fired, waiting up to `timeout_ms`
    /// (-1: forever) for one.
    pub fn run_once(&self, timeout_ms: i32) -> io::Result<Turn> {
        let mut events = [EpollEvent::default(); 16];
        let n = match self.epoll.wait(timeout_ms, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Turn::Served(0)),
            Err(e) => return Err(e),
        };
        let (mut park, mut confine) = (false, false);
        let mut served = 0;
        for ev in &events[..n] {
            match ev.data() {
                STOP => return Ok(Turn::Stop),
                PARK => {
                    park = true;
                    continue;
                }
                CONFINE => {
                    confine = true;
                    continue;
                }
                _ => served += 1,
            }
            match self.handlers.get(ev.data() as usize) {
                Some(Handler::Queue { fd, device, queue }) => {
                    // Reading resets the counter; notifications that
                    // arrive while we serve fire the descriptor again.
                    let _ = fd.read();
                    if lock(device).queue_notified(*queue) {
                        // More than a ring's worth: come back after the
                        // other descriptors had their turn.
                        let _ = fd.write(1);
                    }
                }
                Some(Handler::Backend {
                    device,
                    token,
                    again,
                    armed,
                }) => {
                    if armed.swap(false, Ordering::Relaxed) {
                        let _ = again.read();
                    }
                    if lock(device).backend_ready(*token) && again.write(1).is_ok() {
                        armed.store(true, Ordering::Relaxed);
                    }
                }
                None => {}
            }
        }
        Ok(if confine {
            Turn::Confine
        } else if park {
            Turn::Park
        } else {
            Turn::Served(served)
        })
    }

    /// Serves what is ready until nothing is (or for `DRAIN_ROUNDS`
    /// turns): with the vCPUs stopped, that finishes every request the
    /// guest queued. False when the stop descriptor fired meanwhile.
    pub fn drain(&self) -> bool {
        for _ in 0..DRAIN_ROUNDS {
            match self.run_once(0) {
                Ok(Turn::Served(0) | Turn::Park | Turn::Confine) => return true,
                Ok(Turn::Served(_)) => {}
                Ok(Turn::Stop) | Err(_) => return false,
            }
        }
        true
    }
}

/// An iothread's pause handshake.
#[derive(Debug, Default)]
struct ParkState {
    wanted: bool,
    parked: bool,
    stop: bool,
}

type Park = Arc<(Mutex<ParkState>, std::sync::Condvar)>;

fn park_lock(p: &Park) -> std::sync::MutexGuard<'_, ParkState> {
    p.0.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The iothread's body: serve until stopped; when asked to park, finish
/// what is queued, say so, and wait to be let go.
fn serve(io: &IoLoop, park_fd: &EventFd, confine_fd: &EventFd, park: &Park) {
    loop {
        match io.run_once(-1) {
            Ok(Turn::Served(_)) => {}
            Ok(Turn::Confine) => {
                let _ = confine_fd.read();
                if crate::seccomp::confine_this_thread(crate::seccomp::MachineThread::IoThread)
                    .is_err()
                {
                    // Unconfined is not an option: stop serving (the
                    // guest's requests to this thread's disks hang).
                    return;
                }
            }
            Ok(Turn::Park) => {
                let _ = park_fd.read();
                if !io.drain() {
                    return;
                }
                let mut p = park_lock(park);
                p.parked = true;
                park.1.notify_all();
                while p.wanted && !p.stop {
                    p = park
                        .1
                        .wait(p)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                p.parked = false;
                if p.stop {
                    return;
                }
            }
            Ok(Turn::Stop) | Err(_) => return,
        }
    }
}

/// The calling thread's id. Through the raw syscall: a statically linked
/// glibc leaves its gettid() wrapper unresolved.
pub fn gettid() -> u32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

/// A thread serving one loop until told to stop.
#[derive(Debug)]
pub struct IoThread {
    pub id: u32,
    tid: u32,
    stop: EventFd,
    park_fd: Arc<EventFd>,
    confine_fd: Arc<EventFd>,
    park: Park,
    thread: Option<JoinHandle<()>>,
}

impl IoThread {
    /// Starts `iothread{id}`. It runs `hook` first; with
    /// `drop_capabilities` it then drops every capability before serving
    /// anything.
    pub fn spawn(
        id: u32,
        io: IoLoop,
        drop_capabilities: bool,
        hook: Option<crate::threads::ThreadHook>,
    ) -> io::Result<Self> {
        let stop = io.control_fd(STOP)?;
        let park_fd = Arc::new(io.control_fd(PARK)?);
        let confine_fd = Arc::new(io.control_fd(CONFINE)?);
        let park: Park = Arc::default();
        let (thread_park_fd, thread_park) = (Arc::clone(&park_fd), Arc::clone(&park));
        let thread_confine_fd = Arc::clone(&confine_fd);
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("iothread{id}"))
            .spawn(move || {
                crate::threads::ThreadHook::run(
                    hook.as_ref(),
                    crate::threads::ThreadRole::IoThread(id),
                );
                if drop_capabilities {
                    if let Err(e) = vm_host::capabilities::drop_all() {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
                let _ = tx.send(Ok(gettid()));
                serve(&io, &thread_park_fd, &thread_confine_fd, &thread_park);
            })?;
        let tid = rx
            .recv()
            .map_err(|_| io::Error::other("iothread died at start"))?
            .map_err(io::Error::other)?;
        Ok(Self {
            id,
            tid,
            stop,
            park_fd,
            confine_fd,
            park,
            thread: Some(thread),
        })
    }

    /// Has the thread add the iothread seccomp filter to itself before it
    /// serves again. Call it once the process-wide filter is in place.
    pub fn confine(&self) {
        let _ = self.confine_fd.write(1);
    }

    /// Has the thread finish every queued request and then wait until
    /// [`IoThread::unpark`]; returns once it waits.
    pub fn park(&self) {
        park_lock(&self.park).wanted = true;
        let _ = self.park_fd.write(1);
        let mut p = park_lock(&self.park);
        while !p.parked && !p.stop && self.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            p = self
                .park
                .1
                .wait_timeout(p, std::time::Duration::from_millis(50))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Lets a parked thread serve again.
    pub fn unpark(&self) {
        park_lock(&self.park).wanted = false;
        self.park.1.notify_all();
    }

    pub fn tid(&self) -> u32 {
        self.tid
    }

    /// Stops the thread after the request it is serving, and waits.
    pub fn stop(mut self) {
        park_lock(&self.park).stop = true;
        self.park.1.notify_all();
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
