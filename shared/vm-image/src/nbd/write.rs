//! Writing to an export: data, zeroes, trims and flushes, each checked
//! against what the export said it accepts. As reads, a large write goes
//! out as several requests in flight; their replies (simple, or
//! structured chunks carrying no data) may come in any order and are
//! matched to their requests by handle.

use super::wire::{self, get_vec, ReplyHead};
use super::{Client, Conn, Error};

/// A large write is sent as requests of this size, at most
/// [`WRITES_IN_FLIGHT`] of them unanswered at once.
const WRITE_PART: usize = 256 << 10;
const WRITES_IN_FLIGHT: usize = 4;
/// Zeroes sent as data, where the export takes no NBD_CMD_WRITE_ZEROES.
static ZEROES: [u8; WRITE_PART] = [0; WRITE_PART];

/// One request of a batch: no payload, or the data a write carries.
struct Request<'a> {
    kind: u16,
    flags: u16,
    offset: u64,
    len: u32,
    data: Option<&'a [u8]>,
}

impl Client {
    /// The export takes no writes (NBD_FLAG_READ_ONLY).
    pub fn read_only(&self) -> bool {
        self.flags & wire::FLAG_READ_ONLY != 0
    }

    /// Writes `buf` at `offset`, all inside the export.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), Error> {
        self.writable(offset, buf.len() as u64)?;
        let part = (self.max_request as usize).min(WRITE_PART);
        let mut at = offset;
        let requests = buf.chunks(part).map(|b| {
            let r = Request {
                kind: wire::CMD_WRITE,
                flags: 0,
                offset: at,
                len: b.len() as u32,
                data: Some(b),
            };
            at += b.len() as u64;
            r
        });
        let mut conn = self.lock()?;
        let r = conn.in_flight(requests);
        conn.settle(r)
    }

    /// Makes `[offset, offset + len)` read as zeroes. The server may leave
    /// holes there, as qemu-img lets it; an export that takes no
    /// NBD_CMD_WRITE_ZEROES gets zeroes as data.
    pub fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), Error> {
        self.writable(offset, len)?;
        if self.flags & wire::FLAG_SEND_WRITE_ZEROES == 0 {
            let mut at = offset;
            while at < offset + len {
                let n = (offset + len - at).min(WRITE_PART as u64) as usize;
                self.write_at(&ZEROES[..n], at)?;
                at += n as u64;
            }
            return Ok(());
        }
        self.ranged(wire::CMD_WRITE_ZEROES, 0, offset, len)
    }

    /// Tells the server `[offset, offset + len)` is no longer needed; its
    /// content is then undefined. Does nothing where the export takes no
    /// NBD_CMD_TRIM.
    pub fn trim(&self, offset: u64, len: u64) -> Result<(), Error> {
        self.writable(offset, len)?;
        if self.flags & wire::FLAG_SEND_TRIM == 0 {
            return Ok(());
        }
        self.ranged(wire::CMD_TRIM, 0, offset, len)
    }

    /// Asks the server to make every write it answered durable. Does
    /// nothing where the export takes no NBD_CMD_FLUSH (it says then that
    /// it has no cache to flush).
    pub fn flush(&self) -> Result<(), Error> {
        if self.flags & wire::FLAG_SEND_FLUSH == 0 {
            return Ok(());
        }
        let one = Request {
            kind: wire::CMD_FLUSH,
            flags: 0,
            offset: 0,
            len: 0,
            data: None,
        };
        let mut conn = self.lock()?;
        let r = conn.in_flight(std::iter::once(one));
        conn.settle(r)
    }

    /// Refuses a write into a read-only export or past its end.
    fn writable(&self, offset: u64, len: u64) -> Result<(), Error> {
        if self.read_only() {
            return Err(Error::Invalid("the NBD export is read-only".into()));
        }
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(Error::Invalid("write past the end of the export".into()));
        }
        Ok(())
    }

    /// A request without payload over a range, split where the range is
    /// longer than one request may be (kept a multiple of the server's
    /// block size).
    fn ranged(&self, kind: u16, flags: u16, offset: u64, len: u64) -> Result<(), Error> {
        let cap = u64::from(self.max_request - self.max_request % self.min_block).max(1);
        let mut at = offset;
        let requests = std::iter::from_fn(|| {
            (at < offset + len).then(|| {
                let n = (offset + len - at).min(cap);
                let r = Request {
                    kind,
                    flags,
                    offset: at,
                    len: n as u32,
                    data: None,
                };
                at += n;
                r
            })
        });
        let mut conn = self.lock()?;
        let r = conn.in_flight(requests);
        conn.settle(r)
    }
}

impl Conn {
    /// Sends `requests` with at most [`WRITES_IN_FLIGHT`] unanswered, and
    /// reads every reply. A request the server failed cleanly still has
    /// the others answered, so the connection stays in step; the first
    /// such failure, in the order sent, is the error.
    fn in_flight<'a>(&mut self, requests: impl Iterator<Item = Request<'a>>) -> Result<(), Error> {
        // (handle, failure) per request still unanswered, in the order sent.
        let mut open: Vec<(u64, Option<Error>)> = Vec::new();
        let mut first_failure: Option<(u64, Error)> = None;
        let mut requests = requests;
        loop {
            // After a failure nothing more is sent: the write has failed.
            let failed = first_failure.is_some() || open.iter().any(|(_, f)| f.is_some());
            while !failed && open.len() < WRITES_IN_FLIGHT {
                let Some(r) = requests.next() else { break };
                let handle = self.next_handle;
                self.next_handle += 1;
                match r.data {
                    Some(d) => wire::send_write(&mut self.stream, handle, r.offset, d)?,
                    None => {
                        wire::send_request(
                            &mut self.stream,
                            r.flags,
                            r.kind,
                            handle,
                            r.offset,
                            r.len,
                        )?;
                    }
                }
                open.push((handle, None));
            }
            if open.is_empty() {
                break;
            }
            let (handle, head) = wire::any_reply_head(&mut self.stream)?;
            let i = open.iter().position(|(h, _)| *h == handle).ok_or_else(|| {
                Error::Protocol(format!(
                    "reply for request {handle}, which is not in flight"
                ))
            })?;
            let done = match head {
                ReplyHead::Simple { error: 0 } => true,
                ReplyHead::Simple { error } => {
                    open[i].1.get_or_insert(wire::server_error(error, ""));
                    true
                }
                ReplyHead::Chunk { flags, kind, len } => {
                    match kind {
                        wire::REPLY_TYPE_NONE if len == 0 => {}
                        k if k & 0x8000 != 0 && (6..=wire::MAX_OPTION_REPLY).contains(&len) => {
                            let data = get_vec(&mut self.stream, len)?;
                            open[i].1.get_or_insert(wire::error_chunk(k, &data));
                        }
                        k => {
                            return Err(Error::Protocol(format!(
                                "reply chunk of type {k} and {len} bytes to a request without data"
                            )))
                        }
                    }
                    flags & wire::REPLY_FLAG_DONE != 0
                }
            };
            if done {
                let (h, failure) = open.remove(i);
                if let Some(e) = failure {
                    if first_failure.as_ref().is_none_or(|(fh, _)| h < *fh) {
                        first_failure = Some((h, e));
                    }
                }
            }
        }
        match first_failure {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }
}
