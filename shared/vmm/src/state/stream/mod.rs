//! The live-migration stream: a header, then records, each with its kind,
//! length and CRC-32. The source sends `hello` (the spec and what the
//! guest was given of the host's CPU), then guest memory as pages and
//! zeroed ranges in rounds (disk ranges too, with storage migration),
//! then the machine's state and `end`. Every record is checked before it
//! is used, and its length is bounded, so a damaged or hostile stream
//! fails with one error rather than an allocation or a wrong page.
//! The replies that go the other way are JSON lines ([`Reply`]).

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub const MAGIC: &[u8; 8] = b"VMTMIGR\n";
pub const VERSION: u32 = 1;
/// The largest record: a run of pages (or a disk range) of 4 MiB, or the
/// state (which holds every MSR of every vCPU: well under this).
pub const MAX_RECORD: u64 = 8 << 20;
const PAGE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum Kind {
    Hello = 1,
    Pages = 2,
    Zeroes = 3,
    State = 4,
    End = 5,
    Disk = 6,
    Commit = 7,
    DiskZeroes = 8,
}

impl Kind {
    fn from_u32(k: u32) -> Option<Self> {
        Some(match k {
            1 => Self::Hello,
            2 => Self::Pages,
            3 => Self::Zeroes,
            4 => Self::State,
            5 => Self::End,
            6 => Self::Disk,
            7 => Self::Commit,
            8 => Self::DiskZeroes,
            _ => return None,
        })
    }
}

/// The first record: what the destination needs before any page moves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// The VM's spec (JSON), whose host-local parts the destination may
    /// replace.
    pub spec: serde_json::Value,
    /// The CPUID leaves the guest was given (vCPU 0's), so the destination
    /// checks its host offers every feature before anything moves.
    pub cpuid: Vec<CpuidLeaf>,
    /// Every disk of the spec, in its order (disk records name them by
    /// their index here).
    #[serde(default)]
    pub disks: Vec<HelloDisk>,
}

/// A disk as the source has it, so the destination can check its own
/// image before anything moves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HelloDisk {
    pub id: String,
    /// The size the guest sees, in bytes.
    pub size: u64,
    /// Its contents follow in the stream (storage migration); otherwise
    /// the destination opens the same image on shared storage.
    #[serde(default)]
    pub copy: bool,
    /// Where the source's image and its backing files live, so that a
    /// destination on the same host refuses to copy a disk onto them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// Files by identity: the host's boot id, then (device, inode) pairs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    pub boot_id: String,
    pub files: Vec<(u64, u64)>,
}

/// One CPUID leaf as the guest sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuidLeaf {
    pub function: u32,
    pub index: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// The last record: totals the destination checks against what it got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct End {
    pub page_records: u64,
    pub rounds: u32,
    /// Disk and disk-zeroes records (storage migration).
    #[serde(default)]
    pub disk_records: u64,
}

/// A record as read.
#[derive(Debug)]
pub enum Record {
    Hello(Box<Hello>),
    /// Whole pages from `gpa` on.
    Pages {
        gpa: u64,
        data: Vec<u8>,
    },
    /// Whole pages from `gpa` on, read straight into the caller's memory
    /// ([`Reader::next_record_into`]).
    PagesPlaced {
        gpa: u64,
        len: u64,
    },
    /// `pages` pages from `gpa` on read as zero.
    Zeroes {
        gpa: u64,
        pages: u64,
    },
    /// The machine's state (JSON, `state::MachineState`).
    State(Vec<u8>),
    End(End),
    /// Bytes of disk `disk` (an index into `Hello::disks`) at `offset`.
    Disk {
        disk: u32,
        offset: u64,
        data: Vec<u8>,
    },
    /// `len` bytes of disk `disk` from `offset` on read as zero.
    DiskZeroes {
        disk: u32,
        offset: u64,
        len: u64,
    },
    /// After the destination's `running`: the source has stopped for
    /// good, so the guest may run there. Without it the destination
    /// discards its VM, and there are never two running copies.
    Commit,
}

/// What the destination answers, one JSON line each: `ready` after the
/// hello (or `error`), `running` once the machine is built there (paused
/// until the source's commit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "reply", deny_unknown_fields)]
pub enum Reply {
    Ready,
    Running,
    Error { error: String },
}

impl Reply {
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        let mut line = serde_json::to_vec(self).map_err(io::Error::other)?;
        line.push(b'\n');
        w.write_all(&line)?;
        w.flush()
    }

    /// Reads one reply line (at most 4 KiB).
    pub fn read(r: &mut impl Read) -> Result<Self> {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        loop {
            match r.read(&mut b) {
                Ok(0) => return Err(Error::Stream("the other side closed the connection".into())),
                Ok(_) if b[0] == b'\n' => break,
                Ok(_) if line.len() >= 4096 => {
                    return Err(Error::Stream("a reply line longer than 4 KiB".into()))
                }
                Ok(_) => line.push(b[0]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("reading the reply")(e)),
            }
        }
        serde_json::from_slice(&line).map_err(|e| Error::Stream(format!("a bad reply: {e}")))
    }
}

