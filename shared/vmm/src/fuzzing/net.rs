//! virtio-net driven by guest-controlled bytes, for the fuzz target
//! (fuzz/fuzz_targets/virtio_net.rs) and the replay test
//! (tests/virtio_net.rs): one of the device's queues laid out in a small
//! guest memory, served by the real device, with datagram sockets standing
//! in for its taps (readv and writev alike; the offload ioctls they refuse
//! are ignored, as on a tap that refuses them).

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use crate::devices::virtio::net::{NetCounters, VirtioNet, QUEUE_SIZE};
use crate::devices::virtio::VirtioDevice;
use crate::memory::GuestMemory;

/// Guest memory of the harness.
pub const MEM_SIZE: usize = 0x10000;
/// Bytes of the input before guest memory.
pub const HEAD: usize = 10;

/// What the first [`HEAD`] bytes of an input say.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Entries of the queue (a power of two, 1 to 256).
    pub size: u16,
    /// Two queue pairs and a control queue, or one pair.
    pub two_pairs: bool,
    /// The queue served: 0 RX, 1 TX (pair 0), 2 RX, 3 TX (pair 1), 4 control
    /// (taken modulo the device's queues).
    pub queue: usize,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    /// Frames waiting on the host side before the queue is served, and
    /// their length.
    pub frames: u8,
    pub frame_len: usize,
}

impl Layout {
    pub fn to_bytes(self) -> [u8; HEAD] {
        let mut b = [0u8; HEAD];
        b[0] = self.size.trailing_zeros() as u8;
        b[1] = u8::from(self.two_pairs) | (self.queue as u8) << 1;
        for (i, a) in [self.desc, self.avail, self.used].into_iter().enumerate() {
            b[2 + 2 * i..4 + 2 * i].copy_from_slice(&(a as u16).to_le_bytes());
        }
        b[8] = self.frames;
        b[9] = (self.frame_len / 8) as u8;
        b
    }

    fn from_bytes(b: &[u8]) -> Self {
        let at = |i: usize| u64::from(u16::from_le_bytes([b[i], b[i + 1]]));
        Self {
            size: 1 << (b[0] % 9),
            two_pairs: b[1] & 1 == 1,
            queue: usize::from(b[1] >> 1),
            desc: at(2) & !15,
            avail: at(4) & !1,
            used: at(6) & !3,
            frames: b[8] % 8,
            frame_len: usize::from(b[9]) * 8,
        }
    }
}

/// The device, its queues' host ends and one queue set up as `Layout`
/// says; `None` when the transport would refuse that layout.
#[derive(Debug)]
pub struct Harness {
    pub mem: GuestMemory,
    pub net: VirtioNet,
    pub counters: Arc<NetCounters>,
    /// The other ends of the stand-in taps: what the guest sent arrives
    /// here, and what is sent here waits for the guest.
    pub peers: Vec<UnixDatagram>,
    pub index: usize,
    pub queue: Queue,
    layout: Layout,
}

impl Harness {
    pub fn new(l: &Layout) -> Option<Self> {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).ok()?;
        let pairs = if l.two_pairs { 2 } else { 1 };
        let mut taps = Vec::new();
        let mut peers = Vec::new();
        for _ in 0..pairs {
            let (tap, peer) = UnixDatagram::pair().ok()?;
            peer.set_nonblocking(true).ok()?;
            taps.push(File::from(OwnedFd::from(tap)));
            peers.push(peer);
        }
        let counters = Arc::new(NetCounters::default());
        let mut net = VirtioNet::new(taps, [2, 0, 0, 0, 0, 1], Arc::clone(&counters)).ok()?;
        let sizes = net.queue_max_sizes().to_vec();
        let index = l.queue % sizes.len();
        let queue = super::ring(
            QUEUE_SIZE,
            l.size.min(sizes[index]),
            [l.desc, l.avail, l.used],
            &mem,
        )?;
        net.activate(net.features());
        Some(Self {
            mem,
            net,
            counters,
            peers,
            index,
            queue,
            layout: *l,
        })
    }

    /// Writes descriptor `index`: (address, length, flags, next).
    pub fn set_desc(&self, index: u16, d: (u64, u32, u16, u16)) {
        super::write_desc(&self.mem, self.layout.desc, index, d);
    }

    /// Offers `heads` on the available ring.
    pub fn offer(&self, heads: &[u16]) {
        super::offer(&self.mem, self.layout.avail, self.queue.size(), heads);
    }

    /// Serves the queue as the guest's notification would.
    pub fn process(&mut self) -> crate::devices::virtio::Served {
        self.net
            .process_queue(self.index, &mut self.queue, &self.mem)
    }

    /// Serves the queue as frames arriving on the tap would (an RX queue's
    /// pair); nothing for other queues.
    pub fn frames_arrived(&mut self) -> crate::devices::virtio::Served {
        if self.index % 2 != 0 || self.index / 2 >= self.peers.len() {
            return crate::devices::virtio::Served::default();
        }
        self.net.backend_ready(
            self.index / 2,
            std::slice::from_mut(&mut self.queue),
            &self.mem,
        )
    }
}

/// The fuzz entry: the first [`HEAD`] bytes are a [`Layout`], the rest is
/// guest memory from address 0. Must never panic, whatever the bytes, and
/// a pass must end within one ring's worth.
pub fn run(data: &[u8]) {
    if data.len() < HEAD {
        return;
    }
    let l = Layout::from_bytes(data);
    let Some(mut h) = Harness::new(&l) else {
        return;
    };
    let body = &data[HEAD..];
    let n = body.len().min(MEM_SIZE);
    h.mem.write_slice(&body[..n], GuestAddress(0)).unwrap_or(());
    if let Some(peer) = h.peers.get(h.index / 2) {
        for i in 0..l.frames {
            let _ = peer.send(&vec![i; l.frame_len]);
        }
    }
    let size = h.queue.size();
    for pass in 0..4 {
        let before = h.queue.next_used();
        let served = if pass % 2 == 0 {
            h.process()
        } else {
            h.frames_arrived()
        };
        let done = h.queue.next_used().wrapping_sub(before);
        assert!(done <= size, "a pass overran: {done} of a ring of {size}");
        if !served.more && pass > 0 {
            break;
        }
    }
}
