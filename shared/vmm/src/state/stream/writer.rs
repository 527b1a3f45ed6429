//! The writing half of the stream: a header, then records, each with its
//! head (kind, CRC-32, length) and payload, in one vectored write.

use std::io::{self, Write};

use super::{page_sum, record_crc, End, Hello, Join, Kind, MAGIC, MAX_ABORT_REASON, PAGE, VERSION};

/// Writes a stream; counts what it sent. Each record is a 16-byte head
/// (kind, CRC-32 of kind, length and payload, length) and its payload.
#[derive(Debug)]
pub struct Writer<W: Write> {
    pub(super) w: W,
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

    /// Ends the stream between records, saying why (cut to
    /// [`MAX_ABORT_REASON`] bytes, on a character's boundary).
    pub fn abort(&mut self, reason: &str) -> io::Result<()> {
        let mut end = reason.len().min(MAX_ABORT_REASON);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        self.record(Kind::Abort, &[&reason.as_bytes()[..end]])?;
        self.w.flush()
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.w
    }
}
