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
//!
//! A source that gives up between records (a cancel) says why in an
//! `abort` record, so the destination reports that rather than a stream
//! cut short. It needs no new version: a reader that predates it stops at
//! an unknown record, which also fails the migration.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub const MAGIC: &[u8; 8] = b"VMTMIGR\n";
/// Version 2: page records carry a checksum per page.
pub const VERSION: u32 = 2;
/// The largest record: a run of pages (or a disk range) of 4 MiB, or the
/// state (which holds every MSR of every vCPU: well under this).
pub const MAX_RECORD: u64 = 8 << 20;
/// The longest reason an abort record carries (a longer one is cut).
pub const MAX_ABORT_REASON: usize = 1024;
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
    Abort = 10,
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
            10 => Self::Abort,
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

mod reader;
mod writer;

pub use reader::Reader;
pub use writer::Writer;

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

#[cfg(test)]
mod tests;
