//! virtio-net on a tap: one tap queue per queue pair, frames moved between
//! guest buffers and the tap with readv / writev (no copy), the virtio-net
//! header passed through as the tap's own vnet header (IFF_VNET_HDR), so
//! checksum and segmentation offloads reach the host stack untouched.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use virtio_bindings::virtio_net::{
    VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, VIRTIO_NET_ERR, VIRTIO_NET_F_CSUM,
    VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_MQ, VIRTIO_NET_F_STATUS, VIRTIO_NET_OK, VIRTIO_NET_S_LINK_UP,
};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_host::tap::{TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN};
use vm_memory::{Bytes, GuestMemoryBackend, VolatileSlice};
pub use vm_spec::NetStats;

use super::{read_config_bytes, serve_each, Served, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::dirty::DirtyLog;
use crate::memory::GuestMemory;
use crate::state::devices::DeviceExtra;

const VIRTIO_ID_NET: u32 = 1;
pub const QUEUE_SIZE: u16 = 256;
/// virtio_net_hdr_v1: flags, gso_type, hdr_len, gso_size, csum_start,
/// csum_offset, num_buffers.
pub const NET_HDR_LEN: usize = 12;

/// Per-NIC counters, named as `virsh domifstat` names them.
#[derive(Debug, Default)]
pub struct NetCounters {
    pub rx_bytes: AtomicU64,
    pub rx_packets: AtomicU64,
    pub rx_errs: AtomicU64,
    pub rx_drop: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_errs: AtomicU64,
    pub tx_drop: AtomicU64,
}

impl NetCounters {
    pub fn snapshot(&self) -> NetStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NetStats {
            rx_bytes: g(&self.rx_bytes),
            rx_packets: g(&self.rx_packets),
            rx_errs: g(&self.rx_errs),
            rx_drop: g(&self.rx_drop),
            tx_bytes: g(&self.tx_bytes),
            tx_packets: g(&self.tx_packets),
            tx_errs: g(&self.tx_errs),
            tx_drop: g(&self.tx_drop),
        }
    }
}

fn add(c: &AtomicU64, v: u64) {
    c.fetch_add(v, Ordering::Relaxed);
}

#[derive(Debug)]
pub struct VirtioNet {
    taps: Vec<File>,
    queue_sizes: Vec<u16>,
    config: Vec<u8>,
    counters: Arc<NetCounters>,
    /// Queue pairs the driver uses (1 until VQ_PAIRS_SET).
    active_pairs: std::cell::Cell<usize>,
    /// Where the guest pages this device fills are recorded (migration).
    dirty: Arc<DirtyLog>,
}

