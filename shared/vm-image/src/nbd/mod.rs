//! An NBD client: what vm-img needs to read and write an export that
//! qemu-nbd, qemu-storage-daemon or nbdkit serves (`info`, `map`,
//! `compare`, `check`, `convert` from and into it). One connection; a
//! large read or write goes out as several requests in flight at once
//! (the server works on the next while this side takes in the last),
//! block status one at a time.
//!
//! The server is not trusted: every length it sends is capped before
//! anything is allocated, a reply must answer a request in flight and
//! stay inside the range that request asked for, and a connection that
//! broke the protocol once is not used again. A server that stops answering fails
//! the request after [`REPLY_TIMEOUT`] instead of hanging the tool.

mod address;
mod handshake;
mod wire;
mod write;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::Duration;

pub use address::{Address, Socket, DEFAULT_PORT};
use handshake::handshake;
use wire::{get_u32, get_u64, get_vec, ReplyHead};

/// A large read is sent as requests of this size, at most
/// [`READS_IN_FLIGHT`] of them unanswered at once.
const READ_PART: usize = 256 << 10;
const READS_IN_FLIGHT: usize = 4;

/// How long one reply may take before the request fails.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection failed (it is not used again).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The server answered a request with an error (the connection stays
    /// usable).
    #[error("{0}")]
    Server(io::Error),
    #[error("NBD protocol error: {0}")]
    Protocol(String),
    /// The server refused an option (NBD_REP_ERR_*), with its message.
    #[error("{}", refused_text(*.code, .message))]
    Refused { code: u32, message: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Invalid(String),
}

fn refused_text(code: u32, message: &str) -> String {
    let what = match code {
        1 => "not supported by the server",
        2 => "refused by the server's policy",
        3 => "invalid",
        5 => "the server requires TLS",
        6 => "Requested export not available",
        7 => "the server is shutting down",
        _ => "refused by the server",
    };
    if message.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {message}")
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io(e) | Error::Server(e) => e,
            other => io::Error::other(other.to_string()),
        }
    }
}

/// What a block-status query says of a range: NBD's `base:allocation`
/// bits (or, with `x-dirty-bitmap`, the chosen context's bits read as
/// those).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub length: u64,
    /// Bit 0 set: a hole (reads as zero, takes no space).
    pub hole: bool,
    /// Bit 1 set: reads as zeroes.
    pub zero: bool,
}

#[derive(Debug)]
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Read for Stream {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Unix(s) => s.read(b),
            Self::Tcp(s) => s.read(b),
        }
    }
}
impl Write for Stream {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Self::Unix(s) => s.write(b),
            Self::Tcp(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Unix(s) => s.flush(),
            Self::Tcp(s) => s.flush(),
        }
    }
}

