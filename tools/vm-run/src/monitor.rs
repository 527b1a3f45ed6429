//! The VM process: starts the machine, publishes its state and control
//! socket, and serves requests and guest events until the VM ends.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use vm_control::{Listener, Liveness, Reply, Request};
use vm_host::cgroup::{Hierarchy, VmCgroup};
use vm_spec::{Action, Feature, RunState, SerialMode, VmSpec, VmState};
use vmm::boot::BootConfig;
use vmm::devices::SerialOut;
use vmm::threads::{ThreadHook, ThreadRole};
use vmm::vcpu::VcpuEvent;
use vmm::{Vm, VmConfig};

use crate::console::{self, Endpoint, Pending};
use crate::disks::OpenDisk;
use crate::nets::OpenNet;
use crate::timefmt::{log, now_secs};

/// Exit status when the guest crashed (foreground, on_crash = destroy).
pub const EXIT_CRASHED: i32 = 3;

/// What vm-run can give effect to today; other spec fields are refused
/// with a message naming them.
const SUPPORTED: &[Feature] = &[
    Feature::Initrd,
    Feature::SerialPty,
    Feature::SerialSocket,
    Feature::VcpuPinning,
    Feature::EmulatorPinning,
    Feature::CpuShares,
    Feature::CpuQuota,
    Feature::NumaTune,
    Feature::Hugepages,
    Feature::Disks,
    Feature::Nets,
    Feature::Iothreads,
    Feature::IothreadPinning,
];

/// Where the serial console goes.
#[derive(Debug, Clone)]
pub enum Console {
    Stdio,
    File(PathBuf),
    Null,
    /// A pty, linked as `console` in the VM's folder.
    Pty,
    /// A unix socket at this path.
    Socket(PathBuf),
}

/// Runs `spec` to the end. `detached` picks the console default and
/// `ready` (a pipe) receives the VmState line once the guest runs.
pub fn run(
    spec: VmSpec,
    detached: bool,
    console: Option<PathBuf>,
    ready: Option<File>,
) -> Result<i32> {
    spec.require_supported("vm-run", SUPPORTED)
        .map_err(|e| anyhow!("{e}"))?;
    let name = spec.name.to_string();
    let dir = vm_control::vm_dir(&name, false)?;
    claim(&dir, &name)?;
    let guard = DirGuard(dir.clone());
    vm_control::vm_dir(&name, true)?;
    let console = match (&spec.serial, console) {
        (_, Some(p)) => Console::File(p),
        (Some(s), None) => match s.mode {
            SerialMode::File => Console::File(s.path.clone().expect("validated: file has a path")),
            SerialMode::Null => Console::Null,
            SerialMode::Pty => Console::Pty,
            SerialMode::Socket => {
                Console::Socket(s.path.clone().expect("validated: socket has a path"))
            }
            SerialMode::Stdio if !detached => Console::Stdio,
            SerialMode::Stdio => Console::File(dir.join("console.log")),
        },
        (None, None) if detached => Console::File(dir.join("console.log")),
        (None, None) => Console::Stdio,
    };
    let endpoint = match &console {
        Console::Pty => Endpoint::pty(&dir.join("console"))?,
        Console::Socket(p) => Endpoint::socket(p)?,
        _ => Endpoint::None,
    };
    if let Some(n) = &spec.numatune {
        vm_host::affinity::check_nodes_online(&n.nodeset)
            .map_err(|m| anyhow!("numatune.nodeset: {m}"))?;
    }
    // Into the cgroup before any other thread exists, so every thread
    // starts in the VM's groups; the machine's threads then move
    // themselves into theirs.
    let cgroup = enter_cgroup(&spec);
    let mut machine = match Machine::start(spec, console, endpoint, cgroup.clone()) {
        Ok(m) => m,
        Err(e) => {
            if let Some(cg) = cgroup {
                cg.leave();
            }
            return Err(e);
        }
    };
    let tids = Threads::of(machine.vm());
    apply_affinity(&machine.spec, &tids)?;
    // The machine is built: this thread needs no privilege any more (the
    // vCPU threads dropped theirs as they started; cgroup files need none).
    vm_host::capabilities::drop_all()?;
    let listener = Listener::bind(&dir.join("control.sock"))?;
    let mut state = machine.state(&dir, RunState::Running, "booted");
    vm_control::write_state(&dir, &state)?;
    log(&format!("started VM {name} (pid {})", std::process::id()));
    if let Some(mut r) = ready {
        let line = serde_json::to_string(&state)? + "\n";
        r.write_all(line.as_bytes())
            .context("reporting readiness")?;
    }
    let stop = install_stop_signals()?;
    // Last step of setup: from here on, syscalls a VMM never needs fail.
    vmm::seccomp::install_all_threads()?;
    machine.vm().confine_threads();
    let code = serve(&mut machine, &listener, &dir, &mut state, stop);
    drop(listener);
    drop(guard);
    drop(std::mem::take(&mut machine.endpoint));
    if let Some(vm) = machine.vm.take() {
        let remains = vm.dismantle();
        // Disks and taps close here, before the teardown child is made.
        machine.disks.clear();
        machine.nets.clear();
        remains.release_in_background();
    }
    code
}