impl VirtioNet {
    /// One tap descriptor per queue pair (opened with IFF_VNET_HDR, and
    /// IFF_MULTI_QUEUE when there are several).
    pub fn new(taps: Vec<File>, mac: [u8; 6], counters: Arc<NetCounters>) -> io::Result<Self> {
        for t in &taps {
            set_nonblocking(t.as_raw_fd())?;
        }
        let pairs = taps.len();
        let mut queue_sizes = vec![QUEUE_SIZE; 2 * pairs];
        if pairs > 1 {
            // The control queue, for VIRTIO_NET_CTRL_MQ.
            queue_sizes.push(64);
        }
        let mut config = vec![0u8; 12];
        config[..6].copy_from_slice(&mac);
        config[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        config[8..10].copy_from_slice(&(pairs as u16).to_le_bytes());
        config[10..12].copy_from_slice(&1500u16.to_le_bytes());
        Ok(Self {
            taps,
            queue_sizes,
            config,
            counters,
            active_pairs: std::cell::Cell::new(1),
            dirty: Arc::default(),
        })
    }

    fn pairs(&self) -> usize {
        self.taps.len()
    }

    /// Lets the kernel deliver frames to the first `n` tap queues only:
    /// the driver serves no others (virtio 1.x, 5.1.6.5.5: pair 0 alone
    /// until VQ_PAIRS_SET).
    fn use_pairs(&self, n: usize) {
        self.active_pairs.set(n);
        if self.pairs() < 2 {
            return;
        }
        for (i, t) in self.taps.iter().enumerate() {
            let _ = vm_host::tap::set_queue_enabled(t, "tap", i < n);
        }
    }

    /// Sends every frame the guest queued on TX queue `pair`.
    fn transmit(&self, pair: usize, queue: &mut Queue, mem: &GuestMemory) -> Served {
        let c = &self.counters;
        serve_each(queue, mem, |chain| {
            match buffers(&chain, mem, false).map(|b| iovecs(&b)) {
                Some((iov, len)) if len >= NET_HDR_LEN => {
                    match writev(self.taps[pair].as_raw_fd(), &iov) {
                        Ok(_) => {
                            add(&c.tx_packets, 1);
                            add(&c.tx_bytes, (len - NET_HDR_LEN) as u64);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => add(&c.tx_drop, 1),
                        Err(_) => add(&c.tx_errs, 1),
                    }
                }
                _ => add(&c.tx_errs, 1),
            }
            // The device writes nothing into a frame it sends.
            0
        })
    }

    /// Records the guest pages this device writes in `log`.
    #[must_use]
    pub fn with_dirty_log(mut self, log: Arc<DirtyLog>) -> Self {
        self.dirty = log;
        self
    }

    /// Marks the buffers of `chain` the device writes as dirty.
    fn mark_written(&self, chain: &DescriptorChain<&GuestMemory>) {
        if self.dirty.is_on() {
            for d in chain
                .clone()
                .filter(virtio_queue::desc::split::Descriptor::is_write_only)
            {
                self.dirty.mark(d.addr(), u64::from(d.len()));
            }
        }
    }

    /// Moves frames from tap queue `pair` into the guest's RX buffers until
    /// the tap is empty, the guest has no buffers left, or one ring's worth
    /// is done (`more`: a guest that keeps adding buffers, or a flood, must
    /// not hold the thread that serves everything else).
    fn receive(&self, pair: usize, queue: &mut Queue, mem: &GuestMemory) -> Served {
        let c = &self.counters;
        let mut used = false;
        let budget = queue.size();
        let mut served = 0;
        // With no buffers left, frames wait in the tap until the guest adds
        // some (its notification brings us back).
        while served < budget {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                break;
            };
            served += 1;
            let head = chain.head_index();
            let bufs = buffers(&chain, mem, true).unwrap_or_default();
            let (iov, cap) = iovecs(&bufs);
            if cap < NET_HDR_LEN {
                // A buffer we cannot fill: hand it back empty.
                add(&c.rx_errs, 1);
                let _ = queue.add_used(mem, head, 0);
                used = true;
                continue;
            }
            match readv(self.taps[pair].as_raw_fd(), &iov) {
                Ok(n) if n >= NET_HDR_LEN => {
                    // num_buffers: one chain per frame (no MRG_RXBUF).
                    set_num_buffers(&bufs);
                    self.mark_written(&chain);
                    add(&c.rx_packets, 1);
                    add(&c.rx_bytes, (n - NET_HDR_LEN) as u64);
                    if n == cap {
                        // The buffer was full: the frame may have been cut.
                        add(&c.rx_errs, 1);
                    }
                    let _ = queue.add_used(mem, head, n as u32);
                    used = true;
                }
                Ok(_) => {
                    add(&c.rx_errs, 1);
                    let _ = queue.add_used(mem, head, 0);
                    used = true;
                }
                Err(_) => {
                    // Nothing to read (or a tap error): the buffer goes
                    // back to the ring unused.
                    queue.go_to_previous_position();
                    break;
                }
            }
        }
        Served {
            interrupt: used && queue.needs_notification(mem).unwrap_or(true),
            more: served == budget,
        }
    }

    /// The control queue: VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET picks how many
    /// pairs carry frames; other commands are refused.
    fn control(&self, queue: &mut Queue, mem: &GuestMemory) -> Served {
        let mut served = 0;
        while served < queue.size() {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                break;
            };
            served += 1;
            let head = chain.head_index();
            let descs: Vec<_> = chain.collect();
            let ack = descs.iter().rev().find(|d| d.is_write_only());
            // class, command, then the pair count (u16), across however
            // many readable buffers the driver used.
            let mut bytes = Vec::new();
            for d in descs.iter().filter(|d| !d.is_write_only()) {
                let mut b = vec![0u8; (d.len() as usize).min(8)];
                if mem.read_slice(&mut b, d.addr()).is_err() {
                    break;
                }
                bytes.extend(b);
            }
            let ok = bytes.len() >= 4
                && u32::from(bytes[0]) == VIRTIO_NET_CTRL_MQ
                && u32::from(bytes[1]) == VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET
                && {
                    let n = usize::from(u16::from_le_bytes([bytes[2], bytes[3]]));
                    (1..=self.pairs()).contains(&n) && {
                        self.use_pairs(n);
                        true
                    }
                };
            let status = if ok { VIRTIO_NET_OK } else { VIRTIO_NET_ERR } as u8;
            if let Some(d) = ack {
                self.dirty.mark(d.addr(), 1);
            }
            let len = match ack {
                Some(d) if mem.write_obj(status, d.addr()).is_ok() => 1,
                _ => 0,
            };
            let _ = queue.add_used(mem, head, len);
        }
        Served {
            interrupt: served > 0,
            more: false,
        }
    }
}

