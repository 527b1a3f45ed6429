//! Interactive consoles: the serial port on a pty (`<name>/console` links
//! to it) or on a unix socket (one client at a time), with input going to
//! the guest; and `vm-run console`, which attaches a terminal to either.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context, Result};
use vmm::devices::SharedWriter;
use vmm::Vm;

/// Input bytes waiting for room in the serial FIFO.
pub type Pending = VecDeque<u8>;

/// The VM side of an interactive console.
#[derive(Default)]
pub enum Endpoint {
    #[default]
    None,
    Pty {
        master: File,
        /// Held open so the master never reads EIO between clients.
        _slave: File,
        writer: SharedWriter,
    },
    Socket {
        listener: UnixListener,
        path: vm_control::BoundPath,
        client: Option<UnixStream>,
        writer: SharedWriter,
    },
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "None",
            Self::Pty { .. } => "Pty",
            Self::Socket { .. } => "Socket",
        })
    }
}

fn cvt(r: libc::c_int, what: &str) -> Result<libc::c_int> {
    if r < 0 {
        Err(std::io::Error::last_os_error()).with_context(|| what.to_string())
    } else {
        Ok(r)
    }
}

/// Puts a terminal in raw mode (no echo, no line editing, no signals).
fn make_raw(fd: RawFd) -> Result<libc::termios> {
    // SAFETY: tcgetattr fills the termios we pass; zeroed is a valid start.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: as above; fd is an open terminal.
    cvt(unsafe { libc::tcgetattr(fd, &raw mut t) }, "tcgetattr")?;
    let saved = t;
    // SAFETY: cfmakeraw only edits the struct we own.
    unsafe { libc::cfmakeraw(&raw mut t) };
    // SAFETY: tcsetattr reads the struct we pass.
    let r = unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw const t) };
    cvt(r, "tcsetattr")?;
    Ok(saved)
}

impl Endpoint {
    /// A new pty; the link `link` points at its terminal.
    pub fn pty(link: &Path) -> Result<Self> {
        // SAFETY: posix_openpt returns a new descriptor we then own.
        let fd = cvt(
            unsafe {
                libc::posix_openpt(
                    libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC,
                )
            },
            "posix_openpt",
        )?;
        // SAFETY: fd is ours from here on.
        let master = unsafe { File::from_raw_fd(fd) };
        // SAFETY: grantpt/unlockpt on the master we own.
        cvt(unsafe { libc::grantpt(fd) }, "grantpt")?;
        // SAFETY: as above.
        cvt(unsafe { libc::unlockpt(fd) }, "unlockpt")?;
        let mut name = [0 as libc::c_char; 64];
        // SAFETY: ptsname_r writes at most name.len() bytes into our buffer.
        let r = unsafe { libc::ptsname_r(fd, name.as_mut_ptr(), name.len()) };
        cvt(r, "ptsname_r")?;
        // SAFETY: ptsname_r wrote a NUL-terminated string.
        let pts = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags_noctty()
            .open(&pts)
            .with_context(|| format!("opening {pts}"))?;
        make_raw(slave.as_raw_fd())?;
        let _ = std::fs::remove_file(link);
        std::os::unix::fs::symlink(&pts, link)
            .with_context(|| format!("linking {}", link.display()))?;
        let out: Box<dyn Write + Send> = Box::new(master.try_clone()?);
        Ok(Self::Pty {
            master,
            _slave: slave,
            writer: Arc::new(Mutex::new(Some(out))),
        })
    }

    /// A listening console socket at `path` (0600).
    pub fn socket(path: &Path) -> Result<Self> {
        // A stale socket (a VM that died) gives way; anything else at the
        // path is the user's and stays.
        vm_control::clear_stale_socket(path)
            .with_context(|| format!("console socket {}", path.display()))?;
        // SAFETY: umask only changes this process's creation mask.
        let old = unsafe { libc::umask(0o177) };
        let bound = UnixListener::bind(path);
        // SAFETY: as above, restoring it.
        unsafe { libc::umask(old) };
        let listener = bound.with_context(|| format!("console socket {}", path.display()))?;
        listener.set_nonblocking(true)?;
        Ok(Self::Socket {
            listener,
            path: vm_control::BoundPath::new(path),
            client: None,
            writer: Arc::new(Mutex::new(None)),
        })
    }

    pub fn writer(&self) -> Option<SharedWriter> {
        match self {
            Self::None => None,
            Self::Pty { writer, .. } | Self::Socket { writer, .. } => Some(Arc::clone(writer)),
        }
    }

