//! Port I/O devices: the 16550 serial port, our i8042, and the rule that
//! unknown ports read as all ones and ignore writes.

pub mod i8042;
pub mod serial;
pub mod virtio;

use std::io;
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

pub use i8042::I8042;
pub use serial::{SerialOut, SerialPort, SharedWriter};
pub use virtio::MmioTransport;

/// What a device asks of the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceEvent {
    /// The guest pulsed the reset line (i8042 command 0xfe) or wrote the
    /// ACPI reset register.
    Reset,
    /// The guest entered ACPI sleep state S5 (its power-off).
    PowerOff,
}

/// An interrupt line wired to KVM through an irqfd.
#[derive(Debug)]
pub struct IrqLine(pub EventFd);

impl IrqLine {
    pub fn new() -> io::Result<Self> {
        EventFd::new(libc::EFD_NONBLOCK).map(Self)
    }
    pub fn raise(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

impl vm_superio::Trigger for IrqLine {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.raise()
    }
}

const COM1: u16 = 0x3f8;
const I8042_DATA: u16 = 0x60;
const I8042_CMD: u16 = 0x64;

/// The legacy devices on the port I/O bus.
#[derive(Debug)]
pub struct PioBus {
    pub serial: SerialPort,
    pub i8042: I8042,
}

impl PioBus {
    pub fn read(&mut self, port: u16, data: &mut [u8]) {
        match port {
            COM1..=0x3ff if data.len() == 1 => data[0] = self.serial.read((port - COM1) as u8),
            I8042_DATA | I8042_CMD if data.len() == 1 => data[0] = self.i8042.read(port),
            // Never asleep: the sleep status reads as nothing pending.
            crate::acpi::SLEEP_STATUS_PORT => data.fill(0),
            _ => data.fill(0xff),
        }
    }

    pub fn write(&mut self, port: u16, data: &[u8]) -> Option<DeviceEvent> {
        match port {
            COM1..=0x3ff if data.len() == 1 => {
                self.serial.write((port - COM1) as u8, data[0]);
                None
            }
            I8042_DATA | I8042_CMD if data.len() == 1 => self.i8042.write(port, data[0]),
            crate::acpi::SLEEP_CONTROL_PORT if data.len() == 1 => {
                let v = data[0];
                (v & crate::acpi::SLP_EN != 0 && (v >> 2) & 7 == crate::acpi::S5_TYPE)
                    .then_some(DeviceEvent::PowerOff)
            }
            crate::acpi::RESET_PORT if data.len() == 1 && data[0] == crate::acpi::RESET_VALUE => {
                Some(DeviceEvent::Reset)
            }
            _ => None,
        }
    }
}

/// The virtio-mmio devices, each in its own window of the MMIO hole. Fixed
/// once the VM starts, so vCPUs look devices up without a lock.
#[derive(Debug, Default)]
pub struct MmioBus {
    devices: Vec<(u64, Arc<Mutex<MmioTransport>>)>,
}

impl MmioBus {
    pub fn add(&mut self, base: u64, dev: Arc<Mutex<MmioTransport>>) {
        self.devices.push((base, dev));
    }

    fn find(&self, addr: u64) -> Option<(u64, &Mutex<MmioTransport>)> {
        self.devices.iter().find_map(|(base, d)| {
            let off = addr.checked_sub(*base)?;
            (off < virtio::mmio::MMIO_WINDOW).then_some((off, d.as_ref()))
        })
    }

    /// A guest read; addresses with no device read as all ones.
    pub fn read(&self, addr: u64, data: &mut [u8]) {
        match self.find(addr) {
            Some((off, d)) => lock(d).read(off, data),
            None => data.fill(0xff),
        }
    }

    /// A guest write; addresses with no device ignore it.
    pub fn write(&self, addr: u64, data: &[u8]) {
        if let Some((off, d)) = self.find(addr) {
            lock(d).write(off, data);
        }
    }
}

/// Locks a device; a panic elsewhere (impossible with panic=abort, but
/// tests unwind) does not make it unusable.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acpi::{RESET_PORT, SLEEP_CONTROL_PORT, SLEEP_STATUS_PORT};

    fn bus() -> PioBus {
        PioBus {
            serial: SerialPort::new(IrqLine::new().unwrap(), SerialOut::Null),
            i8042: I8042::new(IrqLine::new().unwrap()),
        }
    }

    /// The ACPI registers are written by the guest: only S5 with SLP_EN
    /// powers off, only the reset value resets, and anything else (other
    /// sleep types, SLP_EN alone, wide writes, other values) does nothing.
    #[test]
    fn acpi_registers_take_only_their_values() {
        let mut b = bus();
        assert_eq!(
            b.write(SLEEP_CONTROL_PORT, &[5 << 2 | 1 << 5]),
            Some(DeviceEvent::PowerOff)
        );
        for v in [
            0u8,
            5 << 2,
            1 << 5,
            3 << 2 | 1 << 5,
            7 << 2 | 1 << 5,
            0xff ^ (1 << 5),
        ] {
            assert_eq!(
                b.write(SLEEP_CONTROL_PORT, &[v]),
                None,
                "sleep control {v:#x}"
            );
        }
        assert_eq!(b.write(SLEEP_CONTROL_PORT, &[5 << 2 | 1 << 5, 0]), None);
        assert_eq!(b.write(RESET_PORT, &[1]), Some(DeviceEvent::Reset));
        for v in [0u8, 2, 0xfe, 0xff] {
            assert_eq!(b.write(RESET_PORT, &[v]), None, "reset {v:#x}");
        }
        assert_eq!(b.write(RESET_PORT, &[1, 0, 0, 0]), None);
        let mut d = [0xaau8; 1];
        b.read(SLEEP_STATUS_PORT, &mut d);
        assert_eq!(d, [0]);
    }
}
