//! A fake NBD server for the hostile-server tests: a fixed newstyle
//! handshake with structured replies and base:allocation, then replies
//! that break the protocol (or fail) in one chosen way.

use std::io::{Read, Write};

/// What a fake server does once the client asks for the export or reads.
#[derive(Clone, Copy, Debug)]
pub enum Misdeed {
    /// Serves 1 MiB of 0x5a, correctly (the control case, over TCP).
    Nothing,
    BadMagic,
    OldStyle,
    /// An option reply claiming 1 GiB of data.
    HugeOptionReply,
    /// An export larger than a file offset can be.
    HugeExport,
    /// A data chunk for bytes before the range read.
    ChunkOutsideRead,
    /// A reply for another request.
    WrongHandle,
    /// A block-status extent of no length.
    EmptyExtent,
    /// A read reply that covers half of what was read.
    ShortRead,
    /// Hangs up in the middle of a reply.
    HangUp,
    /// Answers EIO to reads of this sector (and only those).
    BadSector(u64),
    /// Answers EIO to block status of ranges that hold this offset.
    BadStatus(u64),
    /// Not a misdeed: answers large reads two at a time, the later first,
    /// each in two chunks interleaved with the other's (as a server with
    /// several requests in flight may), the bytes telling their sector.
    Reordered,
    /// Not a misdeed: a writable export (flush and write-zeroes too) that
    /// keeps what is written; reads still answer 0x5a.
    Writable,
    /// Writable, but every write gets an EIO error chunk.
    WriteFails,
    /// Writable, but a write is answered with a data chunk.
    DataForWrite,
    /// Writable, but a write's reply names another request.
    WrongWriteHandle,
    /// Writable, but hangs up on the first write.
    HangUpOnWrite,
}

impl Misdeed {
    fn writable(self) -> bool {
        matches!(
            self,
            Self::Writable
                | Self::WriteFails
                | Self::DataForWrite
                | Self::WrongWriteHandle
                | Self::HangUpOnWrite
        )
    }
}

/// What `Misdeed::Reordered` serves at `from`: each byte its sector's
/// number (low byte).
pub fn sector_pattern(from: u64, len: u32) -> Vec<u8> {
    (0..u64::from(len))
        .map(|i| ((from + i) / 512) as u8)
        .collect()
}

pub const EXPORT: u64 = 1 << 20;

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes(b[i..i + 4].try_into().unwrap())
}

fn option_reply(s: &mut impl Write, opt: u32, kind: u32, data: &[u8]) {
    let mut m = 0x0003_e889_0455_65a9u64.to_be_bytes().to_vec();
    m.extend_from_slice(&opt.to_be_bytes());
    m.extend_from_slice(&kind.to_be_bytes());
    m.extend_from_slice(&(data.len() as u32).to_be_bytes());
    m.extend_from_slice(data);
    let _ = s.write_all(&m);
}

/// An error chunk's payload: EIO, with a message.
fn eio() -> Vec<u8> {
    let mut p = 5u32.to_be_bytes().to_vec();
    p.extend_from_slice(&4u16.to_be_bytes());
    p.extend_from_slice(b"bad!");
    p
}

fn chunk(flags: u16, kind: u16, handle: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut m = 0x668e_33efu32.to_be_bytes().to_vec();
    m.extend_from_slice(&flags.to_be_bytes());
    m.extend_from_slice(&kind.to_be_bytes());
    m.extend_from_slice(handle);
    m.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    m.extend_from_slice(payload);
    m
}

