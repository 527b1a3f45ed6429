//! TAP devices through /dev/net/tun: persistent ones for vm-net (which
//! exits), and the queues a VM reads and writes frames on.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const TUNSETOWNER: libc::c_ulong = 0x4004_54cc;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const TUNSETQUEUE: libc::c_ulong = 0x4004_54d9;
const IFF_ATTACH_QUEUE: libc::c_short = 0x0200;
const IFF_DETACH_QUEUE: libc::c_short = 0x0400;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;

/// Offload bits for TUNSETOFFLOAD.
pub const TUN_F_CSUM: u32 = 0x01;
pub const TUN_F_TSO4: u32 = 0x02;
pub const TUN_F_TSO6: u32 = 0x04;
pub const TUN_F_TSO_ECN: u32 = 0x08;
pub const TUN_F_UFO: u32 = 0x10;

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error(transparent)]
    Name(#[from] vm_spec::IfNameError),
    #[error("tap {name}: {source}")]
    Io {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("tap {0} is in use by another process")]
    Busy(String),
}

/// How a tap is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapFlags {
    /// Frames carry a virtio_net_hdr (checksum and segmentation offloads).
    pub vnet_hdr: bool,
    /// More than one queue (one descriptor each).
    pub multi_queue: bool,
}

fn ifreq(name: &str, flags: libc::c_short) -> Result<IfReq, TapError> {
    // Our own `vnet%d` template is the one `%` allowed: check the names it
    // stands for.
    vm_spec::check_ifname(&name.replacen("%d", "0", 1))?;
    let mut r = IfReq {
        name: [0; 16],
        flags,
        _pad: [0; 22],
    };
    r.name[..name.len()].copy_from_slice(name.as_bytes());
    Ok(r)
}

fn ioctl(f: &File, req: libc::c_ulong, arg: libc::c_ulong, name: &str) -> Result<(), TapError> {
    // SAFETY: the tun ioctls used with an integer argument read only that
    // integer; the fd is open.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), req, arg) };
    if r < 0 {
        return Err(TapError::Io {
            name: name.into(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Opens (creating it if needed) tap `name`: one descriptor per queue.
/// A name with `%d` (`vnet%d`) makes the kernel pick a free one; the name
/// it picked comes back.
pub fn open(name: &str, queues: usize, flags: TapFlags) -> Result<(String, Vec<File>), TapError> {
    let mut f = IFF_TAP | IFF_NO_PI;
    if flags.vnet_hdr {
        f |= IFF_VNET_HDR;
    }
    if flags.multi_queue {
        f |= IFF_MULTI_QUEUE;
    }
    let mut out = Vec::new();
    let mut name = name.to_string();
    for _ in 0..queues.max(1) {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .map_err(|source| TapError::Io {
                name: name.clone(),
                source,
            })?;
        let mut req = ifreq(&name, f)?;
        // SAFETY: TUNSETIFF reads and writes the ifreq we pass, which lives
        // for the call.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &raw mut req) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::EBUSY) {
                TapError::Busy(name)
            } else {
                TapError::Io { name, source: e }
            });
        }
        let end = req.name.iter().position(|&b| b == 0).unwrap_or(16);
        name = String::from_utf8_lossy(&req.name[..end]).into_owned();
        out.push(file);
    }
    Ok((name, out))
}

/// Makes tap `name` persistent (it outlives this process), owned by `owner`.
pub fn create_persistent(name: &str, owner: Option<u32>, flags: TapFlags) -> Result<(), TapError> {
    let (_, files) = open(name, 1, flags)?;
    let f = &files[0];
    if let Some(uid) = owner {
        ioctl(f, TUNSETOWNER, libc::c_ulong::from(uid), name)?;
    }
    ioctl(f, TUNSETPERSIST, 1, name)
}

/// Attaches or detaches one queue of a multiqueue tap: the kernel spreads
/// frames over attached queues only.
pub fn set_queue_enabled(f: &File, name: &str, enabled: bool) -> Result<(), TapError> {
    let mut req = IfReq {
        name: [0; 16],
        flags: if enabled {
            IFF_ATTACH_QUEUE
        } else {
            IFF_DETACH_QUEUE
        },
        _pad: [0; 22],
    };
    // SAFETY: TUNSETQUEUE reads the ifreq we pass, which lives for the call.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), TUNSETQUEUE, &raw mut req) };
    if r < 0 {
        return Err(TapError::Io {
            name: name.into(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Tells the kernel which offloads the reader of `f` handles, and the size
/// of the virtio_net_hdr in front of each frame.
pub fn set_offloads(f: &File, name: &str, offloads: u32, hdr_len: i32) -> Result<(), TapError> {
    let mut sz = hdr_len;
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which
    // lives for the call.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), TUNSETVNETHDRSZ, &raw mut sz) };
    if r < 0 {
        return Err(TapError::Io {
            name: name.into(),
            source: io::Error::last_os_error(),
        });
    }
    ioctl(f, TUNSETOFFLOAD, libc::c_ulong::from(offloads), name)
}
