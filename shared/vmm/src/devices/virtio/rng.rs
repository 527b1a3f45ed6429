//! virtio-rng (device ID 4): the guest offers buffers it wants filled and
//! the device fills them from the host kernel's random number generator
//! (getrandom), as QEMU's rng-random with /dev/urandom, Firecracker's
//! entropy device and Cloud Hypervisor's --rng do. A Linux guest reads it
//! as /dev/hwrng and mixes it into its own pool at boot.
//!
//! Everything in a request is the guest's: only its device-writable
//! buffers are filled, a request gets at most [`MAX_REQUEST`] bytes (the
//! driver asks again for more) and one pass serves at most a ring's worth,
//! so a guest asking without end costs the emulator thread a bounded
//! amount per notification, as its other devices do.

use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};

use super::{serve_each, Served, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::dirty::DirtyLog;
use crate::memory::GuestMemory;

/// The virtio device ID of an entropy source.
pub const DEVICE_ID: u32 = 4;
/// The one request queue's largest size.
pub const QUEUE_SIZE: u16 = 256;
/// The most bytes one request gets.
pub const MAX_REQUEST: usize = 64 << 10;

/// The entropy device.
#[derive(Debug)]
pub struct VirtioRng {
    dirty: Arc<DirtyLog>,
    /// Where random bytes are made before they are copied to the guest.
    buf: Vec<u8>,
    /// Bytes given to the guest so far.
    pub given: u64,
}

impl Default for VirtioRng {
    fn default() -> Self {
        Self::new()
    }
}

impl VirtioRng {
    pub fn new() -> Self {
        Self {
            dirty: Arc::default(),
            buf: vec![0; MAX_REQUEST],
            given: 0,
        }
    }

    /// Records the guest pages this device writes in `log` (migration).
    #[must_use]
    pub fn with_dirty_log(mut self, log: Arc<DirtyLog>) -> Self {
        self.dirty = log;
        self
    }

    /// Fills the device-writable buffers of one request, up to
    /// [`MAX_REQUEST`] bytes; returns how many bytes it wrote. A buffer
    /// outside guest memory ends the request there.
    fn fill(
        &mut self,
        buffers: impl Iterator<Item = (GuestAddress, u32)>,
        mem: &GuestMemory,
    ) -> u32 {
        let mut written = 0usize;
        for (addr, len) in buffers {
            let n = (len as usize).min(MAX_REQUEST - written);
            if n == 0 {
                break;
            }
            if !random(&mut self.buf[..n]) || mem.write_slice(&self.buf[..n], addr).is_err() {
                break;
            }
            // Marked after the write: a round that copies the page before
            // the write still sees it dirty after.
            self.dirty.mark(addr, n as u64);
            written += n;
        }
        self.given += written as u64;
        // At most MAX_REQUEST.
        written as u32
    }
}

/// Fills `buf` from the kernel's generator (never blocking once it is
/// seeded, which it is long before a VM starts); false if it cannot.
fn random(buf: &mut [u8]) -> bool {
    let mut at = 0;
    while at < buf.len() {
        let rest = &mut buf[at..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`,
        // which is valid and writable for that long.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        match usize::try_from(n) {
            Ok(n) if n > 0 => at += n,
            _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {}
            _ => return false,
        }
    }
    true
}

impl VirtioDevice for VirtioRng {
    fn device_type(&self) -> u32 {
        DEVICE_ID
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    /// The device has no configuration space.
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn process_queue(&mut self, _index: usize, queue: &mut Queue, mem: &GuestMemory) -> Served {
        serve_each(queue, mem, |chain| {
            let buffers = chain
                .filter(virtio_queue::desc::split::Descriptor::is_write_only)
                .map(|d| (d.addr(), d.len()));
            self.fill(buffers, mem)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::{offer, ring, write_desc};

    const DESC: u64 = 0x0;
    const AVAIL: u64 = 0x1000;
    const USED: u64 = 0x2000;
    const WRITE: u16 = 2;
    const NEXT: u16 = 1;

    fn setup() -> (GuestMemory, Queue, VirtioRng) {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x40000)]).unwrap();
        let q = ring(QUEUE_SIZE, 16, [DESC, AVAIL, USED], &mem).unwrap();
        (mem, q, VirtioRng::new())
    }

    fn used(mem: &GuestMemory, n: u64) -> (u32, u32) {
        let at = USED + 4 + n * 8;
        (
            mem.read_obj(GuestAddress(at)).unwrap(),
            mem.read_obj(GuestAddress(at + 4)).unwrap(),
        )
    }

    fn bytes(mem: &GuestMemory, at: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0; len];
        mem.read_slice(&mut b, GuestAddress(at)).unwrap();
        b
    }

    #[test]
    fn requests_are_filled_with_fresh_bytes() {
        let (mem, mut q, mut rng) = setup();
        write_desc(&mem, DESC, 0, (0x4000, 64, WRITE, 0));
        write_desc(&mem, DESC, 1, (0x5000, 64, WRITE, 0));
        offer(&mem, AVAIL, 16, &[0, 1]);
        let served = rng.process_queue(0, &mut q, &mem);
        assert!(served.interrupt && !served.more);
        assert_eq!(used(&mem, 0), (0, 64));
        assert_eq!(used(&mem, 1), (1, 64));
        let (a, b) = (bytes(&mem, 0x4000, 64), bytes(&mem, 0x5000, 64));
        assert_ne!(a, vec![0; 64]);
        assert_ne!(a, b, "each request has bytes of its own");
        assert_eq!(
            bytes(&mem, 0x4040, 64),
            vec![0; 64],
            "nothing past the buffer"
        );
        assert_eq!(rng.given, 128);
    }

    #[test]
    fn only_what_the_guest_may_be_given_is_written() {
        let (mem, mut q, mut rng) = setup();
        // A readable buffer first: skipped, and left as it was; then a
        // writable one, filled.
        write_desc(&mem, DESC, 0, (0x4000, 32, NEXT, 1));
        write_desc(&mem, DESC, 1, (0x5000, 32, WRITE, 0));
        // Past the end of guest memory: nothing, and no panic.
        write_desc(&mem, DESC, 2, (0x3_fff0, 4096, WRITE, 0));
        // Far more than one request gets.
        write_desc(&mem, DESC, 3, (0x10000, 0x20000, WRITE, 0));
        offer(&mem, AVAIL, 16, &[0, 2, 3]);
        rng.process_queue(0, &mut q, &mem);
        assert_eq!(used(&mem, 0), (0, 32));
        assert_eq!(bytes(&mem, 0x4000, 32), vec![0; 32]);
        assert_eq!(used(&mem, 1), (2, 0));
        assert_eq!(used(&mem, 2), (3, MAX_REQUEST as u32));
        let past = bytes(&mem, 0x10000 + MAX_REQUEST as u64, 4096);
        assert_eq!(past, vec![0; 4096], "a request gets at most MAX_REQUEST");
    }

    #[test]
    fn a_looping_chain_is_bounded() {
        let (mem, mut q, mut rng) = setup();
        // Each descriptor names the other: the chain never ends.
        write_desc(&mem, DESC, 0, (0x4000, 4096, WRITE | NEXT, 1));
        write_desc(&mem, DESC, 1, (0x5000, 4096, WRITE | NEXT, 0));
        offer(&mem, AVAIL, 16, &[0]);
        rng.process_queue(0, &mut q, &mem);
        let (head, len) = used(&mem, 0);
        assert_eq!(head, 0);
        assert!(len as usize <= MAX_REQUEST, "{len}");
    }

    #[test]
    fn random_queues_are_served_without_harm() {
        // Seeded, so a failure repeats: descriptor tables of random
        // addresses, lengths, flags and links, random heads offered. Half
        // the rounds may point buffers at the rings themselves (the guest
        // then reads back its own garbage, but the device must not fail).
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..1000 {
            let over_rings = round % 2 == 1;
            let (mem, mut q, mut rng) = setup();
            for i in 0..16 {
                let r = next();
                let addr = if over_rings {
                    r % 0x50000
                } else {
                    0x3000 + r % 0x4d000
                };
                let len = (r >> 20) as u32 % 0x30000;
                write_desc(
                    &mem,
                    DESC,
                    i,
                    (addr, len, (r >> 40) as u16 % 4, (r >> 48) as u16 % 20),
                );
            }
            let heads: Vec<u16> = (0..(next() % 20)).map(|_| (next() % 24) as u16).collect();
            offer(&mem, AVAIL, 16, &heads);
            rng.process_queue(0, &mut q, &mem);
            if !over_rings {
                let idx: u16 = mem.read_obj(GuestAddress(USED + 2)).unwrap();
                assert!(usize::from(idx) <= heads.len());
                for n in 0..u64::from(idx) {
                    assert!(used(&mem, n).1 as usize <= MAX_REQUEST);
                }
            }
        }
    }

    #[test]
    fn written_pages_are_logged_for_migration() {
        let (mem, mut q, _) = setup();
        let log = Arc::new(DirtyLog::new(&mem));
        let mut rng = VirtioRng::new().with_dirty_log(Arc::clone(&log));
        log.set(true);
        write_desc(&mem, DESC, 0, (0x7000, 16, WRITE, 0));
        offer(&mem, AVAIL, 16, &[0]);
        rng.process_queue(0, &mut q, &mem);
        // Page 7 of the one region, and no other.
        let bits = log.take(0);
        assert_eq!(bits[0], 1 << 7, "{bits:?}");
        assert!(bits[1..].iter().all(|&w| w == 0));
    }
}
