//! The virtio-mmio register block (virtio 1.x, section 4.2.2).

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_bindings::virtio_mmio::{
    VIRTIO_MMIO_CONFIG, VIRTIO_MMIO_CONFIG_GENERATION, VIRTIO_MMIO_DEVICE_FEATURES,
    VIRTIO_MMIO_DEVICE_FEATURES_SEL, VIRTIO_MMIO_DEVICE_ID, VIRTIO_MMIO_DRIVER_FEATURES,
    VIRTIO_MMIO_DRIVER_FEATURES_SEL, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INTERRUPT_STATUS,
    VIRTIO_MMIO_INT_VRING, VIRTIO_MMIO_MAGIC_VALUE, VIRTIO_MMIO_QUEUE_AVAIL_HIGH,
    VIRTIO_MMIO_QUEUE_AVAIL_LOW, VIRTIO_MMIO_QUEUE_DESC_HIGH, VIRTIO_MMIO_QUEUE_DESC_LOW,
    VIRTIO_MMIO_QUEUE_NOTIFY, VIRTIO_MMIO_QUEUE_NUM, VIRTIO_MMIO_QUEUE_NUM_MAX,
    VIRTIO_MMIO_QUEUE_READY, VIRTIO_MMIO_QUEUE_SEL, VIRTIO_MMIO_QUEUE_USED_HIGH,
    VIRTIO_MMIO_QUEUE_USED_LOW, VIRTIO_MMIO_STATUS, VIRTIO_MMIO_VENDOR_ID, VIRTIO_MMIO_VERSION,
};
use virtio_queue::{Queue, QueueT};

use super::{VirtioDevice, VIRTIO_F_VERSION_1};
use crate::devices::IrqLine;
use crate::memory::GuestMemory;
use crate::state::devices::TransportState;

/// Size of one device's register window.
pub const MMIO_WINDOW: u64 = 0x1000;
/// "virt" in little-endian.
const MAGIC: u32 = 0x7472_6976;
/// "VMTL": who made the device, for drivers that care.
const VENDOR: u32 = 0x4c54_4d56;

#[derive(Debug)]
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemory,
    irq: IrqLine,
    queues: Vec<Queue>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
    interrupt_status: u32,
    config_generation: u32,
}

impl MmioTransport {
    pub fn new(device: Box<dyn VirtioDevice>, mem: GuestMemory, irq: IrqLine) -> Self {
        let queues = device
            .queue_max_sizes()
            .iter()
            // Queue::new fails only for sizes that are not powers of two,
            // which our devices never declare.
            .map(|&max| Queue::new(max).expect("queue sizes are powers of two"))
            .collect();
        Self {
            device,
            mem,
            irq,
            queues,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            status: 0,
            interrupt_status: 0,
            config_generation: 0,
        }
    }

    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    pub fn device(&self) -> &dyn VirtioDevice {
        self.device.as_ref()
    }

    pub fn device_mut(&mut self) -> &mut dyn VirtioDevice {
        self.device.as_mut()
    }

    /// Registers, queues and the device's own extra state, for save.
    pub fn state(&self) -> TransportState {
        TransportState {
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            queue_sel: self.queue_sel,
            status: self.status,
            interrupt_status: self.interrupt_status,
            config_generation: self.config_generation,
            queues: self.queues.iter().map(|q| q.state().into()).collect(),
            extra: self.device.extra_state(),
        }
    }

    /// Takes a saved transport's registers and queues; a running device
    /// is activated again with the features its driver chose. Saved
    /// queues that do not fit the device (count, sizes) are refused: the
    /// file is not trusted.
    pub fn restore(&mut self, s: &TransportState) -> Result<(), String> {
        if s.queues.len() != self.queues.len() {
            return Err(format!(
                "{} queues saved, the device has {}",
                s.queues.len(),
                self.queues.len()
            ));
        }
        let mut queues = Vec::with_capacity(s.queues.len());
        for (i, (saved, q)) in s.queues.iter().zip(&self.queues).enumerate() {
            if saved.max_size != q.max_size() {
                return Err(format!(
                    "queue {i}: saved with {} entries at most, the device has {}",
                    saved.max_size,
                    q.max_size()
                ));
            }
            let restored = Queue::try_from(virtio_queue::QueueState::from(*saved))
                .map_err(|e| format!("queue {i}: {e}"))?;
            queues.push(restored);
        }
        self.queues = queues;
        self.device_features_sel = s.device_features_sel;
        self.driver_features_sel = s.driver_features_sel;
        self.driver_features = s.driver_features;
        self.queue_sel = s.queue_sel;
        self.status = s.status;
        self.interrupt_status = s.interrupt_status;
        self.config_generation = s.config_generation;
        if self.running() {
            if self.driver_features & !self.device.features() != 0 {
                return Err(format!(
                    "the driver took features {:#x} the device does not offer",
                    self.driver_features & !self.device.features()
                ));
            }
            self.device.activate(self.driver_features);
            self.device.restore_extra(&s.extra);
        }
        Ok(())
    }

