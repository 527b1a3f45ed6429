//! NBD's wire format (the fixed newstyle handshake and the transmission
//! phase with structured replies), as the protocol document in the NBD
//! project defines it. Everything the server sends is checked against
//! what was asked before it is used: lengths are capped before anything
//! is allocated, replies must answer the request in flight, and data
//! chunks must lie inside the range that was read.

use std::io::{self, Read, Write};

use super::Error;

pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
pub const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

pub const FLAG_FIXED_NEWSTYLE: u16 = 1;
pub const FLAG_NO_ZEROES: u16 = 2;

pub const OPT_ABORT: u32 = 2;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_SET_META_CONTEXT: u32 = 10;

pub const REP_ACK: u32 = 1;
pub const REP_INFO: u32 = 3;
pub const REP_META_CONTEXT: u32 = 4;
const REP_FLAG_ERROR: u32 = 1 << 31;

pub const INFO_EXPORT: u16 = 0;
pub const INFO_BLOCK_SIZE: u16 = 3;

pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_BLOCK_STATUS: u16 = 7;
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;

/// Transmission flags (NBD_FLAG_*, from NBD_INFO_EXPORT).
pub const FLAG_HAS_FLAGS: u16 = 1;
pub const FLAG_READ_ONLY: u16 = 1 << 1;
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
pub const FLAG_SEND_TRIM: u16 = 1 << 5;
pub const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;

pub const REPLY_FLAG_DONE: u16 = 1;
pub const REPLY_TYPE_NONE: u16 = 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
const REPLY_TYPE_ERROR_BIT: u16 = 1 << 15;

/// No option reply, error message or metadata chunk we ask for needs more.
pub const MAX_OPTION_REPLY: u32 = 64 << 10;
/// The largest read we send, and so the largest data a reply may carry.
pub const MAX_READ: u32 = 32 << 20;

pub fn get<const N: usize>(r: &mut impl Read) -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)?;
    Ok(b)
}
pub fn get_u16(r: &mut impl Read) -> io::Result<u16> {
    get::<2>(r).map(u16::from_be_bytes)
}
pub fn get_u32(r: &mut impl Read) -> io::Result<u32> {
    get::<4>(r).map(u32::from_be_bytes)
}
pub fn get_u64(r: &mut impl Read) -> io::Result<u64> {
    get::<8>(r).map(u64::from_be_bytes)
}

/// Reads `len` bytes, `len` already checked against a cap.
pub fn get_vec(r: &mut impl Read, len: u32) -> io::Result<Vec<u8>> {
    let mut v = vec![0u8; len as usize];
    r.read_exact(&mut v)?;
    Ok(v)
}

/// Sends one option with its data.
pub fn send_option(w: &mut impl Write, option: u32, data: &[u8]) -> Result<(), Error> {
    let len = u32::try_from(data.len()).map_err(|_| Error::Invalid("option too long".into()))?;
    let mut m = Vec::with_capacity(16 + data.len());
    m.extend_from_slice(&IHAVEOPT.to_be_bytes());
    m.extend_from_slice(&option.to_be_bytes());
    m.extend_from_slice(&len.to_be_bytes());
    m.extend_from_slice(data);
    w.write_all(&m)?;
    w.flush()?;
    Ok(())
}

/// One reply to an option: its type and data. A server error becomes
/// `Error::Refused` with the server's message.
pub fn option_reply(r: &mut impl Read, option: u32) -> Result<(u32, Vec<u8>), Error> {
    if get_u64(r)? != OPT_REPLY_MAGIC {
        return Err(Error::Protocol("bad option reply magic".into()));
    }
    if get_u32(r)? != option {
        return Err(Error::Protocol("reply to an option not sent".into()));
    }
    let kind = get_u32(r)?;
    let len = get_u32(r)?;
    if len > MAX_OPTION_REPLY {
        return Err(Error::Protocol(format!("option reply of {len} bytes")));
    }
    let data = get_vec(r, len)?;
    if kind & REP_FLAG_ERROR != 0 {
        return Err(Error::Refused {
            code: kind & !REP_FLAG_ERROR,
            message: String::from_utf8_lossy(&data).into_owned(),
        });
    }
    Ok((kind, data))
}