/// The machine's threads: vCPUs in order, iothreads with their numbers.
#[derive(Debug, Clone)]
struct Threads {
    vcpus: Vec<u32>,
    iothreads: Vec<(u32, u32)>,
}

impl Threads {
    fn of(vm: &Vm) -> Self {
        Self {
            vcpus: vm.vcpu_tids(),
            iothreads: vm.iothread_tids(),
        }
    }
}

/// Makes the VM's cgroup (`emulator`, `vcpuN` and `iothreadN` groups,
/// after removing dead VMs' groups), moves this process in with its
/// main thread in `emulator`, and applies the spec's shares and quotas.
/// Without cgroups (or the right to make them) the VM runs unplaced, with
/// a line in its log.
fn enter_cgroup(spec: &VmSpec) -> Option<Arc<VmCgroup>> {
    let h = Hierarchy::detect()?;
    vm_host::cgroup::remove_stale(&h, |pid| Liveness::of(pid) == Liveness::Alive);
    let vcpus = u8::try_from(spec.vcpus).unwrap_or(u8::MAX);
    let made = VmCgroup::create(
        h,
        &spec.name.to_string(),
        std::process::id(),
        vcpus,
        spec.iothreads,
    )
    .and_then(|cg| cg.enter().map(|()| cg));
    match made {
        Ok(cg) => {
            if let Some(t) = &spec.cputune {
                apply_cpu_tuning(&cg, t, vcpus.into());
            }
            Some(Arc::new(cg))
        }
        Err(e) => {
            log(&format!("running without a cgroup: {e}"));
            None
        }
    }
}

/// Each vCPU thread and iothread moves itself into its group as it starts.
fn placement_hook(cg: Arc<VmCgroup>) -> ThreadHook {
    ThreadHook(Arc::new(move |role: ThreadRole| {
        let group = role.name();
        if let Err(e) = cg.attach_self(&group) {
            log(&format!("{group} stays outside its cgroup: {e}"));
        }
    }))
}

/// The spec's vcpupin, iothreadpin and emulatorpin, checked against the
/// host's online CPUs (a spec may be written for a bigger host: it fails
/// here, at start).
fn apply_affinity(spec: &VmSpec, tids: &Threads) -> Result<()> {
    let Some(t) = &spec.cputune else {
        return Ok(());
    };
    for (&vcpu, list) in &t.vcpupin {
        vm_host::affinity::check_online(list)
            .map_err(|m| anyhow!("cputune.vcpupin.{vcpu}: {m}"))?;
        let tid = tids.vcpus[vcpu as usize];
        vm_host::affinity::set(tid, list).with_context(|| format!("pinning vcpu{vcpu}"))?;
    }
    for (&n, list) in &t.iothreadpin {
        vm_host::affinity::check_online(list)
            .map_err(|m| anyhow!("cputune.iothreadpin.{n}: {m}"))?;
        if let Some(&(_, tid)) = tids.iothreads.iter().find(|(id, _)| *id == n) {
            vm_host::affinity::set(tid, list).with_context(|| format!("pinning iothread{n}"))?;
        }
    }
    if let Some(list) = &t.emulatorpin {
        vm_host::affinity::check_online(list).map_err(|m| anyhow!("cputune.emulatorpin: {m}"))?;
        vm_host::affinity::set(std::process::id(), list).context("pinning the emulator thread")?;
    }
    Ok(())
}

