//! vCPU threads: a small state machine (running, paused, exiting) around
//! KVM_RUN. Another thread stops a vCPU by setting the wanted state and
//! kicking the thread with a signal whose handler sets `immediate_exit`,
//! so even a guest in `cli; hlt`, which never leaves KVM_RUN on its own,
//! stops at once (the way Firecracker does it).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use kvm_bindings::kvm_run;
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use crate::devices::{DeviceEvent, MmioBus, PioBus};
use crate::state::vcpu::VcpuState;

/// The signal that kicks a vCPU out of KVM_RUN.
pub fn kick_signal() -> i32 {
    SIGRTMIN()
}

thread_local! {
    /// This thread's kvm_run page, for the kick signal's handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    KVM_RUN.with(|p| {
        let run = p.get();
        if !run.is_null() {
            // SAFETY: the pointer is this thread's own kvm_run mapping,
            // set before KVM_RUN is first called and valid while the vCPU
            // fd lives (the thread owns it); a volatile byte store is
            // async-signal-safe.
            unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
        }
    });
}

/// Installs the kick handler (once per process).
pub fn install_kick_handler() -> std::io::Result<()> {
    register_signal_handler(kick_signal(), on_kick)
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    Run,
    Pause,
    Exit,
}

/// Why a vCPU stopped the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuEvent {
    /// The guest asked for a reset (i8042).
    Reset,
    /// The guest asked to power off (a KVM system event).
    PowerOff,
    /// Triple fault, KVM internal error, failed entry: the guest crashed.
    Crash(String),
    /// Our side failed.
    Failed(String),
}

/// Where vCPU threads report: a channel, and an eventfd that wakes the
/// VM's main loop (which polls it with its other descriptors).
#[derive(Debug, Clone)]
pub struct EventSink {
    pub tx: Sender<VcpuEvent>,
    pub wake: Arc<vmm_sys_util::eventfd::EventFd>,
}

impl EventSink {
    fn send(&self, ev: VcpuEvent) {
        let _ = self.tx.send(ev);
        let _ = self.wake.write(1);
    }
}

/// What another thread asks of a paused vCPU (its mailbox).
#[derive(Debug, Clone)]
pub enum VcpuRequest {
    /// Complete any port or MMIO access the last exit left pending, then
    /// read the whole state. The list is KVM's MSRs to save.
    SaveState(Arc<[u32]>),
}

/// The vCPU's answer to a [`VcpuRequest`].
#[derive(Debug)]
pub enum VcpuResponse {
    State(Box<VcpuState>),
    Error(String),
}

/// The state a vCPU thread and the VM share, under one lock.
#[derive(Debug)]
struct Ctl {
    wanted: Wanted,
    /// The thread acknowledged a pause and waits.
    paused: bool,
    request: Option<VcpuRequest>,
    response: Option<VcpuResponse>,
}

/// Shared between a vCPU thread and the VM.
#[derive(Debug)]
pub struct Control {
    state: Mutex<Ctl>,
    cond: Condvar,
    /// `state.wanted == Run`, readable without the lock: the vCPU loop
    /// checks it on every exit and takes the lock only when there is
    /// something to do.
    running: AtomicBool,
    /// Asks the thread to add the vCPU seccomp filter (see `Vcpu::confine`).
    confine: AtomicBool,
}

impl Control {
    fn new(wanted: Wanted) -> Self {
        Self {
            state: Mutex::new(Ctl {
                wanted,
                paused: false,
                request: None,
                response: None,
            }),
            cond: Condvar::new(),
            running: AtomicBool::new(wanted == Wanted::Run),
            confine: AtomicBool::new(false),
        }
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, Ctl> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Debug)]
pub struct Vcpu {
    pub index: u8,
    thread: Option<JoinHandle<()>>,
    pthread: libc::pthread_t,
    tid: u32,
    control: Arc<Control>,
}

