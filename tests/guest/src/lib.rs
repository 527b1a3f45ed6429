//! Test support for KVM tests: the test guest's path, a lock that runs
//! guests one at a time (each takes a whole core under emulation), and the
//! /dev/kvm check.
//!
//! The guest is a PVH ELF built from `guest/` at build time. Its command
//! line picks a mode (`mode=hello`, `crash`, `reboot`, `heartbeat`,
//! `cli-hlt`, and the `blk-*` virtio-blk modes); see `guest/main.c` and `guest/blk.c`.

pub mod fuzz;
pub mod hostfs;
pub mod netns;
pub mod rundir;

use std::fs::File;
use std::os::fd::AsRawFd;

/// Absolute path of the built guest.
pub const GUEST_ELF: &str = env!("TEST_GUEST_ELF");

/// A second guest with a plain 64-bit ELF entry (no PVH note), for the
/// VMM's long-mode boot path: it prints one line and ends.
pub const GUEST64_ELF: &str = env!("TEST_GUEST64_ELF");

/// Held while a test runs guests; dropping it (closing the file) lets the
/// next test go.
#[derive(Debug)]
pub struct KvmLock {
    _file: File,
}

/// Waits for the machine-wide KVM test lock (an flock on a file in the
/// temp folder, so separate test binaries take turns too).
pub fn kvm_lock() -> KvmLock {
    let path = std::env::temp_dir().join("vmtools-kvm-tests.lock");
    let f = File::create(path).expect("create the KVM test lock file");
    // SAFETY: flock on a descriptor we own; it blocks until the lock is ours.
    let r = unsafe { libc_flock(f.as_raw_fd()) };
    assert_eq!(r, 0, "flock on the KVM test lock failed");
    KvmLock { _file: f }
}

extern "C" {
    fn flock(fd: i32, op: i32) -> i32;
}

unsafe fn libc_flock(fd: i32) -> i32 {
    const LOCK_EX: i32 = 2;
    // SAFETY: the caller passes an open descriptor.
    unsafe { flock(fd, LOCK_EX) }
}

/// Whether a test can use `what`: when `present` is false the test prints
/// SKIP and passes, unless VMTOOLS_REQUIRE names `what` (CI), where it
/// fails instead of passing as a skip.
pub fn available(what: &str, present: bool) -> bool {
    if !present {
        let required = std::env::var("VMTOOLS_REQUIRE").unwrap_or_default();
        assert!(
            !required.split(',').any(|r| r.trim() == what),
            "{what} is required (VMTOOLS_REQUIRE) but not usable here"
        );
        eprintln!("SKIP: {what} is not usable here");
    }
    present
}

/// True when /dev/kvm opens (see `available`).
pub fn have_kvm() -> bool {
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    available("kvm", ok)
}

/// True when `tool` runs (`tool --version`); `name` is its VMTOOLS_REQUIRE word.
pub fn have_tool(name: &str, tool: &str) -> bool {
    let ok = std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    available(name, ok)
}

/// The checksum the guest's blk modes print: FNV-1a over little-endian
/// 32-bit words.
pub fn fnv(data: &[u8]) -> u32 {
    data.chunks_exact(4).fold(0x811c_9dc5, |h, w| {
        (h ^ u32::from_le_bytes([w[0], w[1], w[2], w[3]])).wrapping_mul(16_777_619)
    })
}

/// The data the guest's `blk-write` (and `blk-crash`) modes write: word i
/// of the buffer is `seed ^ (i * 2654435761)`.
pub fn pattern(seed: u32, len: usize) -> Vec<u8> {
    (0..len / 4)
        .flat_map(|i| (seed ^ (i as u32).wrapping_mul(2_654_435_761)).to_le_bytes())
        .collect()
}

/// CRC-32 (IEEE), bit by bit: the tests' own, independent of the crc32fast
/// the saved-VM file is written with (a test that forges a header needs it).
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &x in data {
        c ^= u32::from(x);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32_check_value() {
        assert_eq!(super::crc32(b"123456789"), 0xcbf4_3926);
    }
}