/// The spec's shares and CPU bandwidth on the VM's cgroups.
fn apply_cpu_tuning(cg: &VmCgroup, t: &vm_spec::CpuTune, vcpus: usize) {
    use vm_host::cgroup::CpuTuning;
    let mut results = Vec::new();
    if t.shares.is_some() {
        results.push(cg.set_cpu_tuning(
            None,
            CpuTuning {
                shares: t.shares,
                ..CpuTuning::default()
            },
        ));
    }
    let vcpu = CpuTuning {
        shares: None,
        period: t.vcpu_period,
        quota: t.vcpu_quota,
    };
    if vcpu != CpuTuning::default() {
        for i in 0..vcpus {
            results.push(cg.set_cpu_tuning(Some(&format!("vcpu{i}")), vcpu));
        }
    }
    let emu = CpuTuning {
        shares: None,
        period: t.emulator_period,
        quota: t.emulator_quota,
    };
    if emu != CpuTuning::default() {
        results.push(cg.set_cpu_tuning(Some("emulator"), emu));
    }
    for r in results {
        if let Err(e) = r {
            log(&format!("CPU tuning not applied: {e}"));
        }
    }
}

/// Refuses a second start of a running name; clears a dead VM's leftovers.
fn claim(dir: &Path, name: &str) -> Result<()> {
    if let Ok(st) = vm_control::read_state(dir) {
        if Liveness::of(st.pid) == Liveness::Alive && st.pid != std::process::id() {
            bail!("VM '{name}' is already running (pid {})", st.pid);
        }
        vm_control::remove_runtime(dir);
    }
    Ok(())
}

/// Removes the VM's runtime folder when the VM process is done with it.
struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        vm_control::remove_runtime(&self.0);
    }
}

struct Machine {
    spec: VmSpec,
    console: Console,
    vm: Option<Vm>,
    uuid: uuid::Uuid,
    started: u64,
    shutdown_requested: bool,
    cgroup: Option<Arc<VmCgroup>>,
    endpoint: Endpoint,
    pending: Pending,
    /// Opened (and locked) once; a reboot keeps them.
    disks: Vec<OpenDisk>,
    /// Taps opened once; a reboot keeps them.
    nets: Vec<OpenNet>,
}

impl Machine {
    fn config(
        spec: &VmSpec,
        disks: &[OpenDisk],
        nets: &[OpenNet],
        cgroup: Option<&Arc<VmCgroup>>,
    ) -> Result<VmConfig> {
        let vcpus = u8::try_from(spec.vcpus).map_err(|_| anyhow!("vcpus: at most 255"))?;
        let (threads, cores) = spec
            .cpu
            .as_ref()
            .and_then(|c| c.topology)
            .map_or((1, vcpus), |t| (t.threads as u8, t.cores as u8));
        Ok(VmConfig {
            name: spec.name.to_string(),
            vcpus,
            threads_per_core: threads,
            cores_per_socket: cores,
            memory: spec.memory.bytes(),
            boot: BootConfig {
                kernel: spec.boot.kernel.clone(),
                initrd: spec.boot.initrd.clone(),
                cmdline: spec.boot.cmdline.clone().unwrap_or_default(),
                vcpus,
            },
            drop_capabilities: true,
            numa: spec.numatune.as_ref().map(|n| {
                let policy = match n.mode {
                    vm_spec::NumaMode::Strict => vmm::memory::NumaPolicy::Strict,
                    vm_spec::NumaMode::Preferred => vmm::memory::NumaPolicy::Preferred,
                    vm_spec::NumaMode::Interleave => vmm::memory::NumaPolicy::Interleave,
                };
                (policy, n.nodeset.iter().collect())
            }),
            hugepages: spec.hugepages.map(vm_spec::Size::bytes),
            disks: disks.iter().map(|d| d.config.clone()).collect(),
            nets: nets.iter().map(|n| n.config.clone()).collect(),
            iothreads: spec.iothreads,
            thread_hook: cgroup.cloned().map(placement_hook),
        })
    }