    /// After a restore: requests the guest queued while the VM was saved
    /// are served, and an interrupt it had not acknowledged is raised
    /// again (the irqfd's pending count did not travel).
    pub fn kick_after_restore(&mut self) {
        for i in 0..self.queues.len() {
            // Bounded like the I/O loop's turns: a ring the guest keeps
            // full is served again on its next notification.
            for _ in 0..16 {
                if !self.queue_notified(i) {
                    break;
                }
            }
        }
        if self.interrupt_status != 0 {
            let _ = self.irq.raise();
        }
    }

    fn queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// A guest read of `data.len()` bytes at `offset` in the window.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        if offset >= u64::from(VIRTIO_MMIO_CONFIG) {
            self.device
                .read_config(offset - u64::from(VIRTIO_MMIO_CONFIG), data);
            return;
        }
        // Registers are 32 bits wide and accessed whole.
        if data.len() != 4 {
            data.fill(0);
            return;
        }
        let q = self.queues.get(self.queue_sel as usize);
        let v = match offset as u32 {
            VIRTIO_MMIO_MAGIC_VALUE => MAGIC,
            VIRTIO_MMIO_VERSION => 2,
            VIRTIO_MMIO_DEVICE_ID => self.device.device_type(),
            VIRTIO_MMIO_VENDOR_ID => VENDOR,
            VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            VIRTIO_MMIO_QUEUE_NUM_MAX => q.map_or(0, |q| u32::from(q.max_size())),
            VIRTIO_MMIO_QUEUE_READY => q.map_or(0, |q| u32::from(q.ready())),
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt_status,
            VIRTIO_MMIO_STATUS => self.status,
            VIRTIO_MMIO_CONFIG_GENERATION => self.config_generation,
            _ => 0,
        };
        data.copy_from_slice(&v.to_le_bytes());
    }

    /// A guest write at `offset` in the window. Config space is read-only
    /// for our devices; writes there are ignored.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return;
        };
        let v = u32::from_le_bytes(bytes);
        // Queue layout may change only while the queue is not ready and the
        // driver has not finished setting up (virtio 1.x, 4.2.2.3).
        let setup = self.status & VIRTIO_CONFIG_S_DRIVER_OK == 0;
        match offset as u32 {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = v,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            VIRTIO_MMIO_DRIVER_FEATURES if self.status & VIRTIO_CONFIG_S_FEATURES_OK == 0 => {
                match self.driver_features_sel {
                    0 => {
                        self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v);
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32);
                    }
                    _ => {}
                }
            }
            VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = v,
            VIRTIO_MMIO_QUEUE_NUM if setup => {
                if let Some(q) = self.queue() {
                    // A size the queue cannot take leaves it unchanged; the
                    // queue then fails validation at DRIVER_OK.
                    let _ = q.try_set_size(v as u16);
                }
            }
            VIRTIO_MMIO_QUEUE_READY if setup => {
                if let Some(q) = self.queue() {
                    q.set_ready(v == 1);
                }
            }
            VIRTIO_MMIO_QUEUE_DESC_LOW if setup => {
                if let Some(q) = self.queue() {
                    q.set_desc_table_address(Some(v), None);
                }
            }
            VIRTIO_MMIO_QUEUE_DESC_HIGH if setup => {
                if let Some(q) = self.queue() {
                    q.set_desc_table_address(None, Some(v));
                }
            }
            VIRTIO_MMIO_QUEUE_AVAIL_LOW if setup => {
                if let Some(q) = self.queue() {
                    q.set_avail_ring_address(Some(v), None);
                }
            }
            VIRTIO_MMIO_QUEUE_AVAIL_HIGH if setup => {
                if let Some(q) = self.queue() {
                    q.set_avail_ring_address(None, Some(v));
                }
            }
            VIRTIO_MMIO_QUEUE_USED_LOW if setup => {
                if let Some(q) = self.queue() {
                    q.set_used_ring_address(Some(v), None);
                }
            }
            VIRTIO_MMIO_QUEUE_USED_HIGH if setup => {
                if let Some(q) = self.queue() {
                    q.set_used_ring_address(None, Some(v));
                }
            }
            // Reaches us only when no ioeventfd took it.
            VIRTIO_MMIO_QUEUE_NOTIFY => {
                let _ = self.queue_notified(v as usize);
            }
            VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt_status &= !v,
            VIRTIO_MMIO_STATUS => self.set_status(v),
            _ => {}
        }
    }

    fn set_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        let mut v = v;
        if v & VIRTIO_CONFIG_S_FEATURES_OK != 0 && self.status & VIRTIO_CONFIG_S_FEATURES_OK == 0 {
            // Features the device never offered, or a legacy driver: the
            // handshake fails and the driver sees FEATURES_OK unset.
            let offered = self.device.features();
            if self.driver_features & !offered != 0
                || self.driver_features & VIRTIO_F_VERSION_1 == 0
            {
                v &= !VIRTIO_CONFIG_S_FEATURES_OK;
            }
        }
        if v & VIRTIO_CONFIG_S_DRIVER_OK != 0 && self.status & VIRTIO_CONFIG_S_DRIVER_OK == 0 {
            let mem = &self.mem;
            if v & VIRTIO_CONFIG_S_FEATURES_OK == 0
                || self.queues.iter().any(|q| q.ready() && !q.is_valid(mem))
            {
                v |= VIRTIO_CONFIG_S_NEEDS_RESET;
            } else {
                self.device.activate(self.driver_features);
            }
        }
        self.status = v;
    }

    fn reset(&mut self) {
        for q in &mut self.queues {
            q.reset();
        }
        self.device.reset();
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.status = 0;
        self.interrupt_status = 0;
    }

    fn running(&self) -> bool {
        self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0
            && self.status & VIRTIO_CONFIG_S_NEEDS_RESET == 0
    }

    fn interrupt(&mut self) {
        self.interrupt_status |= VIRTIO_MMIO_INT_VRING;
        // A failed eventfd write means a full counter: the guest has an
        // interrupt pending anyway.
        let _ = self.irq.raise();
    }

    /// Host input for the device (its backend descriptor `token` is
    /// readable); returns true when there is more to do.
    pub fn backend_ready(&mut self, token: usize) -> bool {
        if !self.running() {
            return false;
        }
        let served = self
            .device
            .backend_ready(token, &mut self.queues, &self.mem);
        if served.interrupt {
            self.interrupt();
        }
        served.more
    }

    /// Serves queue `index` after the driver notified it; raises the
    /// interrupt when the device asks for it. Returns true when requests
    /// are left for another pass.
    pub fn queue_notified(&mut self, index: usize) -> bool {
        if !self.running() {
            return false;
        }
        let Some(queue) = self.queues.get_mut(index) else {
            return false;
        };
        if !queue.ready() {
            return false;
        }
        let served = self.device.process_queue(index, queue, &self.mem);
        if served.interrupt {
            self.interrupt();
        }
        served.more
    }
}