impl Stream {
    fn connect(socket: &Socket) -> io::Result<Self> {
        let s = match socket {
            Socket::Unix(p) => {
                let s = UnixStream::connect(p)?;
                s.set_read_timeout(Some(REPLY_TIMEOUT))?;
                s.set_write_timeout(Some(REPLY_TIMEOUT))?;
                Self::Unix(s)
            }
            Socket::Tcp { host, port } => {
                let s = TcpStream::connect((host.as_str(), *port))?;
                s.set_read_timeout(Some(REPLY_TIMEOUT))?;
                s.set_write_timeout(Some(REPLY_TIMEOUT))?;
                s.set_nodelay(true)?;
                Self::Tcp(s)
            }
        };
        Ok(s)
    }
    fn shutdown(&self) {
        let _ = match self {
            Self::Unix(s) => s.shutdown(Shutdown::Both),
            Self::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }
}

#[derive(Debug)]
struct Conn {
    stream: Stream,
    next_handle: u64,
    /// Set when a reply broke the protocol: the stream's position is
    /// unknown, so nothing more is read from it.
    broken: bool,
}

/// A connected, negotiated export.
#[derive(Debug)]
pub struct Client {
    conn: Mutex<Conn>,
    address: Address,
    size: u64,
    /// The id of the metadata context block status answers with.
    context: Option<u32>,
    /// The server's largest request (our cap where it names none).
    max_request: u32,
    /// The server's smallest request size (1 when it names none).
    min_block: u32,
    /// The export's transmission flags (read-only, what it accepts).
    flags: u16,
}

impl Client {
    /// Connects, negotiates and opens the export.
    pub fn connect(address: &Address) -> Result<Self, Error> {
        let mut stream = Stream::connect(&address.socket)?;
        let (context, info) = match handshake(&mut stream, address) {
            Ok(v) => v,
            Err(e) => {
                // Tell a server that refused an option that we are going
                // (it logs a broken negotiation otherwise).
                if let Error::Refused { .. } | Error::Unsupported(_) = e {
                    let _ = wire::send_option(&mut stream, wire::OPT_ABORT, &[]);
                }
                return Err(e);
            }
        };
        let max_request = match info.max_block {
            0 => wire::MAX_READ,
            m => m.min(wire::MAX_READ),
        };
        Ok(Self {
            conn: Mutex::new(Conn {
                stream,
                next_handle: 1,
                broken: false,
            }),
            address: address.clone(),
            size: info.size,
            context,
            max_request,
            min_block: info.min_block.max(1),
            flags: info.flags,
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn address(&self) -> &Address {
        &self.address
    }
    /// Reads `buf.len()` bytes at `offset`, all inside the export.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), Error> {
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > self.size)
        {
            return Err(Error::Invalid("read past the end of the export".into()));
        }
        let part = (self.max_request as usize).min(READ_PART);
        let mut conn = self.lock()?;
        let r = conn.read_in_flight(buf, offset, part);
        conn.settle(r)
    }

    /// The status of the range starting at `offset`: one extent, of at
    /// most `max` bytes. Without a context every byte is data.
    pub fn block_status(&self, offset: u64, max: u64) -> Result<Status, Error> {
        if offset >= self.size || max == 0 {
            return Err(Error::Invalid(
                "block status past the end of the export".into(),
            ));
        }
        let max = max.min(self.size - offset);
        let Some(id) = self.context else {
            return Ok(Status {
                length: max,
                hole: false,
                zero: false,
            });
        };
        // A request length stays a multiple of the server's block size.
        let cap = u64::from(u32::MAX - u32::MAX % self.min_block);
        let len = max.min(cap) as u32;
        let mut conn = self.lock()?;
        conn.call(
            |c, handle| c.status_reply(handle, id, len),
            |s, h| {
                wire::send_request(
                    s,
                    wire::CMD_FLAG_REQ_ONE,
                    wire::CMD_BLOCK_STATUS,
                    h,
                    offset,
                    len,
                )
            },
        )
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Conn>, Error> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| Error::Protocol("connection lost by a failed request".into()))?;
        if conn.broken {
            return Err(Error::Protocol(
                "the connection broke on an earlier reply".into(),
            ));
        }
        Ok(conn)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Ok(c) = self.conn.get_mut() {
            if !c.broken {
                let h = c.next_handle;
                let _ = wire::send_request(&mut c.stream, 0, wire::CMD_DISC, h, 0, 0);
            }
            c.stream.shutdown();
        }
    }
}

impl Conn {
    /// Sends one request and reads its whole reply. A protocol error or a
    /// broken stream marks the connection broken; an error the server
    /// reported cleanly (an errno for this request) does not.
    fn call<T>(
        &mut self,
        reply: impl FnOnce(&mut Self, u64) -> Result<T, Error>,
        send: impl FnOnce(&mut Stream, u64) -> io::Result<()>,
    ) -> Result<T, Error> {
        let handle = self.next_handle;
        self.next_handle += 1;
        if let Err(e) = send(&mut self.stream, handle) {
            return self.settle(Err(e.into()));
        }
        let r = reply(self, handle);
        self.settle(r)
    }

    /// A request's outcome: a protocol error or a broken stream marks the
    /// connection broken (a server that hung up is said so); an error the
    /// server reported cleanly leaves it usable.
    fn settle<T>(&mut self, r: Result<T, Error>) -> Result<T, Error> {
        match r {
            Err(Error::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof
                        | io::ErrorKind::BrokenPipe
                        | io::ErrorKind::ConnectionReset
                ) =>
            {
                self.broken = true;
                Err(Error::Protocol("the server closed the connection".into()))
            }
            Err(Error::Protocol(_) | Error::Io(_)) => {
                self.broken = true;
                r
            }
            _ => r,
        }
    }