    fn serial(console: &Console, endpoint: &Endpoint) -> Result<SerialOut> {
        if let Some(w) = endpoint.writer() {
            return Ok(SerialOut::Shared(w));
        }
        Ok(match console {
            Console::Stdio => SerialOut::Stdout,
            // Pty and socket consoles always have an endpoint writer.
            Console::Null | Console::Pty | Console::Socket(_) => SerialOut::Null,
            Console::File(p) => SerialOut::File(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("serial console {}", p.display()))?,
            ),
        })
    }

    fn start(
        spec: VmSpec,
        console: Console,
        endpoint: Endpoint,
        cgroup: Option<Arc<VmCgroup>>,
    ) -> Result<Self> {
        let disks = crate::disks::open_all(&spec)?;
        let nets = crate::nets::open_all(&spec)?;
        let cfg = Self::config(&spec, &disks, &nets, cgroup.as_ref())?;
        let vm = Vm::start(&cfg, Self::serial(&console, &endpoint)?)?;
        Ok(Self {
            uuid: spec.uuid.unwrap_or_else(uuid::Uuid::new_v4),
            spec,
            console,
            vm: Some(vm),
            started: now_secs(),
            shutdown_requested: false,
            cgroup,
            endpoint,
            pending: Pending::new(),
            disks,
            nets,
        })
    }

    /// Tears the machine down and boots it again (reboot, on_*: restart).
    fn restart(&mut self) -> Result<()> {
        if let Some(vm) = self.vm.take() {
            vm.destroy();
        }
        let cfg = Self::config(&self.spec, &self.disks, &self.nets, self.cgroup.as_ref())?;
        self.vm = Some(Vm::start(
            &cfg,
            Self::serial(&self.console, &self.endpoint)?,
        )?);
        self.shutdown_requested = false;
        // The process-wide filter is in place: the new machine threads
        // inherited it and add their own.
        self.vm().confine_threads();
        let tids = Threads::of(self.vm());
        if let Err(e) = apply_affinity(&self.spec, &tids) {
            log(&format!("after restart: {e}"));
        }
        Ok(())
    }

    fn stats(&self) -> vm_control::Stats {
        let vm = self.vm();
        vm_control::Stats {
            disks: vm
                .disk_stats()
                .into_iter()
                .map(|(id, stats)| vm_control::DiskStats { id, stats })
                .collect(),
            nets: vm
                .net_stats()
                .into_iter()
                .map(|(id, stats)| vm_control::NetStats { id, stats })
                .collect(),
        }
    }

    fn vm(&self) -> &Vm {
        self.vm.as_ref().expect("the machine runs while served")
    }

    fn state(&self, dir: &Path, state: RunState, reason: &str) -> VmState {
        VmState {
            name: self.spec.name.to_string(),
            uuid: self.uuid,
            pid: std::process::id(),
            state,
            reason: reason.into(),
            control_socket: dir.join("control.sock"),
            spec: self.spec.clone(),
            vcpu_threads: self.vm.as_ref().map(Vm::vcpu_tids).unwrap_or_default(),
            iothread_threads: self
                .vm
                .as_ref()
                .map(|vm| vm.iothread_tids().into_iter().map(|(_, t)| t).collect())
                .unwrap_or_default(),
            console: match &self.console {
                Console::File(p) | Console::Socket(p) => Some(p.clone()),
                Console::Pty => Some(dir.join("console")),
                Console::Stdio | Console::Null => None,
            },
            disks: self.disks.iter().map(|d| d.state.clone()).collect(),
            nets: self.nets.iter().map(|n| n.state.clone()).collect(),
            started: self.started,
        }
    }
}

/// The stop signals (TERM, INT, HUP) land on this eventfd.
static STOP_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_stop(_: libc::c_int) {
    let fd = STOP_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let one = 1u64.to_ne_bytes();
        // SAFETY: write(2) on an eventfd with an 8-byte buffer that lives
        // for the call; async-signal-safe.
        unsafe { libc::write(fd, one.as_ptr().cast(), 8) };
    }
}

