//! virtio devices on the virtio-mmio transport (version 2, the modern one).
//!
//! A device only knows its own queues and configuration space; the
//! transport owns the registers, the feature handshake and the interrupt.
//! Queue notifications arrive on ioeventfds (the vCPU never leaves KVM for
//! them) and interrupts leave through irqfds.

pub mod blk;
pub mod blk_request;
pub mod mmio;
pub mod net;
pub mod rng;
pub mod uring;

use virtio_queue::{DescriptorChain, Queue, QueueT};

use crate::memory::GuestMemory;

pub use mmio::MmioTransport;

/// Bit 32: the device speaks virtio 1.x (required by the modern transport).
pub const VIRTIO_F_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;

/// What a transport needs from the device behind it.
pub trait VirtioDevice: Send + std::fmt::Debug {
    /// The virtio device ID (2 = block, 1 = network).
    fn device_type(&self) -> u32;
    /// Feature bits offered to the driver, VERSION_1 included.
    fn features(&self) -> u64;
    /// The largest size of each queue.
    fn queue_max_sizes(&self) -> &[u16];
    /// Reads the device-specific configuration space; bytes past its end
    /// read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Serves what the driver made available on queue `index`, up to one
    /// ring's worth (a guest whose rings overlap could otherwise keep the
    /// device busy forever).
    fn process_queue(&mut self, index: usize, queue: &mut Queue, mem: &GuestMemory) -> Served;
    /// The driver finished setting up (DRIVER_OK) with these features.
    fn activate(&mut self, _features: u64) {}
    /// A host descriptor the device serves (a tap queue) has input;
    /// `token` says which one.
    fn backend_ready(
        &mut self,
        _token: usize,
        _queues: &mut [Queue],
        _mem: &GuestMemory,
    ) -> Served {
        Served::default()
    }
    /// Host descriptors to watch for input, with their tokens.
    fn backend_fds(&self) -> Vec<(std::os::fd::RawFd, usize)> {
        Vec::new()
    }
    /// The driver reset the device (status 0).
    fn reset(&mut self) {}
    /// What the device keeps beyond its transport, for save.
    fn extra_state(&self) -> crate::state::devices::DeviceExtra {
        crate::state::devices::DeviceExtra::None
    }
    /// Takes back what `extra_state` gave, after `activate`.
    fn restore_extra(&mut self, _extra: &crate::state::devices::DeviceExtra) {}
    /// A disk serves from `disk` from now on (a live disk snapshot's new
    /// top, with the old chain below it); false for devices that are not
    /// disks. Called with the VM paused and its queues drained.
    fn replace_disk(&mut self, _disk: std::sync::Arc<dyn vm_image::Block>) -> bool {
        false
    }
}

/// What one pass over a queue did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Served {
    /// The driver wants an interrupt.
    pub interrupt: bool,
    /// The budget ran out with requests left: serve the queue again.
    pub more: bool,
}

/// Serves up to a ring's worth of `queue`'s chains, one at a time, with
/// `serve`, which returns how many bytes it wrote into the chain's
/// buffers (the used length); for devices that finish each request at
/// once.
pub(crate) fn serve_each(
    queue: &mut Queue,
    mem: &GuestMemory,
    mut serve: impl FnMut(DescriptorChain<&GuestMemory>) -> u32,
) -> Served {
    let budget = queue.size();
    let mut served = 0;
    while served < budget {
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            break;
        };
        served += 1;
        let head = chain.head_index();
        let len = serve(chain);
        let _ = queue.add_used(mem, head, len);
    }
    Served {
        interrupt: served > 0 && queue.needs_notification(mem).unwrap_or(true),
        more: served == budget,
    }
}

/// Copies the part of `config` that `offset..offset + data.len()` covers;
/// the rest reads as zero.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if start >= config.len() {
        return;
    }
    let n = data.len().min(config.len() - start);
    data[..n].copy_from_slice(&config[start..start + n]);
}
