//! virtio-blk on the Block trait: raw files, block devices and qcow2
//! chains, with the cache policies of QEMU's `cache=` option and per-disk
//! counters for `vm-run stats`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK,
    VIRTIO_BLK_S_UNSUPP,
};
use virtio_queue::{Queue, QueueT};
use vm_image::Block;
use vm_memory::{Bytes, GuestMemoryBackend, VolatileSlice};
pub use vm_spec::BlockStats;

use super::blk_request::{segments, Request, RequestType, SECTOR_SIZE};
use super::uring::Uring;
use super::{read_config_bytes, Served, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::dirty::DirtyLog;
use crate::memory::GuestMemory;

const VIRTIO_ID_BLOCK: u32 = 2;
/// Deep enough for several 1 MiB requests in flight.
pub const QUEUE_SIZE: u16 = 256;
/// The serial number GET_ID returns is at most this long.
pub const SERIAL_LEN: usize = 20;
/// Discard / write-zeroes limits announced in the config space.
const MAX_DISCARD_SECTORS: u32 = u32::MAX;
const MAX_DISCARD_SEGMENTS: u32 = 64;

/// How writes and flushes reach the disk (QEMU's `cache=` modes map onto
/// this plus O_DIRECT, which is chosen when the image is opened).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CachePolicy {
    /// Every write is made durable before it completes (writethrough,
    /// directsync).
    pub write_through: bool,
    /// FLUSH does not fsync (unsafe).
    pub ignore_flush: bool,
}

/// Per-disk counters, named as `virsh domblkstat` names them.
#[derive(Debug, Default)]
pub struct BlockCounters {
    pub rd_req: AtomicU64,
    pub rd_bytes: AtomicU64,
    pub wr_req: AtomicU64,
    pub wr_bytes: AtomicU64,
    pub flush_operations: AtomicU64,
    /// Nanoseconds spent serving each kind, summed over requests.
    pub rd_total_times: AtomicU64,
    pub wr_total_times: AtomicU64,
    pub flush_total_times: AtomicU64,
    pub errs: AtomicU64,
    /// Nanoseconds from each notification's first request to its last
    /// completion, summed: the device's own view of its throughput.
    pub busy_ns: AtomicU64,
}

impl BlockCounters {
    pub fn snapshot(&self) -> BlockStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BlockStats {
            rd_req: g(&self.rd_req),
            rd_bytes: g(&self.rd_bytes),
            wr_req: g(&self.wr_req),
            wr_bytes: g(&self.wr_bytes),
            flush_operations: g(&self.flush_operations),
            rd_total_times: g(&self.rd_total_times),
            wr_total_times: g(&self.wr_total_times),
            flush_total_times: g(&self.flush_total_times),
            errs: g(&self.errs),
            busy_ns: g(&self.busy_ns),
        }
    }
}

fn add(c: &AtomicU64, v: u64) {
    c.fetch_add(v, Ordering::Relaxed);
}

pub struct VirtioBlk {
    disk: Arc<dyn Block>,
    read_only: bool,
    cache: CachePolicy,
    serial: [u8; SERIAL_LEN],
    config: Vec<u8>,
    counters: Arc<BlockCounters>,
    /// Reads and writes go through io_uring on this file (raw images).
    uring: Option<Uring>,
    /// Where the guest pages this device fills are recorded (migration).
    dirty: Arc<DirtyLog>,
}

impl std::fmt::Debug for VirtioBlk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioBlk")
            .field("size", &self.disk.size())
            .field("read_only", &self.read_only)
            .field("cache", &self.cache)
            .field("io_uring", &self.uring.is_some())
            .finish_non_exhaustive()
    }
}

