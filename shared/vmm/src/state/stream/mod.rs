//! The live-migration stream: a header, then records, each with its kind,
//! length and CRC-32. The source sends `hello` (the spec and what the
//! guest was given of the host's CPU), then guest memory as pages and
//! zeroed ranges in rounds (disk ranges too, with storage migration),
//! then the machine's state and `end`. Every record is checked before it
//! is used, and its length is bounded, so a damaged or hostile stream
//! fails with one error rather than an allocation or a wrong page.
//!
//! Each page of a page record has a checksum of its own; the record's
//! checksum covers its head, its address and those sums, not the data.
//! The source reads pages while the guest runs and may be writing them,
//! so a page can change between its sum and its send: it arrives torn.
//! Its address is still sure, and the dirty log sends that page again
//! in a later round, so a destination may hold a torn page as owed
//! ([`Record::PagesTorn`]) and refuse the stream only if no whole copy
//! follows (docs/vm-migrate.md, "Pages sent as the guest writes them").
//! The replies that go the other way are JSON lines ([`Reply`]).

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub const MAGIC: &[u8; 8] = b"VMTMIGR\n";
/// Version 2: page records carry a checksum per page.
pub const VERSION: u32 = 2;
/// The largest record: a run of pages (or a disk range) of 4 MiB, or the
/// state (which holds every MSR of every vCPU: well under this).
pub const MAX_RECORD: u64 = 8 << 20;
const PAGE: usize = 4096;
/// A page record's payload is its address, then a CRC-32 per page, then
/// the pages: each page costs this much.
pub(crate) const PAGE_AND_SUM: u64 = PAGE as u64 + 4;

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
    Join = 9,
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
            9 => Self::Join,
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
    /// How many connections carry the migration (docs/vm-migrate.md,
    /// "Several streams"): this one, and `streams - 1` more that each
    /// open with a [`Join`]. Left out when 1, so a one-stream hello reads
    /// as before.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub streams: u32,
    /// What each further stream must show to be taken (random, hex).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
}

fn one() -> u32 {
    1
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if takes a reference
fn is_one(n: &u32) -> bool {
    *n == 1
}

/// The first record of each further stream of a migration: the hello's
/// token, and which stream this is (1 up to `streams - 1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Join {
    pub token: String,
    pub stream: u32,
}

/// Guest memory is cut into chunks of this size, and with several
/// streams every page of chunk `c` travels on stream `c % streams`, in
/// every round, and no page record crosses a chunk: two copies of one
/// page arrive in order, and the threads that write guest memory at the
/// destination never write the same page.
pub const CHUNK: u64 = 1 << 20;

/// A page's own checksum in a page record.
pub fn page_sum(page: &[u8]) -> u32 {
    crc32fast::hash(page)
}

/// The [`page_sum`] of a page of zeroes: a page with any other sum is
/// not zero, so only pages with this one need a look at every byte.
pub fn zero_page_sum() -> u32 {
    static SUM: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *SUM.get_or_init(|| page_sum(&[0u8; PAGE]))
}

