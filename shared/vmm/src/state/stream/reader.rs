//! The reading half of the stream: every record's head and length are
//! checked before its payload is read, and its checksums before it counts.

use std::io::{self, Read};

use super::{
    record_crc, Kind, Record, MAGIC, MAX_ABORT_REASON, MAX_RECORD, PAGE, PAGE_AND_SUM, VERSION,
};
use crate::{Error, Result};

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
        // Nothing at all is a source that gave up before it began (its
        // own error says why), not a damaged stream.
        let first = loop {
            match r.read(&mut h) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other.map_err(Error::io("reading the header"))?,
            }
        };
        if first == 0 {
            return Err(bad(
                "nothing arrived: the source closed the connection before the stream began",
            ));
        }
        read_all(&mut r, &mut h[first..], "the header")?;
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
            // What the source says is shown, so it is kept short and
            // stripped of anything that is not printable.
            Kind::Abort if payload.len() <= MAX_ABORT_REASON => {
                let reason: String = String::from_utf8_lossy(&payload)
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                return Err(Error::SourceGaveUp(reason));
            }
            Kind::Abort => return Err(bad("an abort record too long")),
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

fn read_all(r: &mut impl Read, buf: &mut [u8], what: &str) -> Result<()> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            bad(format!("cut short in {what}"))
        } else {
            Error::io(format!("reading {what}"))(e)
        }
    })
}
