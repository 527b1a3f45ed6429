//! The machine: a KVM VM with the in-kernel irqchip and PIT, guest memory,
//! the legacy devices and one thread per vCPU.

use std::fs::File;
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use crate::boot::{self, BootConfig};
use crate::devices::{IrqLine, PioBus, SerialOut, SerialPort, I8042};
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
}

#[derive(Debug)]
pub struct Vm {
    _kvm: Kvm,
    _vm_fd: VmFd,
    _mem: GuestMemory,
    _mem_file: File,
    vcpus: Vec<Vcpu>,
    bus: Arc<Mutex<PioBus>>,
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

        let entry = boot::load(&mem, cfg.memory, &cfg.boot)?;

        let com1 = IrqLine::new().map_err(Error::io("serial irq eventfd"))?;
        vm_fd
            .register_irqfd(&com1.0, COM1_GSI)
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
                    sink.clone(),
                    cfg.drop_capabilities,
                )
                .map_err(Error::io("starting a vCPU thread"))?,
            );
        }
        Ok(Self {
            _kvm: kvm,
            _vm_fd: vm_fd,
            _mem: mem,
            _mem_file: mem_file,
            vcpus,
            bus,
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

    /// Stops every vCPU; returns once all are out of KVM_RUN.
    pub fn pause(&self) {
        for v in &self.vcpus {
            v.set_wanted(Wanted::Pause);
        }
        for v in &self.vcpus {
            v.wait_paused();
        }
    }

    pub fn resume(&self) {
        for v in &self.vcpus {
            v.set_wanted(Wanted::Run);
        }
    }

    /// Presses Ctrl-Alt-Del on the guest's keyboard.
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

    /// Stops every vCPU thread and frees the machine.
    pub fn destroy(self) {
        for v in self.vcpus {
            v.exit();
        }
    }
}