fn install_stop_signals() -> Result<RawFd> {
    // SAFETY: eventfd has no memory preconditions; we own the result.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("eventfd");
    }
    STOP_FD.store(fd, Ordering::Relaxed);
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: installs an async-signal-safe handler (it only writes to
        // an eventfd).
        unsafe { libc::signal(sig, on_stop as *const () as libc::sighandler_t) };
    }
    Ok(fd)
}

enum Next {
    Continue,
    Exit(i32),
}

fn serve(
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
        // Input the serial FIFO could not take yet is retried shortly.
        let timeout = if m.pending.is_empty() { -1 } else { 10 };
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
        if fds[0].revents != 0 {
            while let Ok((stream, _)) = listener.inner.accept() {
                if let Next::Exit(code) = on_client(m, dir, state, &stream)? {
                    return Ok(code);
                }
            }
        }
        for p in &fds[4..] {
            if p.revents != 0 {
                m.endpoint.on_ready(p.fd, &mut m.pending);
            }
        }
        if let Some(vm) = m.vm.as_ref() {
            console::feed(vm, &mut m.pending);
        }
    }
}

fn set_state(
    m: &Machine,
    dir: &Path,
    state: &mut VmState,
    s: RunState,
    reason: &str,
) -> Result<()> {
    *state = m.state(dir, s, reason);
    vm_control::write_state(dir, state)?;
    log(&format!("state {s}: {reason}"));
    Ok(())
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
            Ok(Next::Exit(if crash {
                crate::monitor::EXIT_CRASHED
            } else {
                0
            }))
        }
        Action::Restart => {
            log(&format!("guest {what}: restarting"));
            m.restart()?;
            set_state(m, dir, state, RunState::Running, "restarted")?;
            Ok(Next::Continue)
        }
        Action::Preserve => {
            let s = if crash {
                RunState::Crashed
            } else {
                RunState::Paused
            };
            set_state(m, dir, state, s, what)?;
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

fn on_client(
    m: &mut Machine,
    dir: &Path,
    state: &mut VmState,
    stream: &std::os::unix::net::UnixStream,
) -> Result<Next> {
    if !vm_control::peer_allowed(stream) {
        log("refused a control connection from another user");
        return Ok(Next::Continue);
    }
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    if BufReader::new(stream).read_line(&mut line).is_err() {
        return Ok(Next::Continue);
    }
    let (reply, next) = match serde_json::from_str::<Request>(&line) {
        Err(e) => (Reply::err(format!("bad request: {e}")), Next::Continue),
        Ok(req) => handle(m, dir, state, &req)?,
    };
    let mut text = serde_json::to_string(&reply)?;
    text.push('\n');
    let _ = (&*stream).write_all(text.as_bytes());
    Ok(next)
}

fn handle(
    m: &mut Machine,
    dir: &Path,
    state: &mut VmState,
    req: &Request,
) -> Result<(Reply, Next)> {
    let next = match req {
        Request::Status => Next::Continue,
        Request::Pause => {
            if state.state == RunState::Running {
                let flushed = m.vm().pause();
                set_state(m, dir, state, RunState::Paused, "user")?;
                flushed.map_err(|e| anyhow!("the VM is paused, but {e}"))?;
            }
            Next::Continue
        }
        Request::Resume => {
            if state.state == RunState::Paused {
                m.vm().resume();
                set_state(m, dir, state, RunState::Running, "unpaused")?;
            }
            Next::Continue
        }
        Request::Shutdown => {
            m.shutdown_requested = true;
            if state.state == RunState::Paused {
                m.vm().resume();
                set_state(m, dir, state, RunState::Running, "unpaused for shutdown")?;
            }
            m.vm().ctrl_alt_del();
            log("shutdown requested: Ctrl-Alt-Del sent");
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
            set_state(m, dir, state, RunState::Running, "rebooted by request")?;
            Next::Continue
        }
        Request::Stats => {
            let mut reply = Reply::ok(None);
            reply.stats = Some(m.stats());
            return Ok((reply, Next::Continue));
        }
    };
    Ok((Reply::ok(Some(state.clone())), next))
}