impl VirtioBlk {
    /// `read_only` is the spec's `readonly`: the driver sees VIRTIO_BLK_F_RO
    /// and writes fail with IOERR even if it ignores that.
    pub fn new(
        disk: Arc<dyn Block>,
        read_only: bool,
        cache: CachePolicy,
        serial: &str,
        counters: Arc<BlockCounters>,
    ) -> Self {
        let mut s = [0u8; SERIAL_LEN];
        let n = serial.len().min(SERIAL_LEN);
        s[..n].copy_from_slice(&serial.as_bytes()[..n]);
        let read_only = read_only || disk.read_only();
        let config = block_config(disk.size() / SECTOR_SIZE, !cache.write_through);
        Self {
            disk,
            read_only,
            cache,
            serial: s,
            config,
            counters,
            uring: None,
            dirty: Arc::default(),
        }
    }

    /// Records the guest pages this device writes in `log`.
    #[must_use]
    pub fn with_dirty_log(mut self, log: Arc<DirtyLog>) -> Self {
        self.dirty = log;
        self
    }

    /// Serves reads and writes through io_uring on `file`: the raw image
    /// `disk` reads and writes, opened with the same flags.
    pub fn with_uring(mut self, file: std::fs::File) -> std::io::Result<Self> {
        self.uring = Some(Uring::new(file, u32::from(QUEUE_SIZE))?);
        Ok(self)
    }

    fn capacity(&self) -> u64 {
        self.disk.size() / SECTOR_SIZE
    }

    /// Serves one request; returns the status and the bytes written into
    /// guest buffers (the status byte not included).
    fn execute(&self, req: &Request, mem: &GuestMemory) -> (u32, u32) {
        if req.validate(self.capacity()).is_err() {
            return (VIRTIO_BLK_S_IOERR, 0);
        }
        let c = &self.counters;
        let start = Instant::now();
        let elapsed = || start.elapsed().as_nanos() as u64;
        match req.kind {
            RequestType::In => {
                let len = req.data_len();
                let ok = with_slices(mem, req, |s| {
                    self.disk.read_vectored(s, req.sector * SECTOR_SIZE)
                });
                add(&c.rd_req, 1);
                add(&c.rd_total_times, elapsed());
                if ok {
                    add(&c.rd_bytes, len);
                    (VIRTIO_BLK_S_OK, len as u32)
                } else {
                    (VIRTIO_BLK_S_IOERR, 0)
                }
            }
            RequestType::Out => {
                let len = req.data_len();
                let ok = !self.read_only
                    && with_slices(mem, req, |s| {
                        self.disk.write_vectored(s, req.sector * SECTOR_SIZE)?;
                        if self.cache.write_through {
                            self.disk.sync()?;
                        }
                        Ok(())
                    });
                add(&c.wr_req, 1);
                add(&c.wr_total_times, elapsed());
                if ok {
                    add(&c.wr_bytes, len);
                    (VIRTIO_BLK_S_OK, 0)
                } else {
                    (VIRTIO_BLK_S_IOERR, 0)
                }
            }
            RequestType::Flush => {
                let r = if self.cache.ignore_flush {
                    self.disk.flush()
                } else {
                    self.disk.sync()
                };
                add(&c.flush_operations, 1);
                add(&c.flush_total_times, elapsed());
                (status_of(r.is_ok()), 0)
            }
            RequestType::GetId => {
                let Some(b) = req.data.first() else {
                    return (VIRTIO_BLK_S_IOERR, 0);
                };
                let n = (b.len as usize).min(SERIAL_LEN);
                match mem.write_slice(&self.serial[..n], b.addr) {
                    Ok(()) => (VIRTIO_BLK_S_OK, n as u32),
                    Err(_) => (VIRTIO_BLK_S_IOERR, 0),
                }
            }
            RequestType::Discard | RequestType::WriteZeroes => {
                if self.read_only {
                    return (VIRTIO_BLK_S_IOERR, 0);
                }
                let Ok(segs) = segments(mem, req) else {
                    return (VIRTIO_BLK_S_IOERR, 0);
                };
                let cap = self.capacity();
                let ok = segs.iter().all(|s| {
                    let Some(end) = s.sector.checked_add(u64::from(s.sectors)) else {
                        return false;
                    };
                    if end > cap {
                        return false;
                    }
                    let (off, len) = (s.sector * SECTOR_SIZE, u64::from(s.sectors) * SECTOR_SIZE);
                    let r = if req.kind == RequestType::Discard {
                        self.disk.discard(off, len)
                    } else {
                        self.disk.write_zeroes(off, len)
                    };
                    r.is_ok()
                });
                let ok = ok && (!self.cache.write_through || self.disk.sync().is_ok());
                (status_of(ok), 0)
            }
            RequestType::Unsupported(_) => (VIRTIO_BLK_S_UNSUPP, 0),
        }
    }
}

