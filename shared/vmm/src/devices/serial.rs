//! COM1: vm-superio's 16550, its interrupt on an irqfd, its output to
//! stdout, a file (written through at every line), or nowhere.

use std::fs::File;
use std::io::{self, Write};

use vm_superio::serial::NoEvents;
use vm_superio::Serial;

use super::IrqLine;

/// A console endpoint whose writer the VM's owner can change while the
/// guest runs (a pty master, or the client of a console socket); output
/// with nobody attached, or that the reader does not take, is dropped, as
/// on a serial line with no one listening.
pub type SharedWriter = std::sync::Arc<std::sync::Mutex<Option<Box<dyn Write + Send>>>>;

/// Where the guest's console output goes.
pub enum SerialOut {
    Stdout,
    File(File),
    Null,
    Shared(SharedWriter),
}

impl std::fmt::Debug for SerialOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Stdout => "Stdout",
            Self::File(_) => "File",
            Self::Null => "Null",
            Self::Shared(_) => "Shared",
        })
    }
}

/// Writes through: every newline (and every write to a file) reaches the
/// kernel, so readers see the console while the VM runs.
#[derive(Debug)]
pub struct ConsoleWriter {
    out: SerialOut,
    line: Vec<u8>,
}

impl Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.out {
            SerialOut::Null => Ok(buf.len()),
            SerialOut::File(f) => f.write(buf),
            SerialOut::Shared(w) => {
                let mut slot = w.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(out) = slot.as_mut() {
                    if let Err(e) = out.write_all(buf) {
                        if e.kind() != io::ErrorKind::WouldBlock {
                            *slot = None;
                        }
                    }
                }
                Ok(buf.len())
            }
            SerialOut::Stdout => {
                self.line.extend_from_slice(buf);
                if buf.contains(&b'\n') || self.line.len() >= 4096 {
                    self.flush()?;
                }
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if let SerialOut::Stdout = self.out {
            let mut so = io::stdout().lock();
            so.write_all(&self.line)?;
            so.flush()?;
            self.line.clear();
        }
        Ok(())
    }
}

impl Drop for ConsoleWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

#[derive(Debug)]
pub struct SerialPort {
    inner: Serial<IrqLine, NoEvents, ConsoleWriter>,
}

impl SerialPort {
    pub fn new(irq: IrqLine, out: SerialOut) -> Self {
        Self {
            inner: Serial::new(
                irq,
                ConsoleWriter {
                    out,
                    line: Vec::new(),
                },
            ),
        }
    }
    /// A port as saved: registers and receive FIFO as they were.
    pub fn from_state(
        irq: IrqLine,
        out: SerialOut,
        state: &crate::state::devices::SerialState,
    ) -> Result<Self, String> {
        let writer = ConsoleWriter {
            out,
            line: Vec::new(),
        };
        Serial::from_state(&state.into(), irq, NoEvents, writer)
            .map(|inner| Self { inner })
            .map_err(|e| format!("serial port: {e:?}"))
    }
    pub fn state(&self) -> crate::state::devices::SerialState {
        self.inner.state().into()
    }
    pub fn read(&mut self, offset: u8) -> u8 {
        self.inner.read(offset)
    }
    pub fn write(&mut self, offset: u8, value: u8) {
        // A failed console write must not stop the guest.
        let _ = self.inner.write(offset, value);
    }
    /// Bytes typed at the console: as many as the receive FIFO takes
    /// (returned); the caller keeps the rest for later.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.inner.fifo_capacity());
        if n > 0 && self.inner.enqueue_raw_bytes(&bytes[..n]).is_err() {
            return 0;
        }
        n
    }
}
