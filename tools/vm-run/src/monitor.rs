//! The VM process: starts the machine, publishes its state and control
//! socket, and serves requests and guest events until the VM ends.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use vm_control::Listener;
use vm_host::cgroup::VmCgroup;
use vm_spec::{Feature, RunState, SerialMode, VmSpec, VmState};
use vmm::boot::BootConfig;
use vmm::devices::SerialOut;
use vmm::{Vm, VmConfig};

use crate::console::{Endpoint, Pending};
use crate::disks::OpenDisk;
use crate::nets::OpenNet;
use crate::placement::{
    after_exit, apply_affinity, enter_cgroup, numa_nodes, placement_hook, Threads,
};
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
    Feature::GuestNuma,
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

/// A start from a saved VM or an incoming migration, or a boot that
/// waits paused.
#[derive(Debug)]
pub struct RestoreFrom {
    pub source: RestoreSource,
    /// Stay paused until resumed.
    pub paused: bool,
}

#[derive(Debug)]
pub enum RestoreSource {
    /// Nothing saved: the kernel boots as usual (`vm-run start --paused`:
    /// once resumed).
    Boot,
    /// A saved-VM file.
    File(PathBuf),
    /// A migration's streams, the first of which had its hello read
    /// (`vm-run start --incoming`) and the others their joins, in order,
    /// and the hello's disks (which of them arrive in the stream).
    Stream(
        Vec<crate::migrate::Conn>,
        Vec<vmm::state::stream::HelloDisk>,
    ),
}