impl Vcpu {
    /// Starts the thread `vcpu{index}` running `fd` (or paused, when
    /// `wanted` is `Pause`: a restored VM that is to stay paused).
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        index: u8,
        wanted: Wanted,
        fd: VcpuFd,
        bus: Arc<Mutex<PioBus>>,
        mmio: Arc<MmioBus>,
        events: EventSink,
        drop_capabilities: bool,
        hook: Option<crate::threads::ThreadHook>,
    ) -> std::io::Result<Self> {
        let control = Arc::new(Control::new(wanted));
        let c = Arc::clone(&control);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("vcpu{index}"))
            .spawn(move || {
                crate::threads::ThreadHook::run(
                    hook.as_ref(),
                    crate::threads::ThreadRole::Vcpu(index),
                );
                if drop_capabilities {
                    if let Err(e) = vm_host::capabilities::drop_all() {
                        events.send(VcpuEvent::Failed(e.to_string()));
                        return;
                    }
                }
                // SAFETY: pthread_self has no preconditions.
                let ids = (crate::io_loop::gettid(), unsafe { libc::pthread_self() });
                let _ = ready_tx.send(ids);
                run_loop(fd, &bus, &mmio, &events, &c);
            })?;
        let (tid, pthread) = ready_rx
            .recv()
            .map_err(|_| std::io::Error::other("vCPU thread died at start"))?;
        Ok(Self {
            index,
            thread: Some(thread),
            pthread,
            tid,
            control,
        })
    }

    /// The thread id, for affinity and /proc.
    pub fn tid(&self) -> u32 {
        self.tid
    }

    fn kick(&self) {
        // SAFETY: the thread is alive until joined (we join only in
        // `exit`, after the last kick), so its pthread_t is valid.
        unsafe { libc::pthread_kill(self.pthread, kick_signal()) };
    }

    pub fn set_wanted(&self, w: Wanted) {
        let mut s = self.control.lock();
        s.wanted = w;
        self.control
            .running
            .store(w == Wanted::Run, Ordering::Release);
        if w == Wanted::Run {
            s.paused = false;
        }
        self.control.cond.notify_all();
        drop(s);
        if w != Wanted::Run {
            self.kick();
        }
    }

    /// Has the thread add the vCPU seccomp filter to itself before it next
    /// enters the guest. Call it once the process-wide filter is in place.
    pub fn confine(&self) {
        self.control.confine.store(true, Ordering::Release);
        self.kick();
    }

    /// Waits until the thread has acknowledged a pause.
    pub fn wait_paused(&self) {
        let mut s = self.control.lock();
        while s.wanted == Wanted::Pause && !s.paused {
            let (g, timeout) = self
                .control
                .cond
                .wait_timeout(s, std::time::Duration::from_millis(20))
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            s = g;
            if timeout.timed_out() {
                // The first kick may have landed before KVM_RUN: kick again.
                drop(s);
                self.kick();
                s = self.control.lock();
            }
        }
    }

    /// Asks the paused thread for its state and waits for the answer.
    pub fn save_state(&self, msrs: Arc<[u32]>) -> Result<VcpuState, String> {
        let mut s = self.control.lock();
        if s.wanted != Wanted::Pause {
            return Err(format!("vcpu{}: not paused", self.index));
        }
        s.response = None;
        s.request = Some(VcpuRequest::SaveState(msrs));
        self.control.cond.notify_all();
        loop {
            if let Some(r) = s.response.take() {
                return match r {
                    VcpuResponse::State(st) => Ok(*st),
                    VcpuResponse::Error(e) => Err(format!("vcpu{}: {e}", self.index)),
                };
            }
            if self.thread.as_ref().is_none_or(JoinHandle::is_finished) {
                return Err(format!("vcpu{}: its thread has ended", self.index));
            }
            s = self
                .control
                .cond
                .wait_timeout(s, std::time::Duration::from_millis(50))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Stops the thread and waits for it.
    pub fn exit(mut self) {
        self.set_wanted(Wanted::Exit);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run_loop(
    mut fd: VcpuFd,
    bus: &Mutex<PioBus>,
    mmio: &MmioBus,
    events: &EventSink,
    control: &Control,
) {
    let run_ptr: *mut kvm_run = fd.get_kvm_run();
    KVM_RUN.with(|p| p.set(run_ptr));
    let mut stopped = false;
    loop {
        // Cleared before the check: a kick that lands after it sets the flag
        // again, so a change made just after the check still stops the next
        // KVM_RUN at once.
        fd.set_kvm_immediate_exit(0);
        if stopped || !control.running.load(Ordering::Acquire) {
            let mut s = control.lock();
            let mut told_clock = false;
            loop {
                match s.wanted {
                    Wanted::Exit => {
                        KVM_RUN.with(|p| p.set(std::ptr::null_mut()));
                        return;
                    }
                    Wanted::Pause => {
                        if !told_clock {
                            // Tells a kvmclock guest it was stopped, so its
                            // watchdogs do not count the pause as a lockup
                            // (fails harmlessly for other guests).
                            let _ = fd.kvmclock_ctrl();
                            told_clock = true;
                        }
                        if let Some(req) = s.request.take() {
                            s.response = Some(answer(&mut fd, &req, bus, mmio));
                        }
                        s.paused = true;
                        control.cond.notify_all();
                        s = control
                            .cond
                            .wait(s)
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                    }
                    Wanted::Run if stopped => {
                        // After a terminal event, only Exit matters.
                        s = control
                            .cond
                            .wait(s)
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                    }
                    Wanted::Run => break,
                }
            }
        }
        // Checked last before entering the guest, so a thread that was
        // paused when asked still confines itself before it runs again.
        // A plain load first: this runs on every exit, the swap once.
        if control.confine.load(Ordering::Acquire) && control.confine.swap(false, Ordering::AcqRel)
        {
            if let Err(e) = crate::seccomp::confine_this_thread(crate::seccomp::MachineThread::Vcpu)
            {
                stopped = true;
                events.send(VcpuEvent::Failed(e.to_string()));
                continue;
            }
        }
        let event = match fd.run() {
            Ok(exit) => match handle_exit(exit, bus, mmio) {
                Handled::Done => None,
                Handled::Event(ev) => Some(ev),
                // Its details are in kvm_run, which the exit borrowed.
                Handled::InternalError => Some(VcpuEvent::Crash(internal_error(&mut fd))),
            },
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => None,
            Err(e) => Some(VcpuEvent::Failed(format!("KVM_RUN: {e}"))),
        };
        if let Some(ev) = event {
            stopped = true;
            events.send(ev);
        }
    }
}

/// What one exit came to.
enum Handled {
    /// A device access, done.
    Done,
    Event(VcpuEvent),
    /// KVM's internal error: the caller reads its details from kvm_run.
    InternalError,
}

/// Serves one exit: a device access, or an event for the VM.
fn handle_exit(exit: VcpuExit<'_>, bus: &Mutex<PioBus>, mmio: &MmioBus) -> Handled {
    let lock_bus = || {
        bus.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    let event = match exit {
        VcpuExit::IoOut(port, data) => match lock_bus().write(port, data) {
            Some(DeviceEvent::Reset) => VcpuEvent::Reset,
            Some(DeviceEvent::PowerOff) => VcpuEvent::PowerOff,
            None => return Handled::Done,
        },
        VcpuExit::IoIn(port, data) => {
            lock_bus().read(port, data);
            return Handled::Done;
        }
        VcpuExit::MmioRead(addr, data) => {
            mmio.read(addr, data);
            return Handled::Done;
        }
        VcpuExit::MmioWrite(addr, data) => {
            mmio.write(addr, data);
            return Handled::Done;
        }
        VcpuExit::Intr | VcpuExit::Hlt | VcpuExit::IrqWindowOpen => return Handled::Done,
        VcpuExit::Shutdown => VcpuEvent::Crash("triple fault".into()),
        VcpuExit::SystemEvent(kind, _) => match kind {
            kvm_bindings::KVM_SYSTEM_EVENT_RESET => VcpuEvent::Reset,
            kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => VcpuEvent::PowerOff,
            other => VcpuEvent::Crash(format!("system event {other}")),
        },
        VcpuExit::InternalError => return Handled::InternalError,
        VcpuExit::FailEntry(reason, cpu) => VcpuEvent::Crash(format!(
            "VM entry failed (hardware reason 0x{reason:x}, cpu {cpu})"
        )),
        other => VcpuEvent::Crash(format!("unexpected exit {other:?}")),
    };
    Handled::Event(event)
}

/// Answers a request on the paused vCPU's own thread. A save first
/// enters KVM_RUN with `immediate_exit` set: KVM completes the port or
/// MMIO access of the last exit (advancing RIP, storing what was read)
/// and returns at once, so the state read next has no guest I/O half
/// done. An access that needs another exit to finish gets it served.
fn answer(fd: &mut VcpuFd, req: &VcpuRequest, bus: &Mutex<PioBus>, mmio: &MmioBus) -> VcpuResponse {
    match req {
        VcpuRequest::SaveState(msrs) => {
            for _ in 0..8 {
                fd.set_kvm_immediate_exit(1);
                match fd.run() {
                    Err(e) if e.errno() == libc::EINTR => break,
                    Err(e) => return VcpuResponse::Error(format!("completing I/O: {e}")),
                    // An event here (a reset written by that last access)
                    // is lost to the saved state on purpose: the guest
                    // restarts right after the write.
                    Ok(exit) => {
                        let _ = handle_exit(exit, bus, mmio);
                    }
                }
            }
            fd.set_kvm_immediate_exit(0);
            match VcpuState::save(fd, msrs) {
                Ok(s) => VcpuResponse::State(Box::new(s)),
                Err(e) => VcpuResponse::Error(e.to_string()),
            }
        }
    }
}

/// KVM's internal-error details: the suberror and its data words.
fn internal_error(fd: &mut VcpuFd) -> String {
    let run = fd.get_kvm_run();
    // SAFETY: after a KVM_EXIT_INTERNAL_ERROR exit, `internal` is the
    // active member of the exit union.
    let internal = unsafe { run.__bindgen_anon_1.internal };
    let n = (internal.ndata as usize).min(internal.data.len());
    let data: Vec<String> = internal.data[..n]
        .iter()
        .map(|d| format!("0x{d:x}"))
        .collect();
    let what = match internal.suberror {
        1 => "emulation failure",
        2 => "simultaneous exception",
        3 => "delivery event",
        4 => "unexpected exit reason",
        _ => "unknown",
    };
    format!(
        "KVM internal error {} ({what}) [{}]",
        internal.suberror,
        data.join(" ")
    )
}
