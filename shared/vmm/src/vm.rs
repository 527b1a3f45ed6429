//! The machine: a KVM VM with the in-kernel irqchip and PIT, guest memory,
//! the legacy devices and one thread per vCPU.

use std::fmt::Write as _;
use std::fs::File;
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, IoEventAddress, Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::boot::{self, BootConfig};
use crate::devices::virtio::blk::{BlockCounters, BlockStats, CachePolicy, VirtioBlk};
use crate::devices::virtio::mmio::MMIO_WINDOW;
use crate::devices::virtio::net::{NetCounters, NetStats, VirtioNet};
use crate::devices::virtio::VirtioDevice;
use crate::devices::{IrqLine, MmioBus, MmioTransport, PioBus, SerialOut, SerialPort, I8042};
use crate::io_loop::{IoLoop, IoThread};
use crate::memory::{self, GuestMemory};
use crate::vcpu::{EventSink, Vcpu, VcpuEvent, Wanted};
use crate::{cpu, layout, Error, Result};

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
    _kvm: Kvm,
    /// The descriptor KVM_CREATE_VM returned.
    machine: VmFd,
    _mem: GuestMemory,
    mem_file: File,
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
    events: Receiver<VcpuEvent>,
    wake: Arc<vmm_sys_util::eventfd::EventFd>,
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
        crate::vcpu::install_kick_handler()
            .map_err(Error::io("installing the vCPU kick handler"))?;
        let kvm = open_kvm()?;
        let vm_fd = kvm.create_vm().map_err(Error::kvm("KVM_CREATE_VM"))?;
        vm_fd
            .set_tss_address(layout::KVM_TSS_ADDR)
            .map_err(Error::kvm("KVM_SET_TSS_ADDR"))?;
        let (mem, mem_file) = memory::create_with(&cfg.name, cfg.memory, cfg.hugepages)?;
        if let Some((policy, nodes)) = &cfg.numa {
            memory::bind(&mem, *policy, nodes)?;
        }
        for (slot, region) in mem.iter().enumerate() {
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .map_err(|e| Error::Memory(e.to_string()))?;
            let r = kvm_userspace_memory_region {
                slot: slot as u32,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
                flags: 0,
            };
            // SAFETY: the region is a live mapping of `len` bytes owned by
            // `mem`, which the Vm keeps for as long as the VM fd exists.
            unsafe { vm_fd.set_user_memory_region(r) }
                .map_err(Error::kvm("KVM_SET_USER_MEMORY_REGION"))?;
        }

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
        let devices = add_devices(&vm_fd, &mem, cfg, &mut boot_cfg.mmio_devices)?;
        // Linux finds the devices through ACPI; a kernel that is not Linux
        // (the test guest), or Linux told `acpi=off`, reads them from its
        // command line. Never both: a kernel built with command-line
        // devices would otherwise see each one twice (QEMU's microvm
        // makes the same choice).
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
        let mmio = devices.bus;
        let entry = boot::load(&mem, cfg.memory, &boot_cfg)?;

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
        let bus = Arc::new(Mutex::new(PioBus {
            serial: SerialPort::new(com1, serial),
            i8042: I8042::new(kbd),
        }));

        let base_cpuid = cpu::base_cpuid(&kvm)?;
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
        for id in 0..cfg.vcpus {
            let fd = vm_fd
                .create_vcpu(u64::from(id))
                .map_err(Error::kvm("KVM_CREATE_VCPU"))?;
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
            if id == 0 {
                cpu::setup_boot_vcpu(&fd, &mem, entry)?;
            }
            fds.push(fd);
        }
        let mut vcpus = Vec::new();
        for (id, fd) in fds.into_iter().enumerate() {
            vcpus.push(
                Vcpu::spawn(
                    id as u8,
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
        Ok(Self {
            _kvm: kvm,
            machine: vm_fd,
            _mem: mem,
            mem_file,
            vcpus,
            bus,
            power_button,
            io: devices.main,
            iothreads: devices.threads,
            disks: devices.disks,
            writable: cfg.disks.iter().filter(|d| !d.read_only).cloned().collect(),
            nets: devices.nets,
            events: rx,
            wake,
        })
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
        let handles = [vm_fd, self.mem_file.as_fd()]
            .iter()
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

/// The virtio devices of a VM and what serves them.
struct Devices {
    bus: Arc<MmioBus>,
    main: IoLoop,
    threads: Vec<IoThread>,
    disks: Vec<(String, Arc<BlockCounters>)>,
    nets: Vec<(String, Arc<NetCounters>)>,
}

/// A device with its id and the iothread that serves it.
type Built = (String, Option<u32>, Box<dyn VirtioDevice>);

/// Builds the virtio-blk devices, then the virtio-net ones.
fn build_devices(cfg: &VmConfig) -> Result<Vec<Built>> {
    let mut out: Vec<Built> = Vec::new();
    for d in &cfg.disks {
        let mut blk = VirtioBlk::new(
            Arc::clone(&d.image),
            d.read_only,
            d.cache,
            &d.serial,
            Arc::clone(&d.counters),
        );
        if let Some(f) = &d.uring_file {
            blk = f
                .try_clone()
                .and_then(|f| blk.with_uring(f))
                .map_err(Error::io(format!("disk {}: io_uring", d.id)))?;
        }
        out.push((d.id.clone(), d.iothread, Box::new(blk)));
    }
    for n in &cfg.nets {
        let taps = n
            .taps
            .iter()
            .map(|t| t.try_clone())
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(Error::io(format!("net {}: tap", n.id)))?;
        let net = VirtioNet::new(taps, n.mac, Arc::clone(&n.counters))
            .map_err(Error::io(format!("net {}: tap", n.id)))?;
        out.push((n.id.clone(), None, Box::new(net)));
    }
    Ok(out)
}

/// Puts each device behind a virtio-mmio window with its own interrupt
/// line, wires its queue notifiers (ioeventfds) and host descriptors to
/// the loop that serves it, starts the iothreads and announces the devices
/// on the kernel command line.
fn add_devices(
    vm_fd: &VmFd,
    mem: &GuestMemory,
    cfg: &VmConfig,
    announced: &mut Vec<crate::acpi::MmioDevice>,
) -> Result<Devices> {
    let devices = build_devices(cfg)?;
    let max = (layout::VIRTIO_IRQ_LAST - layout::VIRTIO_IRQ_FIRST + 1) as usize;
    if devices.len() > max {
        return Err(Error::Boot(format!(
            "{} virtio devices, at most {max} fit",
            devices.len()
        )));
    }
    let mut bus = MmioBus::default();
    let mut main = IoLoop::new().map_err(Error::io("creating the I/O loop"))?;
    let mut loops = Vec::new();
    for id in 1..=cfg.iothreads {
        loops.push((
            id,
            IoLoop::new().map_err(Error::io("creating an iothread loop"))?,
        ));
    }
    for (i, (id, iothread, device)) in devices.into_iter().enumerate() {
        let base = layout::VIRTIO_MMIO_BASE + i as u64 * MMIO_WINDOW;
        let gsi = layout::VIRTIO_IRQ_FIRST + i as u32;
        let irq = IrqLine::new().map_err(Error::io("virtio irq eventfd"))?;
        vm_fd
            .register_irqfd(&irq.0, gsi)
            .map_err(Error::kvm("KVM_IRQFD"))?;
        let backends = device.backend_fds();
        let dev = Arc::new(Mutex::new(MmioTransport::new(device, mem.clone(), irq)));
        let io = match iothread {
            None => &mut main,
            Some(n) => match loops.iter_mut().find(|(t, _)| *t == n) {
                Some((_, l)) => l,
                None => {
                    return Err(Error::Boot(format!(
                        "{id} names iothread {n}, but the VM has {}",
                        cfg.iothreads
                    )))
                }
            },
        };
        let queues = crate::devices::lock(&dev).queue_count();
        for q in 0..queues {
            let fd = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::io("queue eventfd"))?;
            vm_fd
                .register_ioevent(
                    &fd,
                    &IoEventAddress::Mmio(
                        base + u64::from(virtio_bindings::virtio_mmio::VIRTIO_MMIO_QUEUE_NOTIFY),
                    ),
                    q as u32,
                )
                .map_err(Error::kvm("KVM_IOEVENTFD"))?;
            io.add(fd, Arc::clone(&dev), q)
                .map_err(Error::io("adding a queue to its loop"))?;
        }
        for (fd, token) in backends {
            io.add_backend(fd, Arc::clone(&dev), token)
                .map_err(Error::io("adding a tap to its loop"))?;
        }
        bus.add(base, dev);
        announced.push(crate::acpi::MmioDevice {
            base,
            len: MMIO_WINDOW as u32,
            gsi,
        });
    }
    let mut threads = Vec::new();
    for (id, l) in loops {
        threads.push(
            IoThread::spawn(id, l, cfg.drop_capabilities, cfg.thread_hook.clone())
                .map_err(Error::io("starting an iothread"))?,
        );
    }
    Ok(Devices {
        bus: Arc::new(bus),
        main,
        threads,
        disks: cfg
            .disks
            .iter()
            .map(|d| (d.id.clone(), Arc::clone(&d.counters)))
            .collect(),
        nets: cfg
            .nets
            .iter()
            .map(|n| (n.id.clone(), Arc::clone(&n.counters)))
            .collect(),
    })
}
