//! Parsing a virtio-blk request out of a descriptor chain the guest built.
//! Everything here comes from a possibly hostile guest: lengths, directions,
//! addresses and chain shape are all checked before any data moves, and
//! guest memory is only ever reached through vm-memory's bounds checks.

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
};
use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

use crate::memory::GuestMemory;

pub const SECTOR_SIZE: u64 = 512;
/// virtio_blk_outhdr: type, reserved, sector.
const HEADER_LEN: u32 = 16;
/// A discard / write-zeroes segment: sector, num_sectors, flags.
pub const SEGMENT_LEN: u32 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestType {
    In,
    Out,
    Flush,
    GetId,
    Discard,
    WriteZeroes,
    Unsupported(u32),
}

impl From<u32> for RequestType {
    fn from(t: u32) -> Self {
        match t {
            VIRTIO_BLK_T_IN => Self::In,
            VIRTIO_BLK_T_OUT => Self::Out,
            VIRTIO_BLK_T_FLUSH => Self::Flush,
            VIRTIO_BLK_T_GET_ID => Self::GetId,
            VIRTIO_BLK_T_DISCARD => Self::Discard,
            VIRTIO_BLK_T_WRITE_ZEROES => Self::WriteZeroes,
            other => Self::Unsupported(other),
        }
    }
}

/// One data buffer of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    pub addr: GuestAddress,
    pub len: u32,
    /// The device writes it (the guest reads it).
    pub device_writes: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: RequestType,
    pub sector: u64,
    pub data: Vec<Buffer>,
    /// Where the status byte goes.
    pub status: GuestAddress,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("descriptor chain has no room for a header and a status byte")]
    TooShort,
    #[error("request header is not a readable 16-byte buffer in guest memory")]
    BadHeader,
    #[error("status byte is not a writable buffer in guest memory")]
    BadStatus,
    #[error("data buffer in the wrong direction for the request")]
    WrongDirection,
    #[error("data buffer outside guest memory")]
    OutsideMemory,
    #[error("empty data buffer")]
    EmptyBuffer,
    #[error("data length {0} is not a whole number of sectors")]
    PartialSector(u64),
    #[error("request reaches past sector {0}")]
    PastEnd(u64),
}

impl Request {
    /// Total data bytes.
    pub fn data_len(&self) -> u64 {
        self.data.iter().map(|b| u64::from(b.len)).sum()
    }

    /// Reads a request's shape from `chain`: header, data buffers, status
    /// byte. An `Err` here means there is nowhere to put a status; a request
    /// that parses can still fail [`Request::validate`], and then gets an
    /// error status.
    pub fn parse(chain: &DescriptorChain<&GuestMemory>) -> Result<Self, RequestError> {
        let mem = chain.memory();
        // The iterator stops at the queue size (no loops) and at 4 GiB of
        // total length (virtio 1.2, 2.7.5.2).
        let descs: Vec<_> = chain.clone().collect();
        if descs.len() < 2 {
            return Err(RequestError::TooShort);
        }
        let head = descs[0];
        let last = descs[descs.len() - 1];
        if !last.is_write_only()
            || last.len() < 1
            || !GuestMemoryBackend::check_range(mem, last.addr(), 1)
        {
            return Err(RequestError::BadStatus);
        }
        if head.is_write_only() || head.len() < HEADER_LEN {
            return Err(RequestError::BadHeader);
        }
        let mut hdr = [0u8; HEADER_LEN as usize];
        mem.read_slice(&mut hdr, head.addr())
            .map_err(|_| RequestError::BadHeader)?;
        let kind = RequestType::from(u32::from_le_bytes(hdr[0..4].try_into().unwrap()));
        let sector = u64::from_le_bytes(hdr[8..16].try_into().unwrap());
        let data = descs[1..descs.len() - 1]
            .iter()
            .map(|d| Buffer {
                addr: d.addr(),
                len: d.len(),
                device_writes: d.is_write_only(),
            })
            .collect();
        Ok(Self {
            kind,
            sector,
            data,
            status: last.addr(),
        })
    }

    /// Checks the data buffers against the request type and the disk's
    /// size in sectors: direction, no empty buffer, whole sectors, within
    /// the disk. Whether they lie in guest memory is checked where they
    /// are mapped for the I/O (a request with one outside fails there).
    pub fn validate(&self, capacity: u64) -> Result<(), RequestError> {
        let wants_write = match self.kind {
            RequestType::In | RequestType::GetId => Some(true),
            RequestType::Out | RequestType::Discard | RequestType::WriteZeroes => Some(false),
            RequestType::Flush | RequestType::Unsupported(_) => None,
        };
        if let Some(w) = wants_write {
            if self.data.iter().any(|b| b.device_writes != w) {
                return Err(RequestError::WrongDirection);
            }
        }
        if self.data.iter().any(|b| b.len == 0) {
            return Err(RequestError::EmptyBuffer);
        }
        if matches!(self.kind, RequestType::In | RequestType::Out) {
            let len = self.data_len();
            if len % SECTOR_SIZE != 0 {
                return Err(RequestError::PartialSector(len));
            }
            let end = self.sector.checked_add(len / SECTOR_SIZE);
            if end.is_none_or(|e| e > capacity) {
                return Err(RequestError::PastEnd(capacity));
            }
        }
        if matches!(self.kind, RequestType::Discard | RequestType::WriteZeroes)
            && self.data_len() % u64::from(SEGMENT_LEN) != 0
        {
            return Err(RequestError::PartialSector(self.data_len()));
        }
        Ok(())
    }
}

/// One discard / write-zeroes range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub sector: u64,
    pub sectors: u32,
    pub flags: u32,
}

/// The segments a validated discard / write-zeroes request carries.
pub fn segments(mem: &GuestMemory, req: &Request) -> Result<Vec<Segment>, RequestError> {
    let mut out = Vec::new();
    for b in &req.data {
        let mut off = 0;
        while off + SEGMENT_LEN <= b.len {
            let mut raw = [0u8; SEGMENT_LEN as usize];
            let addr = b
                .addr
                .checked_add(u64::from(off))
                .ok_or(RequestError::OutsideMemory)?;
            mem.read_slice(&mut raw, addr)
                .map_err(|_| RequestError::OutsideMemory)?;
            out.push(Segment {
                sector: u64::from_le_bytes(raw[0..8].try_into().unwrap()),
                sectors: u32::from_le_bytes(raw[8..12].try_into().unwrap()),
                flags: u32::from_le_bytes(raw[12..16].try_into().unwrap()),
            });
            off += SEGMENT_LEN;
        }
    }
    Ok(out)
}
