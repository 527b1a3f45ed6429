//! The control socket's clients, served from the emulator thread's poll
//! loop without ever blocking it: each connection is read as it becomes
//! readable, a request line may be 64 KiB at most (with 16 descriptors),
//! a client has 5 seconds to send it and at most 16 are served at once. A
//! silent or flooding client costs the VM nothing but a slot.

use std::io::{ErrorKind, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use vm_control::{Listener, Reply, Request, MAX_FDS};

use crate::timefmt::log;

const MAX_CLIENTS: usize = 16;
const MAX_REQUEST: usize = 64 << 10;
const DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    fds: Vec<OwnedFd>,
    deadline: Instant,
}

/// A request read whole, with the connection to answer it on and the
/// descriptors that came with it (a save's file).
#[derive(Debug)]
pub struct Incoming {
    pub stream: UnixStream,
    pub request: Result<Request, String>,
    pub fds: Vec<OwnedFd>,
}

#[derive(Debug, Default)]
pub struct Clients {
    conns: Vec<Conn>,
}

impl Clients {
    /// Takes every pending connection; other users' are closed unanswered
    /// (the peer check), and past the limit a client gets an error reply.
    pub fn accept(&mut self, listener: &Listener) {
        while let Ok((stream, _)) = listener.inner.accept() {
            if !vm_control::peer_allowed(&stream) {
                log("refused a control connection from another user");
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            if self.conns.len() >= MAX_CLIENTS {
                reply(
                    &stream,
                    &Reply::err("too many control connections; try again"),
                );
                continue;
            }
            self.conns.push(Conn {
                stream,
                buf: Vec::new(),
                fds: Vec::new(),
                deadline: Instant::now() + DEADLINE,
            });
        }
    }

    pub fn fds(&self) -> Vec<RawFd> {
        self.conns.iter().map(|c| c.stream.as_raw_fd()).collect()
    }

    /// Milliseconds until the next deadline, for poll.
    pub fn timeout_ms(&self) -> Option<i32> {
        let now = Instant::now();
        self.conns
            .iter()
            .map(|c| c.deadline.saturating_duration_since(now).as_millis() as i32 + 1)
            .min()
    }

    /// Reads what connection `fd` has sent; returns its request once the
    /// line is whole (the connection leaves the set: one request each).
    pub fn on_ready(&mut self, fd: RawFd) -> Option<Incoming> {
        let i = self.conns.iter().position(|c| c.stream.as_raw_fd() == fd)?;
        let c = &mut self.conns[i];
        let mut chunk = [0u8; 4096];
        loop {
            match vm_control::recv_with_fds(&c.stream, &mut chunk) {
                Ok((0, _)) => {
                    // Closed before a whole line: nobody to answer.
                    self.conns.swap_remove(i);
                    return None;
                }
                Ok((n, fds)) => {
                    c.fds.extend(fds);
                    c.buf.extend_from_slice(&chunk[..n]);
                    if c.fds.len() > MAX_FDS {
                        // Spread over several messages: the same limit.
                        let c = self.conns.swap_remove(i);
                        refuse(&c.stream, &vm_control::too_many_fds().to_string());
                        return None;
                    }
                    if let Some(end) = c.buf.iter().position(|&b| b == b'\n') {
                        let c = self.conns.swap_remove(i);
                        return Some(Incoming {
                            request: Request::parse(&c.buf[..end]),
                            stream: c.stream,
                            fds: c.fds,
                        });
                    }
                    if c.buf.len() > MAX_REQUEST {
                        let c = self.conns.swap_remove(i);
                        refuse(&c.stream, &format!("longer than {MAX_REQUEST} bytes"));
                        return None;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::InvalidInput => {
                    // Too many descriptors in one message.
                    let c = self.conns.swap_remove(i);
                    refuse(&c.stream, &e.to_string());
                    return None;
                }
                Err(_) => {
                    self.conns.swap_remove(i);
                    return None;
                }
            }
        }
    }

    /// Drops the clients whose time is up, telling them why.
    pub fn expire(&mut self) {
        let now = Instant::now();
        self.conns.retain(|c| {
            let keep = c.deadline > now;
            if !keep {
                reply(
                    &c.stream,
                    &Reply::err("bad request: no whole request line within 5 s"),
                );
            }
            keep
        });
    }
}

/// Answers a bad request and lets the connection go. What else is pending
/// (up to a request's worth) is read first and its descriptors closed:
/// closing over unread bytes would reset the connection, and the client
/// would lose the answer.
fn refuse(stream: &UnixStream, why: &str) {
    let mut chunk = [0u8; 4096];
    let mut left = MAX_REQUEST;
    while left > 0 {
        match vm_control::recv_with_fds(stream, &mut chunk) {
            Ok((n, _)) if n > 0 => left = left.saturating_sub(n),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            _ => break,
        }
    }
    reply(stream, &Reply::err(format!("bad request: {why}")));
}

/// Sends one reply line without waiting: a client that does not read
/// its socket loses its reply, the VM loses nothing.
pub fn reply(stream: &UnixStream, reply: &Reply) {
    let Ok(mut text) = serde_json::to_string(reply) else {
        return;
    };
    text.push('\n');
    let _ = (&*stream).write_all(text.as_bytes());
}