    /// Descriptors to poll for input (or a new client).
    pub fn fds(&self) -> Vec<RawFd> {
        match self {
            Self::None => vec![],
            Self::Pty { master, .. } => vec![master.as_raw_fd()],
            Self::Socket {
                listener, client, ..
            } => {
                let mut v = vec![listener.as_raw_fd()];
                if let Some(c) = client {
                    v.push(c.as_raw_fd());
                }
                v
            }
        }
    }

    /// Handles a readable descriptor: input goes to `pending`.
    pub fn on_ready(&mut self, fd: RawFd, pending: &mut Pending) {
        let mut buf = [0u8; 256];
        match self {
            Self::None => {}
            Self::Pty { master, .. } => {
                if let Ok(n) = master.read(&mut buf) {
                    pending.extend(&buf[..n]);
                }
            }
            Self::Socket {
                listener,
                client,
                writer,
                ..
            } => {
                if fd == listener.as_raw_fd() {
                    if let Ok((c, _)) = listener.accept() {
                        if !vm_control::peer_allowed(&c) {
                            crate::timefmt::log("refused a console connection from another user");
                            return;
                        }
                        let _ = c.set_nonblocking(true);
                        if let Ok(w) = c.try_clone() {
                            *writer
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                                Some(Box::new(w));
                        }
                        *client = Some(c);
                    }
                } else if let Some(c) = client.as_mut() {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => {
                            *client = None;
                            *writer
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                        }
                        Ok(n) => pending.extend(&buf[..n]),
                    }
                }
            }
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        // A socket's BoundPath removes it, if it is still ours.
        match self {
            Self::Pty { _slave: slave, .. } => {
                // Closing the master hangs the terminal up and discards what
                // an attached console has not read yet: give it a moment
                // (at most 250 ms) to take the guest's last words.
                for _ in 0..50 {
                    let mut unread: libc::c_int = 0;
                    // SAFETY: FIONREAD writes one int through the pointer.
                    let r =
                        unsafe { libc::ioctl(slave.as_raw_fd(), libc::FIONREAD, &raw mut unread) };
                    if r < 0 || unread == 0 {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
            Self::Socket { .. } | Self::None => {}
        }
    }
}

/// Moves what the serial FIFO takes from `pending` into the guest.
pub fn feed(vm: &Vm, pending: &mut Pending) {
    if pending.is_empty() {
        return;
    }
    let bytes: Vec<u8> = pending.iter().copied().collect();
    let n = vm.serial_input(&bytes);
    pending.drain(..n);
}

trait NoCtty {
    fn custom_flags_noctty(&mut self) -> &mut Self;
}

impl NoCtty for std::fs::OpenOptions {
    fn custom_flags_noctty(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::custom_flags(self, libc::O_NOCTTY | libc::O_CLOEXEC)
    }
}

/// Watches console output for a text (`vm-run console --until`), across
/// the boundaries of the reads it comes in.
#[derive(Debug)]
pub struct Until {
    needle: Vec<u8>,
    tail: Vec<u8>,
}

impl Until {
    pub fn new(text: &str) -> Self {
        Self {
            needle: text.as_bytes().to_vec(),
            tail: Vec::new(),
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.needle).into_owned()
    }

    /// Where the text ends in `chunk` once it has been seen (what follows
    /// it is not the script's to see: a shell's next prompt, a terminal
    /// query), or `None` while it has not.
    pub fn feed(&mut self, chunk: &[u8]) -> Option<usize> {
        let before = self.tail.len();
        self.tail.extend_from_slice(chunk);
        let n = self.needle.len();
        if n == 0 {
            return Some(0);
        }
        if let Some(at) = self
            .tail
            .windows(n)
            .position(|w| w == self.needle.as_slice())
        {
            // The kept tail is shorter than the text, so it ends in `chunk`.
            return Some(at + n - before);
        }
        // Only a possible start of the text needs keeping.
        let keep = self.tail.len().min(n - 1);
        self.tail.drain(..self.tail.len() - keep);
        None
    }
}

/// What ends an attached console.
enum Event {
    /// The `--until` text was shown.
    Found,
    /// The guest's side closed (the VM ended).
    Closed,
    /// Ctrl-] on the input.
    Left,
    /// The end of the input.
    InputEnd,
}

/// `vm-run console` for a pty or socket console: the terminal in raw mode,
/// both directions copied until Ctrl-], the end of the VM or, with
/// `until`, the text shown. Without a terminal (a pipe), the input is sent
/// and the guest's answer followed until the VM ends or the text shows.
pub fn attach(
    stream_r: Box<dyn Read + Send>,
    stream_w: Box<dyn Write + Send>,
    pid: u32,
    mut until: Option<Until>,
) -> Result<i32> {
    let stdin_fd = std::io::stdin().as_raw_fd();
    // SAFETY: isatty has no memory preconditions.
    let saved = if unsafe { libc::isatty(stdin_fd) } == 1 {
        Some(make_raw(stdin_fd)?)
    } else {
        None
    };
    eprint!("Connected to the console; escape character is ^]\r\n");
    let text = until.as_ref().map(Until::text);
    let (tx, rx) = std::sync::mpsc::channel();
    let out_tx = tx.clone();
    std::thread::spawn(move || {
        let mut r = stream_r;
        let mut buf = [0u8; 4096];
        let mut out = std::io::stdout();
        while let Ok(n) = r.read(&mut buf) {
            let found = until.as_mut().and_then(|u| u.feed(&buf[..n]));
            let shown = found.unwrap_or(n);
            if n == 0
                || out
                    .write_all(&buf[..shown])
                    .and_then(|()| out.flush())
                    .is_err()
            {
                break;
            }
            if found.is_some() {
                let _ = out_tx.send(Event::Found);
                return;
            }
        }
        let _ = out_tx.send(Event::Closed);
    });
    // The input on a thread of its own: a found text or a closed console
    // must end the attach while a read of the terminal still waits.
    std::thread::spawn(move || {
        let mut w = stream_w;
        let mut buf = [0u8; 1024];
        let mut stdin = std::io::stdin();
        let ev = loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break Event::InputEnd,
                Ok(n) => n,
            };
            if let Some(i) = buf[..n].iter().position(|&b| b == 0x1d) {
                let _ = w.write_all(&buf[..i]);
                break Event::Left;
            }
            if w.write_all(&buf[..n]).is_err()
                || vm_control::Liveness::of(pid) == vm_control::Liveness::Dead
            {
                break Event::Closed;
            }
        };
        let _ = tx.send(ev);
    });
    let outcome = loop {
        match rx.recv() {
            // Input over: a pipe's answer, or the text, is still to come.
            Ok(Event::InputEnd) if text.is_some() || saved.is_none() => {}
            Ok(Event::Found | Event::Left | Event::InputEnd) => break Ok(()),
            Ok(Event::Closed) | Err(_) => break text.map_or(Ok(()), Err),
        }
    };
    if let Some(t) = saved {
        // SAFETY: restoring the terminal settings we saved.
        unsafe { libc::tcsetattr(stdin_fd, libc::TCSANOW, &raw const t) };
    }
    outcome
        .map(|()| 0)
        .map_err(|t| anyhow!("the console closed (the VM ended) before it showed '{t}'"))
}

/// Opens the console endpoint of a running VM for `attach`.
pub fn open_client(
    console: &Path,
    socket: bool,
) -> Result<(Box<dyn Read + Send>, Box<dyn Write + Send>)> {
    if socket {
        let s = UnixStream::connect(console)
            .with_context(|| format!("console socket {}", console.display()))?;
        let w = s.try_clone()?;
        Ok((Box::new(s), Box::new(w)))
    } else {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags_noctty()
            .open(console)
            .map_err(|e| anyhow!("console {}: {e}", console.display()))?;
        let w = f.try_clone()?;
        Ok((Box::new(f), Box::new(w)))
    }
}

#[cfg(test)]
mod tests {
    use super::Until;

    #[test]
    fn until_finds_a_text_split_over_reads() {
        let mut u = Until::new("login: ");
        assert_eq!(u.feed(b"Debian GNU/Linux\r\ndebian lo"), None);
        assert_eq!(u.feed(b"g"), None);
        assert_eq!(u.feed(b"in: "), Some(4));
        let mut u = Until::new("# ");
        assert_eq!(u.feed(b"#"), None);
        assert_eq!(u.feed(b"x#x"), None, "the text is not in what was shown");
        assert_eq!(u.feed(b"#"), None);
        assert_eq!(u.feed(b" "), Some(1), "the kept tail meets the next read");
        assert_eq!(Until::new("").feed(b""), Some(0));
    }

    #[test]
    fn until_stops_the_output_at_the_text() {
        // A shell's prompt followed, in the same read, by its cursor query.
        let mut u = Until::new("# ");
        assert_eq!(u.feed(b"data-0001\r\n/root # \x1b[6n"), Some(19));
        let mut u = Until::new("# ");
        assert_eq!(u.feed(b"# # "), Some(2), "the first showing ends it");
    }
}
