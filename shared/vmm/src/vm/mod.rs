//! The machine: a KVM VM with the in-kernel irqchip and PIT, guest memory,
//! the legacy devices and one thread per vCPU.

use std::fmt::Write as _;
use std::fs::File;
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvm_bindings::{kvm_pit_config, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, Kvm, VmFd};

use crate::boot::{self, BootConfig};
use crate::devices::virtio::blk::{BlockCounters, BlockStats, CachePolicy};
use crate::devices::virtio::net::{NetCounters, NetStats};
use crate::devices::{IrqLine, MmioTransport, PioBus, SerialOut, SerialPort, I8042};
use crate::dirty::DirtyLog;
use crate::io_loop::{IoLoop, IoThread};
use crate::memory::{self, GuestMemory};
use crate::state::devices::DeviceIdentity;
use crate::vcpu::{EventSink, Vcpu, VcpuEvent, Wanted};
use crate::{cpu, layout, Error, Result};

mod migrate;
mod restore;
pub use migrate::DirtyTracker;
pub use restore::{Restore, RestoreMemory};
mod wiring;

const COM1_GSI: u32 = 4;
const KEYBOARD_GSI: u32 = 1;

#[derive(Debug, Clone)]
pub struct VmConfig {
    pub name: String,
    pub vcpus: u8,
    pub threads_per_core: u8,
    pub cores_per_socket: u8,
    pub memory: u64,
    pub boot: BootConfig,
    /// Each vCPU thread drops every capability before it first runs the
    /// guest (the caller drops the main thread's).
    pub drop_capabilities: bool,
    /// Host NUMA policy for guest memory (numatune).
    pub numa: Option<(memory::NumaPolicy, Vec<u32>)>,
    /// Back guest memory with huge pages of this size.
    pub hugepages: Option<u64>,
    /// virtio-blk disks, in the order the guest sees them.
    pub disks: Vec<DiskConfig>,
    /// virtio-net NICs, after the disks.
    pub nets: Vec<NetConfig>,
    /// A virtio-rng entropy device, after the NICs.
    pub rng: bool,
    /// How many iothreads to start (`iothread1`..); disks name theirs.
    pub iothreads: u32,
    /// Run by each vCPU thread and iothread on itself as it starts.
    pub thread_hook: Option<crate::threads::ThreadHook>,
}

/// One virtio-blk disk: an opened image and how to serve it.
#[derive(Clone)]
pub struct DiskConfig {
    pub id: String,
    pub image: Arc<dyn vm_image::Block>,
    pub read_only: bool,
    pub cache: CachePolicy,
    /// What GET_ID returns (up to 20 bytes).
    pub serial: String,
    /// Served by this iothread; `None`: by the emulator thread's loop.
    pub iothread: Option<u32>,
    /// Reads and writes through io_uring on this file (a raw image opened
    /// with the same flags as `image`).
    pub uring_file: Option<Arc<File>>,
    /// Counters that outlive reboots (the device is rebuilt, they are not).
    pub counters: Arc<BlockCounters>,
}

/// One virtio-net NIC on a tap.
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub id: String,
    /// One tap descriptor per queue pair.
    pub taps: Vec<Arc<File>>,
    pub mac: [u8; 6],
    pub counters: Arc<NetCounters>,
}