/// Runs `spec` to the end. `detached` picks the console default and
/// `ready` (a pipe) receives the VmState line once the guest runs.
/// With `restore` the machine starts from the saved file instead of
/// booting. `born`: the cgroup a launcher started this process in.
pub fn run(
    spec: VmSpec,
    detached: bool,
    console: Option<PathBuf>,
    ready: Option<File>,
    restore: Option<RestoreFrom>,
    born: Option<VmCgroup>,
) -> Result<i32> {
    spec.require_supported("vm-run", SUPPORTED)
        .map_err(|e| anyhow!("{e}"))?;
    let name = spec.name.to_string();
    // From here on TERM, INT and HUP only ask the VM to stop: one that
    // arrives while the machine is being built ends it as soon as it runs,
    // with the folder and cgroups cleared as at any other end.
    let stop = install_stop_signals()?;
    // Exactly one start of a name gets past this line; the lock lasts as
    // long as this process (the teardown child closes its copy).
    let lock = vm_control::VmLock::claim(&name)?;
    let dir = lock.dir().to_path_buf();
    clear_leftovers(&dir);
    let guard = DirGuard { lock };
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
    let cgroup = enter_cgroup(&spec, born);
    let paused = restore.as_ref().is_some_and(|r| r.paused);
    let how = match restore.as_ref().map(|r| &r.source) {
        Some(RestoreSource::File(_)) => "restored",
        Some(RestoreSource::Stream(..)) => "migrated in",
        Some(RestoreSource::Boot) | None => "booted",
    };
    let mut machine = match Machine::start(spec, console, endpoint, cgroup.clone(), restore) {
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
    let first = if paused {
        RunState::Paused
    } else {
        RunState::Running
    };
    let mut state = machine.state(&dir, first, how);
    vm_control::write_state(&dir, &state)?;
    // Last step of setup: from here on, syscalls a VMM never needs fail.
    // Before the VM says it runs, so that no one sees it unconfined.
    vmm::seccomp::install_all_threads()?;
    machine.vm().confine_threads();
    log(&format!("started VM {name} (pid {})", std::process::id()));
    if let Some(mut r) = ready {
        let line = serde_json::to_string(&state)? + "\n";
        r.write_all(line.as_bytes())
            .context("reporting readiness")?;
    }
    let code = crate::serve::serve(&mut machine, &listener, &dir, &mut state, stop);
    drop(listener);
    // The console's socket goes before the name is let go: a restore or a
    // start that follows at once (`vm-snap save`, then `restore`) finds
    // the path free, not a socket that still listens.
    drop(std::mem::take(&mut machine.endpoint));
    drop(guard);
    if let Some(vm) = machine.vm.take() {
        let remains = vm.dismantle();
        // Disks and taps close here, before the teardown child is made.
        machine.disks.clear();
        machine.nets.clear();
        remains.release_in_background(&after_exit(machine.cgroup.as_deref()));
    }
    code
}

/// What a VM that died left in its folder (its log and console log stay:
/// a detached start's log is already open). Only the lock holder calls
/// this, so no VM uses these.
fn clear_leftovers(dir: &Path) {
    for name in ["state.json", "control.sock", "console"] {
        let _ = std::fs::remove_file(dir.join(name));
    }
}

/// Removes the VM's runtime folder when the VM process is done with it,
/// then lets go of the name.
struct DirGuard {
    lock: vm_control::VmLock,
}

impl Drop for DirGuard {
    fn drop(&mut self) {
        vm_control::remove_runtime(self.lock.dir());
    }
}

pub(crate) struct Machine {
    pub(crate) spec: VmSpec,
    pub(crate) console: Console,
    pub(crate) vm: Option<Vm>,
    pub(crate) uuid: uuid::Uuid,
    pub(crate) started: u64,
    pub(crate) shutdown_requested: bool,
    pub(crate) cgroup: Option<Arc<VmCgroup>>,
    pub(crate) endpoint: Endpoint,
    pub(crate) pending: Pending,
    /// Opened (and locked) once; a reboot keeps them.
    pub(crate) disks: Vec<OpenDisk>,
    /// Taps opened once; a reboot keeps them.
    pub(crate) nets: Vec<OpenNet>,
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
                numa_nodes: numa_nodes(spec),
                ..BootConfig::default()
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
            rng: spec.rng,
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
        restore: Option<RestoreFrom>,
    ) -> Result<Self> {
        if let Some(RestoreFrom {
            source: RestoreSource::Stream(mut conns, hello_disks),
            paused,
        }) = restore
        {
            let mut opened = None;
            let arrive = (conns.as_mut_slice(), hello_disks.as_slice());
            let built = Self::incoming(&spec, &console, &endpoint, cgroup.as_ref(), arrive).map(
                |(vm, disks, nets)| {
                    opened = Some((disks, nets));
                    vm
                },
            );
            let vm = crate::migrate::recv::announce(&mut conns[0], built, paused)?;
            let (disks, nets) = opened.expect("the machine was built");
            return Ok(Self::assemble(
                spec, console, endpoint, cgroup, vm, disks, nets,
            ));
        }
        let disks = crate::disks::open_all(&spec)?;
        let nets = crate::nets::open_all(&spec)?;
        let cfg = Self::config(&spec, &disks, &nets, cgroup.as_ref())?;
        let serial = Self::serial(&console, &endpoint)?;
        let vm = match restore {
            None => Vm::start(&cfg, serial)?,
            Some(RestoreFrom {
                source: RestoreSource::Boot,
                paused,
            }) => {
                if paused {
                    Vm::start_paused(&cfg, serial)?
                } else {
                    Vm::start(&cfg, serial)?
                }
            }
            Some(RestoreFrom {
                source: RestoreSource::File(path),
                paused,
            }) => {
                let f =
                    File::open(&path).with_context(|| format!("saved VM {}", path.display()))?;
                let opened =
                    vmm::state::file::open(f).with_context(|| path.display().to_string())?;
                let from = vmm::Restore {
                    state: &opened.saved.machine,
                    memory: vmm::RestoreMemory::File(vmm::memory::Saved {
                        file: opened.file,
                        runs: opened.runs,
                    }),
                    paused,
                };
                Vm::restore(&cfg, serial, from)
                    .with_context(|| format!("restoring {}", path.display()))?
            }
            Some(RestoreFrom {
                source: RestoreSource::Stream(..),
                ..
            }) => unreachable!("an incoming migration is started above"),
        };
        Ok(Self::assemble(
            spec, console, endpoint, cgroup, vm, disks, nets,
        ))
    }

    /// An incoming migration's machine: guest memory and the machine's
    /// state arrive first, with the contents of the disks that are copied
    /// (their images are opened and locked before); only then are the
    /// shared disks opened and locked (the source lets go of them in its
    /// last pause), the taps opened and the machine built, paused.
    fn incoming(
        spec: &VmSpec,
        console: &Console,
        endpoint: &Endpoint,
        cgroup: Option<&Arc<VmCgroup>>,
        (conns, hello): (
            &mut [crate::migrate::Conn],
            &[vmm::state::stream::HelloDisk],
        ),
    ) -> Result<(Vm, Vec<OpenDisk>, Vec<OpenNet>)> {
        let memory_only = Self::config(spec, &[], &[], cgroup)?;
        let copied = |id: &str| hello.iter().any(|h| h.copy && h.id == id);
        let mut early = Vec::new();
        for d in &spec.disks {
            early.push(if copied(&d.id) {
                Some(crate::disks::open_one(d)?)
            } else {
                None
            });
        }
        let images: Vec<_> = early
            .iter()
            .map(|o| o.as_ref().map(|d: &OpenDisk| d.image.clone()))
            .collect();
        let mut targets = crate::migrate::storage::Targets::new(hello, spec, &images);
        let (state, mem, memfd) = crate::migrate::recv::receive(conns, &memory_only, &mut targets)?;
        let disks = spec
            .disks
            .iter()
            .zip(early)
            .map(|(d, e)| e.map_or_else(|| crate::disks::open_one(d), Ok))
            .collect::<Result<Vec<_>>>()?;
        let nets = crate::nets::open_all(spec)?;
        let cfg = Self::config(spec, &disks, &nets, cgroup)?;
        let from = vmm::Restore {
            state: &state,
            memory: vmm::RestoreMemory::Received(mem, memfd),
            paused: true,
        };
        let vm = Vm::restore(&cfg, Self::serial(console, endpoint)?, from)?;
        Ok((vm, disks, nets))
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        spec: VmSpec,
        console: Console,
        endpoint: Endpoint,
        cgroup: Option<Arc<VmCgroup>>,
        vm: Vm,
        disks: Vec<OpenDisk>,
        nets: Vec<OpenNet>,
    ) -> Self {
        Self {
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
        }
    }

    /// Tears the machine down and boots it again (reboot, on_*: restart).
    pub(crate) fn restart(&mut self) -> Result<()> {
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

    pub(crate) fn stats(&self) -> vm_control::Stats {
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

    pub(crate) fn vm(&self) -> &Vm {
        self.vm.as_ref().expect("the machine runs while served")
    }

    /// Disk `i`'s device (and the machine's config, for a reboot) serves
    /// `img` from now on: a wrapper that tracks the guest's writes, or the
    /// plain image again. Swapped in a pause, with the queues drained.
    pub(crate) fn serve_disk(
        &mut self,
        running: bool,
        i: usize,
        img: Arc<dyn vm_image::Block>,
    ) -> Result<()> {
        if running {
            if let Err(e) = self.vm().pause() {
                self.vm().resume();
                return Err(anyhow!("pausing to swap the disk: {e}"));
            }
        }
        let r = self
            .vm
            .as_mut()
            .expect("the machine runs while served")
            .replace_disk(&self.spec.disks[i].id, &img)
            .map_err(|e| anyhow!("{e}"));
        if r.is_ok() {
            self.disks[i].config.image = img;
        }
        if running {
            self.vm().resume();
        }
        r
    }

    pub(crate) fn state(&self, dir: &Path, state: RunState, reason: &str) -> VmState {
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