/// Writes a stream; counts what it sent. Each record is a 16-byte head
/// (kind, CRC-32 of kind, length and payload, length) and its payload.
#[derive(Debug)]
pub struct Writer<W: Write> {
    w: W,
    pub bytes: u64,
}

impl<W: Write> Writer<W> {
    /// Starts a stream with its header.
    pub fn new(mut w: W) -> io::Result<Self> {
        let mut h = MAGIC.to_vec();
        h.extend_from_slice(&VERSION.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        w.write_all(&h)?;
        Ok(Self { w, bytes: 16 })
    }

    fn record(&mut self, kind: Kind, parts: &[&[u8]]) -> io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut head = [0u8; 16];
        head[0..4].copy_from_slice(&(kind as u32).to_le_bytes());
        head[8..16].copy_from_slice(&(len as u64).to_le_bytes());
        let crc = record_crc(&head, parts);
        head[4..8].copy_from_slice(&crc.to_le_bytes());
        self.w.write_all(&head)?;
        for p in parts {
            self.w.write_all(p)?;
        }
        self.bytes += 16 + len as u64;
        Ok(())
    }

    pub fn hello(&mut self, h: &Hello) -> io::Result<()> {
        let json = serde_json::to_vec(h).map_err(io::Error::other)?;
        self.record(Kind::Hello, &[&json])
    }

    /// `data` is whole pages, at most [`MAX_RECORD`] - 8 bytes.
    pub fn pages(&mut self, gpa: u64, data: &[u8]) -> io::Result<()> {
        self.record(Kind::Pages, &[&gpa.to_le_bytes(), data])
    }

    pub fn zeroes(&mut self, gpa: u64, pages: u64) -> io::Result<()> {
        self.record(Kind::Zeroes, &[&gpa.to_le_bytes(), &pages.to_le_bytes()])
    }

    pub fn disk(&mut self, disk: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        self.record(
            Kind::Disk,
            &[&disk.to_le_bytes(), &offset.to_le_bytes(), data],
        )
    }

    pub fn disk_zeroes(&mut self, disk: u32, offset: u64, len: u64) -> io::Result<()> {
        self.record(
            Kind::DiskZeroes,
            &[
                &disk.to_le_bytes(),
                &offset.to_le_bytes(),
                &len.to_le_bytes(),
            ],
        )
    }

    pub fn state(&mut self, json: &[u8]) -> io::Result<()> {
        self.record(Kind::State, &[json])
    }

    pub fn end(&mut self, e: &End) -> io::Result<()> {
        let json = serde_json::to_vec(e).map_err(io::Error::other)?;
        self.record(Kind::End, &[&json])?;
        self.w.flush()
    }

    pub fn commit(&mut self) -> io::Result<()> {
        self.record(Kind::Commit, &[])?;
        self.w.flush()
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.w
    }
}

/// Reads a stream, checking each record.
#[derive(Debug)]
pub struct Reader<R: Read> {
    r: R,
    pub bytes: u64,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Stream(msg.into())
}

impl<R: Read> Reader<R> {
    /// Checks the header.
    pub fn new(mut r: R) -> Result<Self> {
        let mut h = [0u8; 16];
        read_all(&mut r, &mut h, "the header")?;
        if &h[0..8] != MAGIC {
            return Err(bad("not a vmtools migration stream"));
        }
        let v = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
        if v > VERSION {
            return Err(Error::StreamVersion(v));
        }
        if v == 0 {
            return Err(bad("version 0"));
        }
        Ok(Self { r, bytes: 16 })
    }

    /// Goes on reading a stream whose header another reader checked
    /// (the foreground start read the hello; the VM process reads on).
    pub fn resume(r: R) -> Self {
        Self { r, bytes: 16 }
    }

    pub fn next_record(&mut self) -> Result<Record> {
        self.next_record_into(&mut |_, _| Ok(None))
    }

