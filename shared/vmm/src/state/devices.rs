//! Saved state of our devices: the 16550, the i8042 and each virtio-mmio
//! transport with its queues, and what identifies a device (so a restore
//! into a machine whose devices differ is refused, naming the difference).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialState {
    pub baud_divisor_low: u8,
    pub baud_divisor_high: u8,
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    pub in_buffer: Vec<u8>,
}

impl From<vm_superio::serial::SerialState> for SerialState {
    fn from(s: vm_superio::serial::SerialState) -> Self {
        Self {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }
}

impl From<&SerialState> for vm_superio::serial::SerialState {
    fn from(s: &SerialState) -> Self {
        Self {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct I8042State {
    /// Bytes waiting in the output buffer.
    pub queue: Vec<u8>,
    pub config: u8,
    pub expect_config: bool,
}

/// One virtqueue (virtio-queue's QueueState, with serde).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueState {
    pub max_size: u16,
    pub next_avail: u16,
    pub next_used: u16,
    pub event_idx_enabled: bool,
    pub size: u16,
    pub ready: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
}

impl From<virtio_queue::QueueState> for QueueState {
    fn from(q: virtio_queue::QueueState) -> Self {
        Self {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

impl From<QueueState> for virtio_queue::QueueState {
    fn from(q: QueueState) -> Self {
        Self {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

/// What a device keeps beyond its transport.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DeviceExtra {
    #[default]
    None,
    /// virtio-net: how many queue pairs the driver uses (VQ_PAIRS_SET).
    Net { active_pairs: u16 },
}

/// A virtio-mmio transport's registers and queues.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportState {
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    pub driver_features: u64,
    pub queue_sel: u32,
    pub status: u32,
    pub interrupt_status: u32,
    pub config_generation: u32,
    pub queues: Vec<QueueState>,
    pub extra: DeviceExtra,
}

/// Which device this is, where the guest finds it, and its shape (what a
/// driver that probed it relies on: a disk's size, a NIC's queue pairs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceIdentity {
    /// The spec's id (vda, net0, ...).
    pub id: String,
    /// virtio device type: 2 block, 1 network.
    pub device_type: u32,
    pub mmio_base: u64,
    pub gsi: u32,
    pub shape: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioState {
    pub identity: DeviceIdentity,
    pub transport: TransportState,
}

/// The first difference between the saved devices and the machine's,
/// in words; None when they are the same.
pub fn difference(saved: &[DeviceIdentity], here: &[DeviceIdentity]) -> Option<String> {
    for (i, (s, h)) in saved.iter().zip(here).enumerate() {
        if s != h {
            return Some(format!(
                "device {} was {} ({}) and is now {} ({})",
                i + 1,
                s.id,
                s.shape,
                h.id,
                h.shape
            ));
        }
    }
    match saved.len().cmp(&here.len()) {
        std::cmp::Ordering::Equal => None,
        std::cmp::Ordering::Greater => Some(format!(
            "the saved VM has {} virtio devices, this one {} ({} is missing)",
            saved.len(),
            here.len(),
            saved[here.len()].id
        )),
        std::cmp::Ordering::Less => Some(format!(
            "the saved VM has {} virtio devices, this one {} ({} is new)",
            saved.len(),
            here.len(),
            here[saved.len()].id
        )),
    }
}
