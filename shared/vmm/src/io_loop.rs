//! Where virtio queues are served. The emulator (main) thread has one loop
//! whose epoll descriptor the VM's owner polls alongside its own; each
//! iothread (`iothread1`, ...) blocks on a loop of its own. A queue's
//! ioeventfd is in exactly one loop.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::{lock, MmioTransport};

/// The epoll data of a loop's stop descriptor.
const STOP: u64 = u64::MAX;

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
    /// buffers left (it reads on when the guest adds some).
    Backend {
        device: Arc<Mutex<MmioTransport>>,
        token: usize,
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
        self.handlers.push(Handler::Backend { device, token });
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }

    /// Readable when a queue has work: poll it, then call `run_once(0)`.
    pub fn fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Serves every queue whose notifier fired, waiting up to `timeout_ms`
    /// (-1: forever) for one. Returns false once `stop` (if any) fired.
    pub fn run_once(&self, timeout_ms: i32) -> io::Result<bool> {
        let mut events = [EpollEvent::default(); 16];
        let n = match self.epoll.wait(timeout_ms, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
            Err(e) => return Err(e),
        };
        for ev in &events[..n] {
            if ev.data() == STOP {
                return Ok(false);
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
                Some(Handler::Backend { device, token }) => {
                    while lock(device).backend_ready(*token) {}
                }
                None => {}
            }
        }
        Ok(true)
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
        let stop = EventFd::new(libc::EFD_NONBLOCK)?;
        io.epoll.ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, STOP),
        )?;
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
                while let Ok(true) = io.run_once(-1) {}
            })?;
        let tid = rx
            .recv()
            .map_err(|_| io::Error::other("iothread died at start"))?
            .map_err(io::Error::other)?;
        Ok(Self {
            id,
            tid,
            stop,
            thread: Some(thread),
        })
    }

    pub fn tid(&self) -> u32 {
        self.tid
    }

    /// Stops the thread after the request it is serving, and waits.
    pub fn stop(mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