/// One connection of the fake server: a fixed newstyle handshake with
/// structured replies and base:allocation, then `bad` where it applies.
/// Returns the export's bytes at the end: 0x5a, as reads answer, where
/// nothing was written.
pub fn serve(mut s: impl Read + Write, bad: Misdeed) -> Vec<u8> {
    let mut disk = vec![0x5a; EXPORT as usize];
    let mut hello = 0x4e42_444d_4147_4943u64.to_be_bytes().to_vec();
    match bad {
        Misdeed::BadMagic => hello = b"NOTNBD!!".to_vec(),
        Misdeed::OldStyle => hello.extend_from_slice(&0x0000_4202_8186_1253_u64.to_be_bytes()),
        _ => hello.extend_from_slice(&0x4948_4156_454f_5054u64.to_be_bytes()),
    }
    hello.extend_from_slice(&3u16.to_be_bytes());
    if s.write_all(&hello).is_err() {
        return disk;
    }
    let mut flags = [0u8; 4];
    if s.read_exact(&mut flags).is_err() {
        return disk;
    }
    loop {
        let mut head = [0u8; 16];
        if s.read_exact(&mut head).is_err() {
            return disk;
        }
        let opt = u32_at(&head, 8);
        let mut data = vec![0u8; u32_at(&head, 12) as usize];
        if s.read_exact(&mut data).is_err() {
            return disk;
        }
        match opt {
            8 => option_reply(&mut s, opt, 1, &[]),
            10 => {
                let mut ctx = 1u32.to_be_bytes().to_vec();
                ctx.extend_from_slice(b"base:allocation");
                option_reply(&mut s, opt, 4, &ctx);
                option_reply(&mut s, opt, 1, &[]);
            }
            7 => {
                if let Misdeed::HugeOptionReply = bad {
                    let mut m = 0x0003_e889_0455_65a9u64.to_be_bytes().to_vec();
                    m.extend_from_slice(&7u32.to_be_bytes());
                    m.extend_from_slice(&3u32.to_be_bytes());
                    m.extend_from_slice(&(1u32 << 30).to_be_bytes());
                    let _ = s.write_all(&m);
                    return disk;
                }
                let size = match bad {
                    Misdeed::HugeExport => u64::MAX - 4095,
                    _ => EXPORT,
                };
                // HAS_FLAGS with READ_ONLY, or with SEND_FLUSH and
                // SEND_WRITE_ZEROES.
                let flags: u16 = if bad.writable() { 1 | 4 | 64 } else { 1 | 2 };
                let mut info = 0u16.to_be_bytes().to_vec();
                info.extend_from_slice(&size.to_be_bytes());
                info.extend_from_slice(&flags.to_be_bytes());
                option_reply(&mut s, opt, 3, &info);
                option_reply(&mut s, opt, 1, &[]);
                break;
            }
            _ => option_reply(&mut s, opt, 0x8000_0001, &[]),
        }
    }
    // A read held back by `Reordered` until the next one comes.
    let mut held: Option<(Vec<u8>, u64, u32)> = None;
    loop {
        let mut req = [0u8; 28];
        if s.read_exact(&mut req).is_err() {
            return disk;
        }
        let kind = u16::from_be_bytes([req[6], req[7]]);
        let mut handle = req[8..16].to_vec();
        let from = u64::from_be_bytes(req[16..24].try_into().unwrap());
        let len = u32_at(&req, 24);
        if kind == 1 {
            let mut data = vec![0u8; len as usize];
            if s.read_exact(&mut data).is_err() {
                return disk;
            }
            if let Some(at) = disk.get_mut(from as usize..from as usize + data.len()) {
                at.copy_from_slice(&data);
            }
        }
        // Only reads that go out several at a time (large ones) are held:
        // a lone small read would wait for a partner forever.
        if let (0, Misdeed::Reordered, true) = (kind, bad, len >= 128 << 10) {
            let Some((h0, f0, l0)) = held.take() else {
                held = Some((handle, from, len));
                continue;
            };
            // Halves: (handle, offset, bytes, last).
            let halves = |h: &[u8], f: u64, l: u32| {
                let a = l / 2;
                let mut first = f.to_be_bytes().to_vec();
                first.extend(sector_pattern(f, a));
                let mut second = (f + u64::from(a)).to_be_bytes().to_vec();
                second.extend(sector_pattern(f + u64::from(a), l - a));
                (chunk(0, 1, h, &first), chunk(1, 1, h, &second))
            };
            let (a1, a2) = halves(&h0, f0, l0);
            let (b1, b2) = halves(&handle, from, len);
            for c in [b1, a1, a2, b2] {
                if s.write_all(&c).is_err() {
                    return disk;
                }
            }
            continue;
        }
        let reply = match (kind, bad) {
            (0, Misdeed::ChunkOutsideRead) => {
                let mut p = from.wrapping_sub(512).to_be_bytes().to_vec();
                p.extend(vec![0x5a; len as usize]);
                chunk(1, 1, &handle, &p)
            }
            (0, Misdeed::ShortRead) => {
                let mut p = from.to_be_bytes().to_vec();
                p.extend(vec![0x5a; len as usize / 2]);
                chunk(1, 1, &handle, &p)
            }
            (0, Misdeed::BadSector(bad))
                if from / 512 <= bad && bad < (from + u64::from(len)).div_ceil(512) =>
            {
                chunk(1, 0x8001, &handle, &eio())
            }
            (7, Misdeed::BadStatus(bad)) if from <= bad && bad < from + u64::from(len) => {
                chunk(1, 0x8001, &handle, &eio())
            }
            (0, Misdeed::HangUp) => {
                let mut p = from.to_be_bytes().to_vec();
                p.extend(vec![0x5a; len as usize]);
                let c = chunk(1, 1, &handle, &p);
                let _ = s.write_all(&c[..c.len() / 2]);
                return disk;
            }
            (0, m) => {
                if let Misdeed::WrongHandle = m {
                    handle[0] ^= 0xff;
                }
                let mut p = from.to_be_bytes().to_vec();
                p.extend(vec![0x5a; len as usize]);
                chunk(1, 1, &handle, &p)
            }
            (7, m) => {
                let mut p = 1u32.to_be_bytes().to_vec();
                let n = if let Misdeed::EmptyExtent = m { 0 } else { len };
                p.extend_from_slice(&n.to_be_bytes());
                p.extend_from_slice(&0u32.to_be_bytes());
                chunk(1, 5, &handle, &p)
            }
            (1, Misdeed::WriteFails) => chunk(1, 0x8001, &handle, &eio()),
            (1, Misdeed::DataForWrite) => {
                let mut p = from.to_be_bytes().to_vec();
                p.extend(vec![0x5a; 512]);
                chunk(1, 1, &handle, &p)
            }
            (1, Misdeed::HangUpOnWrite) => return disk,
            (1 | 3 | 6, m) if m.writable() => {
                if kind == 6 {
                    if let Some(at) = disk.get_mut(from as usize..(from + u64::from(len)) as usize)
                    {
                        at.fill(0);
                    }
                }
                if let Misdeed::WrongWriteHandle = m {
                    handle[0] ^= 0xff;
                }
                let mut simple = 0x6744_6698u32.to_be_bytes().to_vec();
                simple.extend_from_slice(&0u32.to_be_bytes());
                simple.extend_from_slice(&handle);
                simple
            }
            _ => return disk,
        };
        if s.write_all(&reply).is_err() {
            return disk;
        }
    }
}