/// The chain's buffers of one direction, in order; None if one is in the
/// wrong direction or outside guest memory.
fn buffers<'m>(
    chain: &DescriptorChain<&'m GuestMemory>,
    mem: &'m GuestMemory,
    device_writes: bool,
) -> Option<Vec<VolatileSlice<'m>>> {
    chain
        .clone()
        .map(|d| {
            (d.is_write_only() == device_writes)
                .then(|| mem.get_slice(d.addr(), d.len() as usize).ok())
                .flatten()
        })
        .collect()
}

/// The buffers as iovecs for readv / writev, with their total length.
fn iovecs(bufs: &[VolatileSlice<'_>]) -> (Vec<libc::iovec>, usize) {
    let iov: Vec<_> = bufs
        .iter()
        .map(|s| libc::iovec {
            iov_base: s.ptr_guard_mut().as_ptr().cast(),
            iov_len: s.len(),
        })
        .collect();
    (iov, bufs.iter().map(VolatileSlice::len).sum())
}

/// Sets the header's num_buffers to 1 (bytes 10-11), wherever in the
/// buffers they fall.
fn set_num_buffers(bufs: &[VolatileSlice<'_>]) {
    for (i, byte) in [1u8, 0].into_iter().enumerate() {
        let mut at = 10 + i;
        for b in bufs {
            if at < b.len() {
                let _ = b.write_obj(byte, at);
                break;
            }
            at -= b.len();
        }
    }
}

fn readv(fd: RawFd, iov: &[libc::iovec]) -> io::Result<usize> {
    // SAFETY: every iovec points into guest memory, mapped for as long as
    // the device lives; the kernel writes at most their lengths.
    let n = unsafe { libc::readv(fd, iov.as_ptr(), iov.len() as i32) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

fn writev(fd: RawFd, iov: &[libc::iovec]) -> io::Result<usize> {
    // SAFETY: as in readv; the kernel only reads the buffers.
    let n = unsafe { libc::writev(fd, iov.as_ptr(), iov.len() as i32) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; no memory involved.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl VirtioDevice for VirtioNet {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn features(&self) -> u64 {
        let mut f = VIRTIO_F_VERSION_1;
        for b in [
            VIRTIO_NET_F_CSUM,
            VIRTIO_NET_F_GUEST_CSUM,
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_GUEST_TSO6,
            VIRTIO_NET_F_GUEST_ECN,
            VIRTIO_NET_F_HOST_TSO4,
            VIRTIO_NET_F_HOST_TSO6,
            VIRTIO_NET_F_HOST_ECN,
            VIRTIO_NET_F_MAC,
            VIRTIO_NET_F_STATUS,
        ] {
            f |= 1 << b;
        }
        if self.pairs() > 1 {
            f |= 1 << VIRTIO_NET_F_CTRL_VQ | 1 << VIRTIO_NET_F_MQ;
        }
        f
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    /// The offloads the driver takes are the ones the tap may hand us.
    fn activate(&mut self, features: u64) {
        let has = |b: u32| features & (1 << b) != 0;
        let mut off = 0;
        if has(VIRTIO_NET_F_GUEST_CSUM) {
            off |= TUN_F_CSUM;
            if has(VIRTIO_NET_F_GUEST_TSO4) {
                off |= TUN_F_TSO4;
            }
            if has(VIRTIO_NET_F_GUEST_TSO6) {
                off |= TUN_F_TSO6;
            }
            if has(VIRTIO_NET_F_GUEST_ECN) {
                off |= TUN_F_TSO_ECN;
            }
        }
        for t in &self.taps {
            // A tap that refuses offloads still passes plain frames.
            let _ = vm_host::tap::set_offloads(t, "tap", off, NET_HDR_LEN as i32);
        }
        self.use_pairs(1);
    }

    fn process_queue(&mut self, index: usize, queue: &mut Queue, mem: &GuestMemory) -> Served {
        let pair = index / 2;
        if pair >= self.pairs() {
            return self.control(queue, mem);
        }
        if index % 2 == 0 {
            self.receive(pair, queue, mem)
        } else {
            self.transmit(pair, queue, mem)
        }
    }

    fn backend_ready(&mut self, token: usize, queues: &mut [Queue], mem: &GuestMemory) -> Served {
        match queues.get_mut(token * 2) {
            Some(q) if q.ready() && token < self.pairs() => self.receive(token, q, mem),
            _ => Served::default(),
        }
    }

    fn extra_state(&self) -> DeviceExtra {
        DeviceExtra::Net {
            active_pairs: self.active_pairs.get() as u16,
        }
    }

    fn restore_extra(&mut self, extra: &DeviceExtra) {
        if let DeviceExtra::Net { active_pairs } = extra {
            let n = usize::from(*active_pairs);
            if (1..=self.pairs()).contains(&n) {
                self.use_pairs(n);
            }
        }
    }

    fn backend_fds(&self) -> Vec<(RawFd, usize)> {
        self.taps
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_raw_fd(), i))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use vm_memory::GuestAddress;

    use super::*;
    use crate::fuzzing::net::{Harness, Layout};

    const SIZE: u16 = 16;
    const AVAIL: u64 = 0x2000;
    const USED: u64 = 0x3000;

    /// A guest that keeps offering RX buffers too small for any frame, as
    /// fast as they come back, cannot hold the thread that serves its
    /// queues: one pass takes one ring's worth and asks to come back.
    #[test]
    fn a_guest_that_keeps_adding_buffers_gets_one_ring_per_pass() {
        let mut h = Harness::new(&Layout {
            size: SIZE,
            two_pairs: false,
            queue: 0,
            desc: 0x1000,
            avail: AVAIL,
            used: USED,
            frames: 0,
            frame_len: 0,
        })
        .unwrap();
        // Descriptor 0: 4 bytes, device-writable; every ring slot is 0.
        h.set_desc(0, (0x8000, 4, 2, 0));
        h.mem.write_obj(SIZE, GuestAddress(AVAIL + 2)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(std::sync::Barrier::new(2));
        let guest = {
            let (mem, stop, started) = (h.mem.clone(), Arc::clone(&stop), Arc::clone(&started));
            std::thread::spawn(move || {
                // The guest's side: the ring always full again.
                started.wait();
                let t0 = std::time::Instant::now();
                while !stop.load(Ordering::Relaxed) && t0.elapsed().as_secs() < 2 {
                    let used: u16 = mem.read_obj(GuestAddress(USED + 2)).unwrap();
                    mem.write_obj(used.wrapping_add(SIZE), GuestAddress(AVAIL + 2))
                        .unwrap();
                }
            })
        };
        started.wait();
        let served = h.process();
        stop.store(true, Ordering::Relaxed);
        guest.join().unwrap();
        let used: u16 = h.mem.read_obj(GuestAddress(USED + 2)).unwrap();
        assert_eq!(used, SIZE, "one pass, one ring's worth");
        assert!(served.more, "asks to be served again");
        assert_eq!(h.counters.rx_errs.load(Ordering::Relaxed), u64::from(SIZE));
    }
}