/// A name as options carry one: 32-bit length, then the bytes.
pub fn put_name(out: &mut Vec<u8>, name: &str) -> Result<(), Error> {
    if name.len() > 4096 {
        return Err(Error::Invalid(format!(
            "name of {} bytes (4096 at most)",
            name.len()
        )));
    }
    out.extend_from_slice(&(name.len() as u32).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    Ok(())
}

/// A transmission request without payload (all but writes).
pub fn send_request(
    w: &mut impl Write,
    flags: u16,
    kind: u16,
    handle: u64,
    offset: u64,
    len: u32,
) -> io::Result<()> {
    let mut m = [0u8; 28];
    m[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    m[4..6].copy_from_slice(&flags.to_be_bytes());
    m[6..8].copy_from_slice(&kind.to_be_bytes());
    m[8..16].copy_from_slice(&handle.to_be_bytes());
    m[16..24].copy_from_slice(&offset.to_be_bytes());
    m[24..28].copy_from_slice(&len.to_be_bytes());
    w.write_all(&m)?;
    w.flush()
}

/// A write request and its payload, in one send when small.
pub fn send_write(w: &mut impl Write, handle: u64, offset: u64, data: &[u8]) -> io::Result<()> {
    let len = u32::try_from(data.len()).map_err(io::Error::other)?;
    let mut m = Vec::with_capacity(28 + data.len().min(64 << 10));
    m.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
    m.extend_from_slice(&0u16.to_be_bytes());
    m.extend_from_slice(&CMD_WRITE.to_be_bytes());
    m.extend_from_slice(&handle.to_be_bytes());
    m.extend_from_slice(&offset.to_be_bytes());
    m.extend_from_slice(&len.to_be_bytes());
    if data.len() <= 64 << 10 {
        m.extend_from_slice(data);
        w.write_all(&m)?;
    } else {
        w.write_all(&m)?;
        w.write_all(data)?;
    }
    w.flush()
}

/// The head of a reply: simple (error code) or one structured chunk.
pub enum ReplyHead {
    Simple { error: u32 },
    Chunk { flags: u16, kind: u16, len: u32 },
}

pub fn reply_head(r: &mut impl Read, handle: u64) -> Result<ReplyHead, Error> {
    let (got, head) = any_reply_head(r)?;
    check_handle(got, handle)?;
    Ok(head)
}

/// A reply's head and the request (handle) it answers, whichever it is.
pub fn any_reply_head(r: &mut impl Read) -> Result<(u64, ReplyHead), Error> {
    let magic = get_u32(r)?;
    match magic {
        SIMPLE_REPLY_MAGIC => {
            let error = get_u32(r)?;
            let handle = get_u64(r)?;
            Ok((handle, ReplyHead::Simple { error }))
        }
        STRUCTURED_REPLY_MAGIC => {
            let flags = get_u16(r)?;
            let kind = get_u16(r)?;
            let handle = get_u64(r)?;
            let len = get_u32(r)?;
            Ok((handle, ReplyHead::Chunk { flags, kind, len }))
        }
        m => Err(Error::Protocol(format!("bad reply magic {m:#x}"))),
    }
}

fn check_handle(got: u64, want: u64) -> Result<(), Error> {
    if got == want {
        Ok(())
    } else {
        Err(Error::Protocol(format!(
            "reply for request {got}, while {want} is the one in flight"
        )))
    }
}

/// An error chunk's payload: the errno the server sent, with its message.
pub fn error_chunk(kind: u16, data: &[u8]) -> Error {
    if kind & REPLY_TYPE_ERROR_BIT == 0 {
        return Error::Protocol(format!("unexpected reply chunk type {kind}"));
    }
    let code = data
        .get(..4)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let msg_len = data
        .get(4..6)
        .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
    let message = data
        .get(6..6 + msg_len)
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .unwrap_or_default();
    server_error(code, &message)
}

/// An NBD error code as the io::Error it stands for (the protocol's
/// values are Linux's errno numbers for the ones it defines).
pub fn server_error(code: u32, message: &str) -> Error {
    let errno = match code {
        1 | 5 | 12 | 22 | 28 | 75 | 95 | 108 => code as i32,
        _ => libc::EIO,
    };
    let e = io::Error::from_raw_os_error(errno);
    if message.is_empty() {
        Error::Server(e)
    } else {
        // strerror's words, then what the server said.
        let text = e.to_string();
        let text = text.split(" (os error").next().unwrap_or_default();
        Error::Server(io::Error::new(e.kind(), format!("{text}: {message}")))
    }
}