    /// As [`Reader::next_record`], but a page record's data goes straight
    /// where `place(gpa, len)` says (guest memory on the destination),
    /// saving two copies; `None` reads it into a vector as usual. The
    /// checksum is checked after the data has landed: on a mismatch the
    /// caller must discard what it placed.
    pub fn next_record_into<'m>(
        &mut self,
        place: &mut dyn FnMut(u64, usize) -> Result<Option<&'m mut [u8]>>,
    ) -> Result<Record> {
        let mut head = [0u8; 16];
        read_all(&mut self.r, &mut head, "a record")?;
        let kind = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
        let len = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
        let kind =
            Kind::from_u32(kind).ok_or_else(|| bad(format!("unknown record kind {kind}")))?;
        if len > MAX_RECORD {
            return Err(bad(format!(
                "a record of {len} bytes (at most {MAX_RECORD})"
            )));
        }
        if kind == Kind::Pages && len > 8 {
            let mut at = [0u8; 8];
            read_all(&mut self.r, &mut at, "a record's payload")?;
            let gpa = u64::from_le_bytes(at);
            let n = (len - 8) as usize;
            if n % PAGE != 0 || gpa % PAGE as u64 != 0 {
                return Err(bad("a page record that is not whole, aligned pages"));
            }
            if let Some(dst) = place(gpa, n)? {
                if dst.len() != n {
                    return Err(bad("a page record's place has the wrong size"));
                }
                read_all(&mut self.r, dst, "a record's payload")?;
                if record_crc(&head, &[&at, dst]) != crc {
                    return Err(bad(format!("a {kind:?} record fails its checksum")));
                }
                self.bytes += 16 + len;
                return Ok(Record::PagesPlaced { gpa, len: n as u64 });
            }
            let mut payload = vec![0u8; len as usize];
            payload[..8].copy_from_slice(&at);
            read_all(&mut self.r, &mut payload[8..], "a record's payload")?;
            return self.finish(kind, crc, &head, payload);
        }
        let mut payload = vec![0u8; len as usize];
        read_all(&mut self.r, &mut payload, "a record's payload")?;
        self.finish(kind, crc, &head, payload)
    }

    /// Checks a whole record's payload and makes it a [`Record`].
    fn finish(
        &mut self,
        kind: Kind,
        crc: u32,
        head: &[u8; 16],
        mut payload: Vec<u8>,
    ) -> Result<Record> {
        let len = payload.len() as u64;
        if record_crc(head, &[&payload]) != crc {
            return Err(bad(format!("a {kind:?} record fails its checksum")));
        }
        self.bytes += 16 + len;
        let u64_at = |p: &[u8], at: usize| {
            p.get(at..at + 8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                .ok_or_else(|| bad(format!("a short {kind:?} record")))
        };
        Ok(match kind {
            Kind::Hello => Record::Hello(Box::new(
                serde_json::from_slice(&payload).map_err(|e| bad(format!("hello: {e}")))?,
            )),
            Kind::Pages => {
                let gpa = u64_at(&payload, 0)?;
                let data = payload.split_off(8);
                if data.is_empty() || data.len() % PAGE != 0 || gpa % PAGE as u64 != 0 {
                    return Err(bad("a page record that is not whole, aligned pages"));
                }
                Record::Pages { gpa, data }
            }
            Kind::Zeroes => {
                if payload.len() != 16 {
                    return Err(bad("a zeroes record of the wrong size"));
                }
                let (gpa, pages) = (u64_at(&payload, 0)?, u64_at(&payload, 8)?);
                if gpa % PAGE as u64 != 0 {
                    return Err(bad("a zeroes record that is not page-aligned"));
                }
                Record::Zeroes { gpa, pages }
            }
            Kind::State => Record::State(payload),
            Kind::Commit if payload.is_empty() => Record::Commit,
            Kind::Commit => return Err(bad("a commit with a payload")),
            Kind::End => {
                Record::End(serde_json::from_slice(&payload).map_err(|e| bad(format!("end: {e}")))?)
            }
            Kind::Disk => {
                if payload.len() < 12 {
                    return Err(bad("a short disk record"));
                }
                let disk = u32::from_le_bytes(payload[0..4].try_into().expect("4 bytes"));
                let offset = u64_at(&payload, 4)?;
                Record::Disk {
                    disk,
                    offset,
                    data: payload.split_off(12),
                }
            }
            Kind::DiskZeroes => {
                if payload.len() != 20 {
                    return Err(bad("a disk zeroes record of the wrong size"));
                }
                Record::DiskZeroes {
                    disk: u32::from_le_bytes(payload[0..4].try_into().expect("4 bytes")),
                    offset: u64_at(&payload, 4)?,
                    len: u64_at(&payload, 12)?,
                }
            }
        })
    }
}

/// A record's checksum: over its kind and length (the head's bytes 0..4
/// and 8..16: a flipped kind must not turn one record into another) and
/// its payload, in parts.
fn record_crc(head: &[u8; 16], payload: &[&[u8]]) -> u32 {
    let mut sum = crc32fast::Hasher::new();
    sum.update(&head[0..4]);
    sum.update(&head[8..16]);
    for p in payload {
        sum.update(p);
    }
    sum.finalize()
}

fn read_all(r: &mut impl Read, buf: &mut [u8], what: &str) -> Result<()> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            bad(format!("cut short in {what}"))
        } else {
            Error::io(format!("reading {what}"))(e)
        }
    })
}

#[cfg(test)]
mod tests;
