//! virtio-blk driven by guest-controlled bytes, for the fuzz target
//! (fuzz/fuzz_targets/virtio_blk.rs), the replay test and unit tests: a
//! queue laid out in a small guest memory, served by the real device over
//! a disk in a vector. [`net`] is virtio-net's harness, [`stream`] the
//! migration stream's.

pub mod net;
pub mod stream;

use std::io;
use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vm_image::{Alignment, Block};
use vm_memory::{Bytes, GuestAddress, VolatileSlice};

use crate::devices::virtio::blk::{BlockCounters, CachePolicy, VirtioBlk};
use crate::devices::virtio::{Served, VirtioDevice};
use crate::memory::GuestMemory;

/// Guest memory of the harness.
pub const MEM_SIZE: usize = 0x10000;
/// The disk the harness serves.
pub const DISK_SIZE: usize = 64 * 512;
/// Where a [`Harness`] puts its rings (its own layout; `run` takes the
/// guest's).
pub const DESC: u64 = 0x0;
pub const AVAIL: u64 = 0x1000;
pub const USED: u64 = 0x2000;

/// A disk in memory.
#[derive(Debug)]
pub struct MemDisk {
    pub data: Mutex<Vec<u8>>,
}

/// The index range `[offset, offset + len)` of a disk of `size` bytes.
fn range(size: usize, offset: u64, len: u64) -> io::Result<std::ops::Range<usize>> {
    match offset.checked_add(len).filter(|&e| e <= size as u64) {
        Some(e) => Ok(offset as usize..e as usize),
        None => Err(io::Error::new(io::ErrorKind::InvalidInput, "past the end")),
    }
}

