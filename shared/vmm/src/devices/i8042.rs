//! Our i8042 keyboard controller: enough of it for a guest to reset the
//! machine (command 0xfe) and for `vm-run shutdown` to press Ctrl-Alt-Del
//! (scancodes on IRQ 1), which vm-superio's i8042 cannot do.

use std::collections::VecDeque;

use super::{DeviceEvent, IrqLine};

const STATUS_OUTPUT_FULL: u8 = 0x01;
const STATUS_SYSTEM_FLAG: u8 = 0x04;
const CMD_READ_CONFIG: u8 = 0x20;
const CMD_WRITE_CONFIG: u8 = 0x60;
const CMD_RESET: u8 = 0xfe;
/// Scancode set 1 (what a translating i8042 delivers): Ctrl, Alt, Del
/// pressed, then released.
const CTRL_ALT_DEL: [u8; 8] = [0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d];

#[derive(Debug)]
pub struct I8042 {
    irq: IrqLine,
    queue: VecDeque<u8>,
    config: u8,
    expect_config: bool,
}

impl I8042 {
    pub fn new(irq: IrqLine) -> Self {
        Self {
            irq,
            queue: VecDeque::new(),
            // Keyboard interrupt on, translation on.
            config: 0x45,
            expect_config: false,
        }
    }

    /// A controller as saved. The output buffer holds at most a few
    /// keystrokes; a saved one longer than 64 bytes is refused.
    pub fn from_state(irq: IrqLine, s: &crate::state::devices::I8042State) -> Result<Self, String> {
        if s.queue.len() > 64 {
            return Err(format!("i8042: {} bytes queued", s.queue.len()));
        }
        Ok(Self {
            irq,
            queue: s.queue.iter().copied().collect(),
            config: s.config,
            expect_config: s.expect_config,
        })
    }

    pub fn state(&self) -> crate::state::devices::I8042State {
        crate::state::devices::I8042State {
            queue: self.queue.iter().copied().collect(),
            config: self.config,
            expect_config: self.expect_config,
        }
    }

    pub fn read(&mut self, port: u16) -> u8 {
        if port == 0x64 {
            let full = if self.queue.is_empty() {
                0
            } else {
                STATUS_OUTPUT_FULL
            };
            return STATUS_SYSTEM_FLAG | full;
        }
        let byte = self.queue.pop_front().unwrap_or(0);
        if !self.queue.is_empty() {
            let _ = self.irq.raise();
        }
        byte
    }

    pub fn write(&mut self, port: u16, value: u8) -> Option<DeviceEvent> {
        if port == 0x64 {
            match value {
                CMD_RESET => return Some(DeviceEvent::Reset),
                CMD_READ_CONFIG => self.queue.push_back(self.config),
                CMD_WRITE_CONFIG => self.expect_config = true,
                _ => {}
            }
        } else if self.expect_config {
            self.config = value;
            self.expect_config = false;
        }
        None
    }

    /// Presses and releases Ctrl-Alt-Del.
    pub fn ctrl_alt_del(&mut self) {
        self.queue.extend(CTRL_ALT_DEL);
        let _ = self.irq.raise();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_and_keys() {
        let mut k = I8042::new(IrqLine::new().unwrap());
        assert_eq!(k.read(0x64) & STATUS_OUTPUT_FULL, 0);
        assert_eq!(k.write(0x64, 0xfe), Some(DeviceEvent::Reset));
        k.ctrl_alt_del();
        assert_eq!(k.irq.0.read().unwrap(), 1);
        let mut got = Vec::new();
        while k.read(0x64) & STATUS_OUTPUT_FULL != 0 {
            got.push(k.read(0x60));
        }
        assert_eq!(got, CTRL_ALT_DEL);
        assert_eq!(k.write(0x64, CMD_READ_CONFIG), None);
        assert_eq!(k.read(0x60), 0x45);
    }
}
