//! io_uring for raw images (`io: io_uring`, the guide's `native`): every
//! read and write of a pass over the queue is submitted at once, so the
//! kernel has them all in flight, and the pass ends when the last one
//! completes. Guest buffers go to the kernel as they are (no copy).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use io_uring::{opcode, types, IoUring};

/// Reads and writes in flight on one file.
pub struct Uring {
    ring: IoUring,
    file: File,
    /// iovec arrays the kernel reads until their request completes.
    iovecs: Vec<Vec<libc::iovec>>,
    in_flight: usize,
}

impl std::fmt::Debug for Uring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uring")
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

// SAFETY: the iovecs point into guest memory, which outlives the device
// and is shared with the guest anyway; the ring and file are owned.
unsafe impl Send for Uring {}

impl Uring {
    /// A ring of `entries` for `file`; fails where the kernel lacks
    /// io_uring or forbids it (io_uring_disabled).
    pub fn new(file: File, entries: u32) -> io::Result<Self> {
        Ok(Self {
            ring: IoUring::new(entries)?,
            file,
            iovecs: Vec::new(),
            in_flight: 0,
        })
    }

    /// Queues a read (or write) of `iovecs` at `offset`; `tag` comes back
    /// with its completion.
    ///
    /// # Safety
    /// Every iovec must point at memory that stays valid (and, for reads,
    /// writable) until `wait_all` returns.
    pub unsafe fn queue(
        &mut self,
        write: bool,
        iovecs: Vec<libc::iovec>,
        offset: u64,
        tag: u64,
    ) -> io::Result<()> {
        let fd = types::Fd(self.file.as_raw_fd());
        let n = iovecs.len() as u32;
        let entry = if write {
            opcode::Writev::new(fd, iovecs.as_ptr(), n)
                .offset(offset)
                .build()
        } else {
            opcode::Readv::new(fd, iovecs.as_ptr(), n)
                .offset(offset)
                .build()
        }
        .user_data(tag);
        // The array moves into `self.iovecs`; its heap buffer (what the
        // kernel reads) does not move.
        self.iovecs.push(iovecs);
        // SAFETY: the entry's iovec array lives in `self.iovecs` until
        // wait_all; the buffers it names are the caller's promise.
        while unsafe { self.ring.submission().push(&entry) }.is_err() {
            // Submission queue full: hand what is queued to the kernel.
            self.ring.submit()?;
        }
        self.in_flight += 1;
        Ok(())
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Submits what is queued and waits for every request in flight;
    /// returns (tag, result) pairs: bytes moved, or a negative errno.
    pub fn wait_all(&mut self) -> io::Result<Vec<(u64, i32)>> {
        let mut done = Vec::with_capacity(self.in_flight);
        while self.in_flight > 0 {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
            for cqe in self.ring.completion() {
                done.push((cqe.user_data(), cqe.result()));
                self.in_flight -= 1;
            }
        }
        self.iovecs.clear();
        Ok(done)
    }
}
