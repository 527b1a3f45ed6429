//! The machine's virtio devices: each behind a virtio-mmio window with its
//! own interrupt line, its queue notifiers (ioeventfds) and host
//! descriptors wired to the loop that serves it.

use std::sync::{Arc, Mutex};

use kvm_ioctls::{IoEventAddress, VmFd};
use vmm_sys_util::eventfd::EventFd;

use super::VmConfig;
use crate::devices::virtio::blk::{BlockCounters, VirtioBlk};
use crate::devices::virtio::mmio::MMIO_WINDOW;
use crate::devices::virtio::net::{NetCounters, VirtioNet};
use crate::devices::virtio::rng::VirtioRng;
use crate::devices::virtio::VirtioDevice;
use crate::devices::{IrqLine, MmioBus, MmioTransport};
use crate::dirty::DirtyLog;
use crate::io_loop::{IoLoop, IoThread};
use crate::memory::GuestMemory;
use crate::state::devices::DeviceIdentity;
use crate::{layout, Error, Result};

/// The virtio devices of a VM and what serves them.
pub(super) struct Devices {
    pub(super) bus: Arc<MmioBus>,
    pub(super) main: IoLoop,
    pub(super) threads: Vec<IoThread>,
    pub(super) disks: Vec<(String, Arc<BlockCounters>)>,
    pub(super) nets: Vec<(String, Arc<NetCounters>)>,
    /// Each transport with what identifies its device, in bus order.
    pub(super) registry: Vec<(DeviceIdentity, Arc<Mutex<MmioTransport>>)>,
}

/// A device with its id, the iothread that serves it and its shape.
type Built = (String, Option<u32>, Box<dyn VirtioDevice>, String);

/// Builds the virtio-blk devices, then the virtio-net ones, then the
/// entropy device.
fn build_devices(cfg: &VmConfig, dirty: &Arc<DirtyLog>) -> Result<Vec<Built>> {
    let mut out: Vec<Built> = Vec::new();
    for d in &cfg.disks {
        let mut blk = VirtioBlk::new(
            Arc::clone(&d.image),
            d.read_only,
            d.cache,
            &d.serial,
            Arc::clone(&d.counters),
        )
        .with_dirty_log(Arc::clone(dirty));
        if let Some(f) = &d.uring_file {
            blk = f
                .try_clone()
                .and_then(|f| blk.with_uring(f))
                .map_err(Error::io(format!("disk {}: io_uring", d.id)))?;
        }
        let shape = format!(
            "disk of {} bytes, {}",
            d.image.size(),
            if d.read_only {
                "read-only"
            } else {
                "read-write"
            }
        );
        out.push((d.id.clone(), d.iothread, Box::new(blk), shape));
    }
    for n in &cfg.nets {
        let taps = n
            .taps
            .iter()
            .map(|t| t.try_clone())
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(Error::io(format!("net {}: tap", n.id)))?;
        let net = VirtioNet::new(taps, n.mac, Arc::clone(&n.counters))
            .map_err(Error::io(format!("net {}: tap", n.id)))?
            .with_dirty_log(Arc::clone(dirty));
        let shape = format!("NIC with {} queue pairs", n.taps.len());
        out.push((n.id.clone(), None, Box::new(net), shape));
    }
    if cfg.rng {
        let rng = VirtioRng::new().with_dirty_log(Arc::clone(dirty));
        out.push(("rng0".into(), None, Box::new(rng), "entropy source".into()));
    }
    Ok(out)
}

/// Puts each device behind a virtio-mmio window with its own interrupt
/// line, wires its queue notifiers (ioeventfds) and host descriptors to
/// the loop that serves it, starts the iothreads and announces the devices
/// on the kernel command line.
pub(super) fn add_devices(
    vm_fd: &VmFd,
    mem: &GuestMemory,
    cfg: &VmConfig,
    dirty: &Arc<DirtyLog>,
    announced: &mut Vec<crate::acpi::MmioDevice>,
) -> Result<Devices> {
    let devices = build_devices(cfg, dirty)?;
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
    let mut registry = Vec::new();
    for (i, (id, iothread, device, shape)) in devices.into_iter().enumerate() {
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
        registry.push((
            DeviceIdentity {
                id: id.clone(),
                device_type: crate::devices::lock(&dev).device().device_type(),
                mmio_base: base,
                gsi,
                shape,
            },
            Arc::clone(&dev),
        ));
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
        registry,
    })
}