impl Block for MemDisk {
    fn size(&self) -> u64 {
        self.data.lock().unwrap().len() as u64
    }
    fn alignment(&self) -> Alignment {
        Alignment {
            request: 1,
            memory: 1,
        }
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read_vectored(&self, bufs: &[VolatileSlice<'_>], offset: u64) -> io::Result<()> {
        let data = self.data.lock().unwrap();
        let mut pos = offset;
        for b in bufs {
            let r = range(data.len(), pos, b.len() as u64)?;
            b.copy_from(&data[r]);
            pos += b.len() as u64;
        }
        Ok(())
    }
    fn write_vectored(&self, bufs: &[VolatileSlice<'_>], offset: u64) -> io::Result<()> {
        let mut data = self.data.lock().unwrap();
        let mut pos = offset;
        for b in bufs {
            let r = range(data.len(), pos, b.len() as u64)?;
            b.copy_to(&mut data[r]);
            pos += b.len() as u64;
        }
        Ok(())
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        let mut data = self.data.lock().unwrap();
        let r = range(data.len(), offset, len)?;
        data[r].fill(0);
        Ok(())
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.write_zeroes(offset, len)
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

/// A virtio-blk device with one queue in a fresh guest memory.
#[derive(Debug)]
pub struct Harness {
    pub mem: GuestMemory,
    pub disk: Arc<MemDisk>,
    pub counters: Arc<BlockCounters>,
    blk: VirtioBlk,
    queue: Queue,
}

impl Harness {
    /// Queue of `size` entries at `desc` / `avail` / `used`; `None` when
    /// the transport would refuse that layout.
    pub fn new(size: u16, desc: u64, avail: u64, used: u64, read_only: bool) -> Option<Self> {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).ok()?;
        let disk = Arc::new(MemDisk {
            data: Mutex::new(vec![0xee; DISK_SIZE]),
        });
        let counters = Arc::new(BlockCounters::default());
        let blk = VirtioBlk::new(
            Arc::clone(&disk) as Arc<dyn Block>,
            read_only,
            CachePolicy::default(),
            "fuzz",
            Arc::clone(&counters),
        );
        let queue = ring(
            crate::devices::virtio::blk::QUEUE_SIZE,
            size,
            [desc, avail, used],
            &mem,
        )?;
        Some(Self {
            mem,
            disk,
            counters,
            blk,
            queue,
        })
    }

    /// The standard layout: rings at DESC / AVAIL / USED.
    pub fn standard(read_only: bool) -> Self {
        Self::new(64, DESC, AVAIL, USED, read_only).expect("the standard layout is valid")
    }

    pub fn set_desc(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        write_desc(&self.mem, DESC, index, (addr, len, flags, next));
    }

    /// Offers `heads` on the available ring (standard layout).
    pub fn offer(&self, heads: &[u16]) {
        offer(&self.mem, AVAIL, 64, heads);
    }

    /// Serves the queue as a notification would; returns whether the
    /// device wants to interrupt.
    pub fn process(&mut self) -> Served {
        self.blk.process_queue(0, &mut self.queue, &self.mem)
    }

    /// Used ring entry `n`: (head, length) (standard layout).
    pub fn used(&self, n: u16) -> (u32, u32) {
        let at = USED + 4 + u64::from(n % 64) * 8;
        (
            self.mem.read_obj(GuestAddress(at)).unwrap(),
            self.mem.read_obj(GuestAddress(at + 4)).unwrap(),
        )
    }

    /// This harness as an input for [`run`] (standard layout, 64 entries):
    /// memory up to its last non-zero byte, and at least the rings.
    pub fn as_input(&self, read_only: bool) -> Vec<u8> {
        let mut out = vec![6, u8::from(read_only)];
        for a in [DESC, AVAIL, USED] {
            out.extend_from_slice(&(a as u16).to_le_bytes());
        }
        let mut all = vec![0u8; MEM_SIZE];
        self.mem.read_slice(&mut all, GuestAddress(0)).unwrap();
        let rings_end = USED as usize + 4 + 64 * 8 + 2;
        let end = all.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        out.extend_from_slice(&all[..end.max(rings_end)]);
        out
    }

    pub fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(USED + 2)).unwrap()
    }
}

/// A ready queue of `size` entries (at most `max`) with its rings at
/// `[desc, avail, used]`; `None` when the transport would refuse it.
pub(crate) fn ring(max: u16, size: u16, at: [u64; 3], mem: &GuestMemory) -> Option<Queue> {
    let mut queue = Queue::new(max).ok()?;
    queue.try_set_size(size).ok()?;
    queue.try_set_desc_table_address(GuestAddress(at[0])).ok()?;
    queue.try_set_avail_ring_address(GuestAddress(at[1])).ok()?;
    queue.try_set_used_ring_address(GuestAddress(at[2])).ok()?;
    queue.set_ready(true);
    // The transport checks the same at DRIVER_OK.
    queue.is_valid(mem).then_some(queue)
}

/// Writes descriptor `index` of the table at `table`: (address, length,
/// flags, next).
pub fn write_desc(
    mem: &GuestMemory,
    table: u64,
    index: u16,
    (addr, len, flags, next): (u64, u32, u16, u16),
) {
    let d = table + u64::from(index) * 16;
    mem.write_obj(addr, GuestAddress(d)).unwrap();
    mem.write_obj(len, GuestAddress(d + 8)).unwrap();
    mem.write_obj(flags, GuestAddress(d + 12)).unwrap();
    mem.write_obj(next, GuestAddress(d + 14)).unwrap();
}

/// Offers `heads` on the available ring at `avail` of a `size`-entry queue.
pub fn offer(mem: &GuestMemory, avail: u64, size: u16, heads: &[u16]) {
    let idx: u16 = mem.read_obj(GuestAddress(avail + 2)).unwrap();
    for (i, h) in heads.iter().enumerate() {
        let slot = (usize::from(idx) + i) % usize::from(size);
        mem.write_obj(*h, GuestAddress(avail + 4 + slot as u64 * 2))
            .unwrap();
    }
    mem.write_obj(
        idx.wrapping_add(heads.len() as u16),
        GuestAddress(avail + 2),
    )
    .unwrap();
}

/// The fuzz entry: the first 8 bytes pick the queue's size, the rings'
/// places and the read-only flag; the rest is guest memory from address 0.
/// Must never panic, whatever the bytes.
pub fn run(data: &[u8]) {
    if data.len() < 8 {
        return;
    }
    let size = 1u16 << (data[0] % 9);
    let read_only = data[1] & 1 == 1;
    let at = |i: usize| u64::from(u16::from_le_bytes([data[i], data[i + 1]])) & !1;
    let Some(mut h) = Harness::new(size, at(2), at(4) & !1, at(6) & !3, read_only) else {
        return;
    };
    let body = &data[8..];
    let n = body.len().min(MEM_SIZE);
    h.mem.write_slice(&body[..n], GuestAddress(0)).unwrap();
    // However the rings overlap, each pass ends within one ring's worth.
    for _ in 0..4 {
        let before = h.counters.snapshot();
        let served = h.process();
        let after = h.counters.snapshot();
        let n = |s: &crate::devices::virtio::blk::BlockStats| {
            s.rd_req + s.wr_req + s.flush_operations + s.errs
        };
        assert!(
            n(&after) - n(&before) <= 2 * u64::from(size),
            "a pass overran"
        );
        if !served.more {
            break;
        }
    }
    assert_eq!(h.disk.size(), DISK_SIZE as u64, "the disk changed size");
}