fn status_of(ok: bool) -> u32 {
    if ok {
        VIRTIO_BLK_S_OK
    } else {
        VIRTIO_BLK_S_IOERR
    }
}

/// Runs `f` on the request's data buffers as volatile slices of guest
/// memory: the image reads and writes them in place.
fn with_slices(
    mem: &GuestMemory,
    req: &Request,
    f: impl FnOnce(&[VolatileSlice<'_>]) -> std::io::Result<()>,
) -> bool {
    let slices: Result<Vec<VolatileSlice<'_>>, _> = req
        .data
        .iter()
        .map(|b| mem.get_slice(b.addr, b.len as usize))
        .collect();
    match slices {
        Ok(s) => f(&s).is_ok(),
        Err(_) => false,
    }
}

/// virtio_blk_config, little-endian, up to write_zeroes_may_unmap.
fn block_config(capacity: u64, writeback: bool) -> Vec<u8> {
    let mut c = vec![0u8; 60];
    c[0..8].copy_from_slice(&capacity.to_le_bytes());
    // seg_max: a request's data buffers, between header and status.
    c[12..16].copy_from_slice(&u32::from(QUEUE_SIZE - 2).to_le_bytes());
    c[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
    c[32] = u8::from(writeback);
    c[34..36].copy_from_slice(&1u16.to_le_bytes());
    c[36..40].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
    c[40..44].copy_from_slice(&MAX_DISCARD_SEGMENTS.to_le_bytes());
    c[44..48].copy_from_slice(&1u32.to_le_bytes());
    c[48..52].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
    c[52..56].copy_from_slice(&MAX_DISCARD_SEGMENTS.to_le_bytes());
    c[56] = 1;
    c
}

impl VirtioDevice for VirtioBlk {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    /// The new top has the same size (the driver's capacity holds); its
    /// I/O goes through the image, not io_uring (which serves raw files).
    fn replace_disk(&mut self, disk: Arc<dyn Block>) -> bool {
        self.disk = disk;
        self.uring = None;
        true
    }

    fn features(&self) -> u64 {
        let mut f = VIRTIO_F_VERSION_1
            | 1 << VIRTIO_BLK_F_SEG_MAX
            | 1 << VIRTIO_BLK_F_BLK_SIZE
            | 1 << VIRTIO_BLK_F_FLUSH
            | 1 << VIRTIO_BLK_F_DISCARD
            | 1 << VIRTIO_BLK_F_WRITE_ZEROES;
        if self.read_only {
            f |= 1 << VIRTIO_BLK_F_RO;
        }
        f
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn process_queue(&mut self, _index: usize, queue: &mut Queue, mem: &GuestMemory) -> Served {
        let budget = queue.size();
        let start = Instant::now();
        let mut served = 0;
        let mut in_flight: Vec<(u16, Request, Instant)> = Vec::new();
        while served < budget {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                break;
            };
            served += 1;
            let head = chain.head_index();
            let Ok(req) = Request::parse(&chain) else {
                // Nowhere to put a status: the request completes empty.
                add(&self.counters.errs, 1);
                let _ = queue.add_used(mem, head, 0);
                continue;
            };
            if self.uring.is_some() {
                if self.submit_to_ring(&req, mem, in_flight.len() as u64) {
                    in_flight.push((head, req, Instant::now()));
                    continue;
                }
                // A flush covers the writes before it: they finish first.
                if req.kind == RequestType::Flush {
                    self.complete_ring(queue, mem, &mut in_flight);
                }
            }
            let (status, len) = self.execute(&req, mem);
            self.complete(queue, mem, head, &req, status, len);
        }
        self.complete_ring(queue, mem, &mut in_flight);
        if served > 0 {
            add(&self.counters.busy_ns, start.elapsed().as_nanos() as u64);
        }
        Served {
            interrupt: served > 0 && queue.needs_notification(mem).unwrap_or(true),
            more: served == budget,
        }
    }
}

impl VirtioBlk {
    /// Writes the status byte and puts the request on the used ring.
    fn complete(
        &self,
        queue: &mut Queue,
        mem: &GuestMemory,
        head: u16,
        req: &Request,
        status: u32,
        len: u32,
    ) {
        if status != VIRTIO_BLK_S_OK {
            add(&self.counters.errs, 1);
        }
        // What this request wrote into the guest: its data (a read, the
        // id) and the status byte.
        for b in req.data.iter().filter(|b| b.device_writes) {
            self.dirty.mark(b.addr, u64::from(b.len));
        }
        self.dirty.mark(req.status, 1);
        // The status byte was checked writable when parsing.
        let used = match mem.write_obj(status as u8, req.status) {
            Ok(()) => len + 1,
            Err(_) => 0,
        };
        // Fails only when the used ring is outside memory, which
        // validation at DRIVER_OK ruled out.
        let _ = queue.add_used(mem, head, used);
    }

    /// Hands a valid read or write to io_uring; false for anything else
    /// (served the usual way, errors included).
    fn submit_to_ring(&mut self, req: &Request, mem: &GuestMemory, tag: u64) -> bool {
        let write = match req.kind {
            RequestType::In => false,
            RequestType::Out if !self.read_only => true,
            _ => return false,
        };
        if req.validate(self.capacity()).is_err() {
            return false;
        }
        let iovecs: Result<Vec<libc::iovec>, _> = req
            .data
            .iter()
            .map(|b| {
                mem.get_slice(b.addr, b.len as usize).map(|s| libc::iovec {
                    iov_base: s.ptr_guard_mut().as_ptr().cast(),
                    iov_len: s.len(),
                })
            })
            .collect();
        let (Ok(iovecs), Some(ring)) = (iovecs, self.uring.as_mut()) else {
            return false;
        };
        // SAFETY: the iovecs point into guest memory, which this device
        // holds (through the transport) until the ring is drained at the
        // end of this pass.
        unsafe { ring.queue(write, iovecs, req.sector * SECTOR_SIZE, tag) }.is_ok()
    }

    /// Waits for everything on the ring and completes those requests.
    fn complete_ring(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemory,
        in_flight: &mut Vec<(u16, Request, Instant)>,
    ) {
        let Some(ring) = self.uring.as_mut() else {
            return;
        };
        if in_flight.is_empty() {
            return;
        }
        // A broken ring fails every request in flight.
        let results = ring.wait_all().unwrap_or_default();
        let mut ok = vec![false; in_flight.len()];
        for (tag, res) in results {
            if let Some((_, req, _)) = in_flight.get(tag as usize) {
                ok[tag as usize] = u64::try_from(res).is_ok_and(|n| n == req.data_len());
            }
        }
        let wrote = in_flight
            .iter()
            .zip(&ok)
            .any(|((_, r, _), &ok)| ok && r.kind == RequestType::Out);
        let synced = !(wrote && self.cache.write_through) || self.disk.sync().is_ok();
        let c = Arc::clone(&self.counters);
        for ((head, req, t0), ok) in in_flight.drain(..).zip(ok) {
            let len = req.data_len();
            let ns = t0.elapsed().as_nanos() as u64;
            let (status, used) = if req.kind == RequestType::In {
                add(&c.rd_req, 1);
                add(&c.rd_total_times, ns);
                if ok {
                    add(&c.rd_bytes, len);
                }
                (status_of(ok), if ok { len as u32 } else { 0 })
            } else {
                add(&c.wr_req, 1);
                add(&c.wr_total_times, ns);
                if ok && synced {
                    add(&c.wr_bytes, len);
                }
                (status_of(ok && synced), 0)
            };
            self.complete(queue, mem, head, &req, status, used);
        }
    }
}