#[cfg(test)]
mod tests {
    use vm_memory::GuestAddress;

    use super::*;
    use crate::devices::virtio::Served;

    #[derive(Debug)]
    struct Dummy {
        served: usize,
    }

    impl VirtioDevice for Dummy {
        fn device_type(&self) -> u32 {
            2
        }
        fn features(&self) -> u64 {
            VIRTIO_F_VERSION_1 | 1 << 9
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16]
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            super::super::read_config_bytes(&[1, 2, 3, 4], offset, data);
        }
        fn process_queue(&mut self, _: usize, _: &mut Queue, _: &GuestMemory) -> Served {
            self.served += 1;
            Served {
                interrupt: true,
                more: false,
            }
        }
    }

    fn transport() -> MmioTransport {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        MmioTransport::new(Box::new(Dummy { served: 0 }), mem, IrqLine::new().unwrap())
    }

    fn rd(t: &MmioTransport, off: u32) -> u32 {
        let mut b = [0u8; 4];
        t.read(u64::from(off), &mut b);
        u32::from_le_bytes(b)
    }

    fn wr(t: &mut MmioTransport, off: u32, v: u32) {
        t.write(u64::from(off), &v.to_le_bytes());
    }

    /// Negotiates `features` and sets queue 0 up at 0x1000 / 0x2000 / 0x3000.
    fn bring_up(t: &mut MmioTransport, features: u64) {
        wr(t, VIRTIO_MMIO_STATUS, 3);
        wr(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
        wr(t, VIRTIO_MMIO_DRIVER_FEATURES, features as u32);
        wr(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        wr(t, VIRTIO_MMIO_DRIVER_FEATURES, (features >> 32) as u32);
        wr(t, VIRTIO_MMIO_STATUS, 11);
        wr(t, VIRTIO_MMIO_QUEUE_SEL, 0);
        wr(t, VIRTIO_MMIO_QUEUE_NUM, 16);
        wr(t, VIRTIO_MMIO_QUEUE_DESC_LOW, 0x1000);
        wr(t, VIRTIO_MMIO_QUEUE_AVAIL_LOW, 0x2000);
        wr(t, VIRTIO_MMIO_QUEUE_USED_LOW, 0x3000);
        wr(t, VIRTIO_MMIO_QUEUE_READY, 1);
        wr(t, VIRTIO_MMIO_STATUS, 15);
    }

    #[test]
    fn identity_and_config() {
        let t = transport();
        assert_eq!(rd(&t, VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976);
        assert_eq!(rd(&t, VIRTIO_MMIO_VERSION), 2);
        assert_eq!(rd(&t, VIRTIO_MMIO_DEVICE_ID), 2);
        assert_eq!(rd(&t, VIRTIO_MMIO_QUEUE_NUM_MAX), 16);
        assert_eq!(rd(&t, VIRTIO_MMIO_DEVICE_FEATURES), 1 << 9);
        let mut b = [0u8; 2];
        t.read(u64::from(VIRTIO_MMIO_CONFIG) + 2, &mut b);
        assert_eq!(b, [3, 4]);
        t.read(u64::from(VIRTIO_MMIO_CONFIG) + 3, &mut b);
        assert_eq!(b, [4, 0], "past the config space reads zero");
    }

    #[test]
    fn a_legacy_driver_or_unknown_features_fail_the_handshake() {
        for bad in [1u64 << 9, VIRTIO_F_VERSION_1 | 1 << 20] {
            let mut t = transport();
            bring_up(&mut t, bad);
            assert_eq!(rd(&t, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK, 0);
            assert!(!t.queue_notified(0));
            assert_eq!(
                rd(&t, VIRTIO_MMIO_INTERRUPT_STATUS),
                0,
                "{bad:x}: nothing served"
            );
        }
    }

    #[test]
    fn a_ready_queue_is_served_and_interrupts() {
        let mut t = transport();
        bring_up(&mut t, VIRTIO_F_VERSION_1 | 1 << 9);
        assert_eq!(rd(&t, VIRTIO_MMIO_STATUS), 15);
        t.queue_notified(0);
        assert_eq!(rd(&t, VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);
        assert_eq!(t.irq.0.read().unwrap(), 1, "the irqfd fired");
        wr(&mut t, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
        assert_eq!(rd(&t, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
        // The queue's place cannot move once the driver is running.
        wr(&mut t, VIRTIO_MMIO_QUEUE_DESC_LOW, 0x8000);
        assert_eq!(t.queues[0].desc_table(), 0x1000);
        // Reset: everything back to the start.
        wr(&mut t, VIRTIO_MMIO_STATUS, 0);
        assert_eq!(rd(&t, VIRTIO_MMIO_STATUS), 0);
        assert_eq!(rd(&t, VIRTIO_MMIO_QUEUE_READY), 0);
        assert!(!t.queue_notified(0));
    }

    #[test]
    fn a_queue_outside_memory_needs_reset() {
        let mut t = transport();
        wr(&mut t, VIRTIO_MMIO_QUEUE_USED_HIGH, 1);
        bring_up(&mut t, VIRTIO_F_VERSION_1);
        // bring_up wrote only the low half: the used ring is at 4 GiB + 0x3000.
        assert_ne!(rd(&t, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
        t.queue_notified(0);
        assert_eq!(rd(&t, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
    }
}