impl std::fmt::Debug for DiskConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskConfig")
            .field("id", &self.id)
            .field("size", &self.image.size())
            .field("read_only", &self.read_only)
            .field("cache", &self.cache)
            .field("serial", &self.serial)
            .field("iothread", &self.iothread)
            .field("io_uring", &self.uring_file.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct Vm {
    kvm: Kvm,
    /// The descriptor KVM_CREATE_VM returned (shared with a migration's
    /// dirty-page tracker).
    machine: Arc<VmFd>,
    mem: GuestMemory,
    /// The memfd behind guest memory, or the saved file it was mapped
    /// from; none for anonymous memory (a migration's destination).
    mem_file: Option<File>,
    /// `mem_file` is a memfd holding all of guest memory.
    memfd: bool,
    vcpus: Vec<Vcpu>,
    bus: Arc<Mutex<PioBus>>,
    /// The generic event device's interrupt (the ACPI power button).
    power_button: IrqLine,
    io: IoLoop,
    iothreads: Vec<IoThread>,
    disks: Vec<(String, Arc<BlockCounters>)>,
    /// The writable disks, flushed on pause.
    writable: Vec<DiskConfig>,
    nets: Vec<(String, Arc<NetCounters>)>,
    /// Each virtio transport and what identifies its device.
    registry: Vec<(DeviceIdentity, Arc<Mutex<MmioTransport>>)>,
    events: Receiver<VcpuEvent>,
    wake: Arc<vmm_sys_util::eventfd::EventFd>,
    /// Guest pages the devices write, recorded while a migration runs.
    dirty: Arc<DirtyLog>,
    /// The CPUID the guest was given (vCPU 0's), for a migration's check
    /// that the destination offers every feature.
    guest_cpuid: Vec<kvm_bindings::kvm_cpuid_entry2>,
}

/// KVM_CREATE_VM, tried again when a signal interrupts it: a TERM sent
/// to a foreground vm-run while its guest restarts lands there now and
/// then, and must end the VM through the run loop's flag, not as an
/// error. Bounded, so a signal storm cannot spin it forever.
pub(crate) fn create_vm(kvm: &Kvm) -> Result<kvm_ioctls::VmFd> {
    let mut tries = 0;
    loop {
        match kvm.create_vm() {
            Err(e) if e.errno() == libc::EINTR && tries < 100 => tries += 1,
            other => return other.map_err(Error::kvm("KVM_CREATE_VM")),
        }
    }
}

/// Opens /dev/kvm and checks what we rely on.
fn open_kvm() -> Result<Kvm> {
    let kvm = Kvm::new().map_err(Error::Kvm)?;
    let v = kvm.get_api_version();
    if v != 12 {
        return Err(Error::KvmVersion(v));
    }
    for (cap, name) in [
        (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        (Cap::Irqfd, "KVM_CAP_IRQFD"),
        (Cap::Pit2, "KVM_CAP_PIT2"),
        (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
        (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(Error::KvmCap(name));
        }
    }
    Ok(kvm)
}

impl Vm {
    /// Builds the machine, loads the kernel and starts every vCPU.
    pub fn start(cfg: &VmConfig, serial: SerialOut) -> Result<Self> {
        Self::build(cfg, serial, None, false)
    }

    /// As [`Vm::start`], with every vCPU held before its first
    /// instruction until the VM is resumed (virsh start --paused).
    pub fn start_paused(cfg: &VmConfig, serial: SerialOut) -> Result<Self> {
        Self::build(cfg, serial, None, true)
    }

    /// Builds the machine `from` describes and starts its vCPUs where
    /// they were saved (or paused there). A spec whose devices differ
    /// from the saved ones is refused before any vCPU exists.
    pub fn restore(cfg: &VmConfig, serial: SerialOut, from: Restore<'_>) -> Result<Self> {
        Self::build(cfg, serial, Some(from), false)
    }

    fn build(
        cfg: &VmConfig,
        serial: SerialOut,
        restore: Option<Restore<'_>>,
        boot_paused: bool,
    ) -> Result<Self> {
        crate::vcpu::install_kick_handler()
            .map_err(Error::io("installing the vCPU kick handler"))?;
        let kvm = open_kvm()?;
        let vm_fd = create_vm(&kvm)?;
        vm_fd
            .set_tss_address(layout::KVM_TSS_ADDR)
            .map_err(Error::kvm("KVM_SET_TSS_ADDR"))?;
        let (saved, paused) = match restore {
            Some(r) => {
                if r.state.vcpus.len() != usize::from(cfg.vcpus) {
                    return Err(Error::State(format!(
                        "{} vCPUs saved, the spec has {}",
                        r.state.vcpus.len(),
                        cfg.vcpus
                    )));
                }
                (Some((r.state, r.memory)), r.paused)
            }
            None => (None, boot_paused),
        };
        let (mem, mem_file, memfd) = restore::guest_memory(cfg, saved.as_ref().map(|(_, m)| m))?;
        if let Some((policy, nodes)) = &cfg.numa {
            memory::bind(&mem, *policy, nodes)?;
        }
        migrate::register_slots(&vm_fd, &mem, 0)?;

        // The irqchip and PIT come after the memory slots: registering a
        // slot once an irqchip exists waits for an SRCU grace period (5-7 ms
        // here), and tearing such a VM down takes 16 ms instead of 7.
        vm_fd
            .create_irq_chip()
            .map_err(Error::kvm("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..kvm_pit_config::default()
        };
        vm_fd
            .create_pit2(pit)
            .map_err(Error::kvm("KVM_CREATE_PIT2"))?;

        let mut boot_cfg = cfg.boot.clone();
        let dirty = Arc::new(DirtyLog::new(&mem));
        let devices = wiring::add_devices(&vm_fd, &mem, cfg, &dirty, &mut boot_cfg.mmio_devices)?;
        let entry = match &saved {
            None => Some(Self::load(&mem, cfg, &mut boot_cfg)?),
            Some((state, _)) => {
                let here: Vec<DeviceIdentity> =
                    devices.registry.iter().map(|(id, _)| id.clone()).collect();
                let was: Vec<DeviceIdentity> =
                    state.devices.iter().map(|d| d.identity.clone()).collect();
                if let Some(diff) = crate::state::devices::difference(&was, &here) {
                    return Err(Error::State(diff));
                }
                for ((id, t), d) in devices.registry.iter().zip(&state.devices) {
                    crate::devices::lock(t)
                        .restore(&d.transport)
                        .map_err(|e| Error::State(format!("{}: {e}", id.id)))?;
                }
                None
            }
        };
        let mmio = Arc::clone(&devices.bus);

        let com1 = IrqLine::new().map_err(Error::io("serial irq eventfd"))?;
        vm_fd
            .register_irqfd(&com1.0, COM1_GSI)
            .map_err(Error::kvm("KVM_IRQFD"))?;
        let power_button = IrqLine::new().map_err(Error::io("power button eventfd"))?;
        vm_fd
            .register_irqfd(&power_button.0, crate::acpi::GED_GSI)
            .map_err(Error::kvm("KVM_IRQFD"))?;
        let kbd = IrqLine::new().map_err(Error::io("keyboard irq eventfd"))?;
        vm_fd
            .register_irqfd(&kbd.0, KEYBOARD_GSI)
            .map_err(Error::kvm("KVM_IRQFD"))?;
        let pio = match &saved {
            None => PioBus {
                serial: SerialPort::new(com1, serial),
                i8042: I8042::new(kbd),
            },
            Some((state, _)) => PioBus {
                serial: SerialPort::from_state(com1, serial, &state.serial)
                    .map_err(Error::State)?,
                i8042: I8042::from_state(kbd, &state.i8042).map_err(Error::State)?,
            },
        };
        let bus = Arc::new(Mutex::new(pio));

        let (tx, rx) = channel();
        let wake = Arc::new(
            vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK)
                .map_err(Error::io("event eventfd"))?,
        );
        let sink = EventSink {
            tx,
            wake: Arc::clone(&wake),
        };
        let mut fds = Vec::new();
        let base_cpuid = cpu::base_cpuid(&kvm)?;
        for id in 0..cfg.vcpus {
            let fd = vm_fd
                .create_vcpu(u64::from(id))
                .map_err(Error::kvm("KVM_CREATE_VCPU"))?;
            if saved.is_none() {
                let cpuid = cpu::vcpu_cpuid(
                    &base_cpuid,
                    id,
                    cfg.vcpus,
                    cfg.threads_per_core,
                    cfg.cores_per_socket,
                );
                fd.set_cpuid2(&cpuid)
                    .map_err(Error::kvm("KVM_SET_CPUID2"))?;
                cpu::set_lint(&fd)?;
            }
            fds.push(fd);
        }
        // The guest's CPUID as its vCPU 0 has it (read back, as a save
        // reads it), for a migration's hello.
        let guest_cpuid = match &saved {
            Some((state, _)) => state
                .vcpus
                .first()
                .map(|v| v.cpuid.clone())
                .unwrap_or_default(),
            None => fds[0]
                .get_cpuid2(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
                .map_err(Error::kvm("KVM_GET_CPUID2"))?
                .as_slice()
                .to_vec(),
        };
        match (&saved, entry) {
            (Some((state, _)), _) => {
                // The in-kernel chips first, then each vCPU (its LAPIC
                // routes what the chips deliver), all before any runs.
                state.chips.restore(&vm_fd)?;
                for (fd, s) in fds.iter().zip(&state.vcpus) {
                    s.restore(fd)?;
                }
            }
            (None, Some(entry)) => cpu::setup_boot_vcpu(&fds[0], &mem, entry)?,
            (None, None) => {}
        }
        if saved.is_some() {
            for (_, t) in &devices.registry {
                crate::devices::lock(t).kick_after_restore();
            }
        }
        let wanted = if paused { Wanted::Pause } else { Wanted::Run };
        let mut vcpus = Vec::new();
        for (id, fd) in fds.into_iter().enumerate() {
            vcpus.push(
                Vcpu::spawn(
                    id as u8,
                    wanted,
                    fd,
                    Arc::clone(&bus),
                    Arc::clone(&mmio),
                    sink.clone(),
                    cfg.drop_capabilities,
                    cfg.thread_hook.clone(),
                )
                .map_err(Error::io("starting a vCPU thread"))?,
            );
        }
        if paused {
            for v in &vcpus {
                v.wait_paused();
            }
        }
        Ok(Self {
            kvm,
            machine: Arc::new(vm_fd),
            mem,
            mem_file,
            memfd,
            vcpus,
            bus,
            power_button,
            io: devices.main,
            iothreads: devices.threads,
            disks: devices.disks,
            writable: cfg.disks.iter().filter(|d| !d.read_only).cloned().collect(),
            nets: devices.nets,
            registry: devices.registry,
            events: rx,
            wake,
            dirty,
            guest_cpuid,
        })
    }

    /// Loads the kernel for a fresh boot. Linux finds the devices through
    /// ACPI; a kernel that is not Linux (the test guest), or Linux told
    /// `acpi=off`, reads them from its command line. Never both: a kernel
    /// built with command-line devices would otherwise see each one twice
    /// (QEMU's microvm makes the same choice).
    fn load(mem: &GuestMemory, cfg: &VmConfig, boot_cfg: &mut BootConfig) -> Result<boot::Entry> {
        let acpi_off = boot_cfg.cmdline.split_whitespace().any(|w| w == "acpi=off");
        if acpi_off || !boot::is_linux(&boot_cfg.kernel) {
            for d in &boot_cfg.mmio_devices {
                if !boot_cfg.cmdline.is_empty() {
                    boot_cfg.cmdline.push(' ');
                }
                let _ = write!(
                    boot_cfg.cmdline,
                    "virtio_mmio.device={}K@0x{:x}:{}",
                    d.len / 1024,
                    d.base,
                    d.gsi
                );
            }
        }
        boot::load(mem, cfg.memory, boot_cfg)
    }

    /// Disk `id` serves from `image` from now on (a live disk snapshot).
    /// Call it with the VM paused: its queues are drained and flushed.
    pub fn replace_disk(&mut self, id: &str, image: &Arc<dyn vm_image::Block>) -> Result<()> {
        let (_, t) = self
            .registry
            .iter()
            .find(|(ident, _)| ident.id == id)
            .ok_or_else(|| Error::Boot(format!("no disk {id}")))?;
        if !crate::devices::lock(t)
            .device_mut()
            .replace_disk(Arc::clone(image))
        {
            return Err(Error::Boot(format!("{id} is not a disk")));
        }
        for d in self.writable.iter_mut().filter(|d| d.id == id) {
            d.image = Arc::clone(image);
            d.uring_file = None;
        }
        Ok(())
    }

    /// Guest memory, and the memfd behind it when it has one (a restored
    /// VM's memory is a private mapping of its saved file instead).
    pub fn memory(&self) -> (&GuestMemory, Option<&File>) {
        (&self.mem, self.mem_file.as_ref().filter(|_| self.memfd))
    }

    /// A descriptor that becomes readable when a vCPU event is pending
    /// (read it with `take_events`).
    pub fn event_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(self.wake.as_ref())
    }

    /// Every pending event, without waiting.
    pub fn take_events(&self) -> Vec<VcpuEvent> {
        let _ = self.wake.read();
        self.events.try_iter().collect()
    }

    /// Waits for the next vCPU event, up to `timeout` (None: forever).
    pub fn wait_event(&self, timeout: Option<Duration>) -> Option<VcpuEvent> {
        match timeout {
            None => self.events.recv().ok(),
            Some(t) => self.events.recv_timeout(t).ok(),
        }
    }

    /// Stops the machine the way QEMU's `stop` does: the vCPUs, then the
    /// device loops once they have finished every request the guest
    /// queued, then each writable disk's cached metadata and data go to
    /// the file (and to stable storage unless the disk is `cache=unsafe`).
    /// A paused VM's images can be copied or inspected as they are. The
    /// caller stops serving the emulator thread's loop ([`Vm::io_fd`])
    /// until [`Vm::resume`]. A disk that fails to flush is named in the
    /// error; the machine stays paused either way.
    pub fn pause(&self) -> Result<()> {
        for v in &self.vcpus {
            v.set_wanted(Wanted::Pause);
        }
        for v in &self.vcpus {
            v.wait_paused();
        }
        self.io.drain();
        for t in &self.iothreads {
            t.park();
        }
        for d in &self.writable {
            let r = if d.cache.ignore_flush {
                d.image.flush()
            } else {
                d.image.sync()
            };
            r.map_err(Error::io(format!("disk {}: flushing on pause", d.id)))?;
        }
        Ok(())
    }

    pub fn resume(&self) {
        for t in &self.iothreads {
            t.unpark();
        }
        for v in &self.vcpus {
            v.set_wanted(Wanted::Run);
        }
    }

    /// Presses Ctrl-Alt-Del on the guest's keyboard.
    /// Presses the ACPI power button (virsh shutdown's default): the
    /// generic event device's interrupt, whose `_EVT` notifies it.
    pub fn power_button(&self) -> std::io::Result<()> {
        self.power_button.raise()
    }

    pub fn ctrl_alt_del(&self) {
        self.bus
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .i8042
            .ctrl_alt_del();
    }

    /// Feeds console input to the serial port; returns how many bytes its
    /// receive FIFO took.
    pub fn serial_input(&self, bytes: &[u8]) -> usize {
        self.bus
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .serial
            .enqueue_input(bytes)
    }

    /// Thread ids of the vCPUs, in order.
    pub fn vcpu_tids(&self) -> Vec<u32> {
        self.vcpus.iter().map(Vcpu::tid).collect()
    }

    /// Thread ids of the iothreads, with their numbers.
    pub fn iothread_tids(&self) -> Vec<(u32, u32)> {
        self.iothreads.iter().map(|t| (t.id, t.tid())).collect()
    }

    /// Readable when a queue the emulator thread serves has work; then
    /// call `service_io`. `None` when it serves none.
    pub fn io_fd(&self) -> Option<std::os::fd::RawFd> {
        (!self.io.is_empty()).then(|| self.io.fd())
    }

    /// Serves the emulator thread's ready queues without waiting.
    pub fn service_io(&self) -> std::io::Result<()> {
        self.io.run_once(0).map(|_| ())
    }

    /// Each NIC's id and counters so far.
    pub fn net_stats(&self) -> Vec<(String, NetStats)> {
        self.nets
            .iter()
            .map(|(id, c)| (id.clone(), c.snapshot()))
            .collect()
    }

    /// Each disk's id and counters so far.
    pub fn disk_stats(&self) -> Vec<(String, BlockStats)> {
        self.disks
            .iter()
            .map(|(id, c)| (id.clone(), c.snapshot()))
            .collect()
    }

    /// Has every vCPU thread and iothread add its stricter seccomp filter
    /// to itself (after
    /// [`seccomp::install_all_threads`](crate::seccomp::install_all_threads)).
    pub fn confine_threads(&self) {
        for v in &self.vcpus {
            v.confine();
        }
        for t in &self.iothreads {
            t.confine();
        }
    }

    /// Stops the machine like [`Vm::destroy`] but keeps the kernel's VM
    /// and the guest memory alive in the returned handles, for
    /// [`Remains::release_in_background`](crate::teardown::Remains).
    pub fn dismantle(self) -> crate::teardown::Remains {
        use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
        // SAFETY: the VM descriptor stays open while `self` lives, and the
        // borrow ends before `self` is consumed below.
        let vm_fd = unsafe { BorrowedFd::borrow_raw(self.machine.as_raw_fd()) };
        let handles = std::iter::once(vm_fd)
            .chain(self.mem_file.as_ref().map(AsFd::as_fd))
            .filter_map(|fd| fd.try_clone_to_owned().ok())
            .collect();
        self.destroy();
        crate::teardown::Remains::new(handles)
    }

    /// Stops every vCPU thread and iothread and frees the machine.
    pub fn destroy(self) {
        for v in self.vcpus {
            v.exit();
        }
        for t in self.iothreads {
            t.stop();
        }
    }
}