    /// A read of `buf` at `offset` as requests of `part` bytes, several in
    /// flight; the replies may come in any order and their chunks
    /// interleave, so each is matched to its request by handle. A request
    /// the server failed cleanly still has its reply read to the end (the
    /// others' too), so the connection stays in step; the first such
    /// failure, in disk order, is the error.
    fn read_in_flight(&mut self, buf: &mut [u8], offset: u64, part: usize) -> Result<(), Error> {
        struct Part<'b> {
            handle: u64,
            at: u64,
            buf: &'b mut [u8],
            covered: u64,
            failure: Option<Error>,
            done: bool,
        }
        // Zero first: chunks may leave gaps only on error.
        buf.fill(0);
        let mut parts: Vec<Part<'_>> = Vec::new();
        let mut at = offset;
        for b in buf.chunks_mut(part) {
            let n = b.len() as u64;
            parts.push(Part {
                handle: 0,
                at,
                buf: b,
                covered: 0,
                failure: None,
                done: false,
            });
            at += n;
        }
        let mut sent = 0;
        let mut open = 0;
        loop {
            while sent < parts.len() && open < READS_IN_FLIGHT {
                let p = &mut parts[sent];
                p.handle = self.next_handle;
                self.next_handle += 1;
                wire::send_request(
                    &mut self.stream,
                    0,
                    wire::CMD_READ,
                    p.handle,
                    p.at,
                    p.buf.len() as u32,
                )?;
                sent += 1;
                open += 1;
            }
            if open == 0 {
                break;
            }
            let (handle, head) = wire::any_reply_head(&mut self.stream)?;
            let p = parts[..sent]
                .iter_mut()
                .find(|p| p.handle == handle && !p.done)
                .ok_or_else(|| {
                    Error::Protocol(format!(
                        "reply for request {handle}, which is not in flight"
                    ))
                })?;
            match head {
                ReplyHead::Simple { error: 0 } => {
                    self.stream.read_exact(p.buf)?;
                    p.covered = p.buf.len() as u64;
                    p.done = true;
                }
                ReplyHead::Simple { error } => {
                    p.failure = Some(wire::server_error(error, ""));
                    p.done = true;
                }
                ReplyHead::Chunk { flags, kind, len } => {
                    match Self::read_chunk(&mut self.stream, kind, len, p.at, p.buf) {
                        Ok(n) => p.covered += n,
                        Err(e @ Error::Server(_)) => {
                            p.failure.get_or_insert(e);
                        }
                        Err(e) => return Err(e),
                    }
                    p.done = flags & wire::REPLY_FLAG_DONE != 0;
                }
            }
            if p.done {
                open -= 1;
                if p.failure.is_none() && p.covered != p.buf.len() as u64 {
                    return Err(Error::Protocol(format!(
                        "read reply covered {} of {} bytes",
                        p.covered,
                        p.buf.len()
                    )));
                }
            }
        }
        match parts.into_iter().find_map(|p| p.failure) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// One chunk of a read reply; the bytes it covered.
    fn read_chunk(
        s: &mut Stream,
        kind: u16,
        len: u32,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<u64, Error> {
        let within = |at: u64, n: u64| -> Result<usize, Error> {
            at.checked_sub(offset)
                .filter(|rel| {
                    rel.checked_add(n)
                        .is_some_and(|end| end <= buf.len() as u64)
                })
                .map(|rel| rel as usize)
                .ok_or_else(|| Error::Protocol("reply chunk outside the range read".into()))
        };
        match kind {
            wire::REPLY_TYPE_NONE if len == 0 => Ok(0),
            wire::REPLY_TYPE_OFFSET_DATA if len >= 8 => {
                let at = get_u64(s)?;
                let n = u64::from(len - 8);
                let rel = within(at, n)?;
                s.read_exact(&mut buf[rel..rel + n as usize])?;
                Ok(n)
            }
            wire::REPLY_TYPE_OFFSET_HOLE if len == 12 => {
                let at = get_u64(s)?;
                let n = u64::from(get_u32(s)?);
                let rel = within(at, n)?;
                buf[rel..rel + n as usize].fill(0);
                Ok(n)
            }
            k if k & 0x8000 != 0 && (6..=wire::MAX_OPTION_REPLY).contains(&len) => {
                let data = get_vec(s, len)?;
                Err(wire::error_chunk(k, &data))
            }
            k => Err(Error::Protocol(format!(
                "read reply chunk of type {k} and {len} bytes"
            ))),
        }
    }

    /// The reply to a one-extent block-status request of `len` bytes.
    fn status_reply(&mut self, handle: u64, id: u32, len: u32) -> Result<Status, Error> {
        let mut status = None;
        let mut failure = None;
        loop {
            let ReplyHead::Chunk {
                flags,
                kind,
                len: n,
            } = wire::reply_head(&mut self.stream, handle)?
            else {
                return Err(Error::Protocol("simple reply to block status".into()));
            };
            if n > wire::MAX_OPTION_REPLY {
                return Err(Error::Protocol(format!("block status chunk of {n} bytes")));
            }
            let data = get_vec(&mut self.stream, n)?;
            match kind {
                wire::REPLY_TYPE_BLOCK_STATUS => {
                    if data.len() < 12 || (data.len() - 4) % 8 != 0 {
                        return Err(Error::Protocol("malformed block status chunk".into()));
                    }
                    let be = |i: usize| {
                        u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]])
                    };
                    if be(0) != id || status.is_some() {
                        return Err(Error::Protocol(
                            "block status for a context not asked for".into(),
                        ));
                    }
                    let length = be(4);
                    if length == 0 {
                        return Err(Error::Protocol("block status extent of 0 bytes".into()));
                    }
                    let flags = be(8);
                    status = Some(Status {
                        length: u64::from(length.min(len)),
                        hole: flags & 1 != 0,
                        zero: flags & 2 != 0,
                    });
                }
                wire::REPLY_TYPE_NONE if n == 0 => {}
                k if k & 0x8000 != 0 => {
                    failure.get_or_insert(wire::error_chunk(k, &data));
                }
                k => {
                    return Err(Error::Protocol(format!(
                        "block status reply chunk of type {k}"
                    )))
                }
            }
            if flags & wire::REPLY_FLAG_DONE != 0 {
                break;
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        status.ok_or_else(|| Error::Protocol("block status reply without an extent".into()))
    }
}