/// The stream `[gpa, gpa + len)` must travel on, if it lies in one chunk.
pub fn stream_of(gpa: u64, len: u64, streams: u32) -> Option<u32> {
    let last = gpa.checked_add(len.max(1) - 1)?;
    (gpa / CHUNK == last / CHUNK).then(|| (gpa / CHUNK % u64::from(streams.max(1))) as u32)
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
    /// As `PagesPlaced`, but the pages at `torn` (addresses) failed their
    /// own checksums (the head, address and sums did not): what landed
    /// there is not what the source summed. Only a reader that will see
    /// those pages sent again may go on.
    PagesTorn {
        gpa: u64,
        len: u64,
        torn: Vec<u64>,
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
    /// A further stream's first record.
    Join(Join),
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
    /// A page record's sums, kept between records.
    sums: Vec<u8>,
}

impl<W: Write> Writer<W> {
    /// Starts a stream with its header.
    pub fn new(mut w: W) -> io::Result<Self> {
        let mut h = MAGIC.to_vec();
        h.extend_from_slice(&VERSION.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        w.write_all(&h)?;
        Ok(Self {
            w,
            bytes: 16,
            sums: Vec::new(),
        })
    }

    fn record(&mut self, kind: Kind, parts: &[&[u8]]) -> io::Result<()> {
        self.record_with_body(kind, parts, &[])
    }

    /// A record whose checksum covers `parts` but not `body`, which
    /// follows them (a page record's data, summed apart).
    fn record_with_body(&mut self, kind: Kind, parts: &[&[u8]], body: &[u8]) -> io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum::<usize>() + body.len();
        let mut head = [0u8; 16];
        head[0..4].copy_from_slice(&(kind as u32).to_le_bytes());
        head[8..16].copy_from_slice(&(len as u64).to_le_bytes());
        let crc = record_crc(&head, parts);
        head[4..8].copy_from_slice(&crc.to_le_bytes());
        // One vectored write: a page record then leaves in one send
        // rather than a small one for its head and a large one for its
        // data.
        let mut slices: Vec<io::IoSlice> = std::iter::once(&head[..])
            .chain(parts.iter().copied())
            .chain(std::iter::once(body))
            .map(io::IoSlice::new)
            .collect();
        let mut bufs = &mut slices[..];
        while !bufs.is_empty() {
            match self.w.write_vectored(bufs) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => io::IoSlice::advance_slices(&mut bufs, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.bytes += 16 + len as u64;
        Ok(())
    }

    pub fn hello(&mut self, h: &Hello) -> io::Result<()> {
        let json = serde_json::to_vec(h).map_err(io::Error::other)?;
        self.record(Kind::Hello, &[&json])
    }

    /// `data` is whole pages, at most 2045 (a record's limit). It may be
    /// guest memory the guest is writing: a page written meanwhile then
    /// arrives torn (see the module's text), never at a wrong address.
    pub fn pages(&mut self, gpa: u64, data: &[u8]) -> io::Result<()> {
        let mut sums = std::mem::take(&mut self.sums);
        sums.clear();
        for page in data.chunks(PAGE) {
            sums.extend_from_slice(&page_sum(page).to_le_bytes());
        }
        let r = self.pages_summed(gpa, data, &sums);
        self.sums = sums;
        r
    }

    /// As [`Writer::pages`], with each page's [`page_sum`] already taken
    /// (`sums`: one little-endian u32 per page of `data`).
    pub fn pages_summed(&mut self, gpa: u64, data: &[u8], sums: &[u8]) -> io::Result<()> {
        if sums.len() / 4 * PAGE != data.len() || sums.len() % 4 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a page record's sums do not match its pages",
            ));
        }
        self.record_with_body(Kind::Pages, &[&gpa.to_le_bytes(), sums], data)
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

    /// Opens a further stream (after its header), flushed at once: the
    /// destination reads it before it answers the hello.
    pub fn join(&mut self, j: &Join) -> io::Result<()> {
        let json = serde_json::to_vec(j).map_err(io::Error::other)?;
        self.record(Kind::Join, &[&json])?;
        self.w.flush()
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
    /// A page record's address and sums, kept between records.
    prefix: Vec<u8>,
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
        if v < VERSION {
            return Err(bad(format!(
                "version {v}, from an older vmtools (this one reads version {VERSION})"
            )));
        }
        Ok(Self::resume(r))
    }

    /// Goes on reading a stream whose header another reader checked
    /// (the foreground start read the hello; the VM process reads on).
    pub fn resume(r: R) -> Self {
        Self {
            r,
            bytes: 16,
            prefix: Vec::new(),
        }
    }

    pub fn next_record(&mut self) -> Result<Record> {
        self.next_record_into(&mut |_, _| Ok(None))
    }

    /// As [`Reader::next_record`], but a page record's data goes straight
    /// where `place(gpa, len)` says (guest memory on the destination),
    /// saving two copies; `None` reads it into a vector as usual.
    /// `place` is called only once the record's head and address have
    /// passed their checksum. Each page's own checksum is checked after it
    /// has landed: on a mismatch the record is [`Record::PagesTorn`], and
    /// the pages it names must be sent again before they count.
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
        if kind == Kind::Pages {
            return self.pages(&head, crc, len, place);
        }
        let mut payload = vec![0u8; len as usize];
        read_all(&mut self.r, &mut payload, "a record's payload")?;
        self.finish(kind, crc, &head, payload)
    }

    /// A page record: its head, address and sums are checked before its
    /// data is read, so `place` never sees an address the source did not
    /// send.
    fn pages<'m>(
        &mut self,
        head: &[u8; 16],
        crc: u32,
        len: u64,
        place: &mut dyn FnMut(u64, usize) -> Result<Option<&'m mut [u8]>>,
    ) -> Result<Record> {
        let pages = len.saturating_sub(8) / PAGE_AND_SUM;
        if pages == 0 || 8 + pages * PAGE_AND_SUM != len {
            return Err(bad("a page record that is not whole pages"));
        }
        let mut prefix = std::mem::take(&mut self.prefix);
        prefix.resize(8 + 4 * pages as usize, 0);
        let r = self.pages_after(head, crc, &mut prefix, place);
        self.prefix = prefix;
        r
    }

    fn pages_after<'m>(
        &mut self,
        head: &[u8; 16],
        crc: u32,
        prefix: &mut [u8],
        place: &mut dyn FnMut(u64, usize) -> Result<Option<&'m mut [u8]>>,
    ) -> Result<Record> {
        read_all(&mut self.r, prefix, "a record's payload")?;
        if record_crc(head, &[prefix]) != crc {
            return Err(bad("a Pages record fails its checksum"));
        }
        let gpa = u64::from_le_bytes(prefix[0..8].try_into().expect("8 bytes"));
        if gpa % PAGE as u64 != 0 {
            return Err(bad("a page record that is not page-aligned"));
        }
        let sums = &prefix[8..];
        let n = sums.len() / 4 * PAGE;
        self.bytes += 16 + prefix.len() as u64 + n as u64;
        // The address of each page whose data is not what was summed.
        let torn = |data: &[u8]| -> Vec<u64> {
            data.chunks(PAGE)
                .zip(sums.chunks(4))
                .enumerate()
                .filter(|(_, (page, sum))| crc32fast::hash(page).to_le_bytes() != **sum)
                .map(|(i, _)| gpa + (i * PAGE) as u64)
                .collect()
        };
        if let Some(dst) = place(gpa, n)? {
            if dst.len() != n {
                return Err(bad("a page record's place has the wrong size"));
            }
            read_all(&mut self.r, dst, "a record's payload")?;
            let len = n as u64;
            let torn = torn(dst);
            return Ok(if torn.is_empty() {
                Record::PagesPlaced { gpa, len }
            } else {
                Record::PagesTorn { gpa, len, torn }
            });
        }
        let mut data = vec![0u8; n];
        read_all(&mut self.r, &mut data, "a record's payload")?;
        if !torn(&data).is_empty() {
            return Err(bad("a Pages record's data fails its checksum"));
        }
        Ok(Record::Pages { gpa, data })
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
            // Read by `Reader::pages`, never here.
            Kind::Pages => return Err(bad("a Pages record out of place")),
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
            Kind::Join => Record::Join(
                serde_json::from_slice(&payload).map_err(|e| bad(format!("join: {e}")))?,
            ),
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
pub(crate) fn record_crc(head: &[u8; 16], payload: &[&[u8]]) -> u32 {
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
