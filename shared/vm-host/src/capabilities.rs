//! Dropping capabilities: a running VM needs none (it opened /dev/kvm and
//! everything else before), so a compromised VMM cannot use root's
//! privileges. Capabilities are per thread in Linux: drop them on the main
//! thread before any other thread exists, and every thread inherits the
//! empty sets.

use caps::{CapSet, Capability};

#[derive(Debug, thiserror::Error)]
#[error("dropping capabilities: {0}")]
pub struct CapsError(String);

/// Empties the bounding, inheritable, ambient, permitted and effective sets
/// of the calling thread.
pub fn drop_all() -> Result<(), CapsError> {
    let err = |e: caps::errors::CapsError| CapsError(e.to_string());
    // The bounding set first: dropping from it needs CAP_SETPCAP, which
    // the later steps remove.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).map_err(err)? {
        for cap in caps::all() {
            caps::drop(None, CapSet::Bounding, cap).map_err(err)?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(err)?;
    caps::clear(None, CapSet::Inheritable).map_err(err)?;
    caps::clear(None, CapSet::Effective).map_err(err)?;
    caps::clear(None, CapSet::Permitted).map_err(err)?;
    Ok(())
}

/// Whether the calling thread may configure the network (CAP_NET_ADMIN).
pub fn has_net_admin() -> bool {
    caps::has_cap(None, CapSet::Effective, Capability::CAP_NET_ADMIN).unwrap_or(false)
}

/// True when the calling thread has no effective capability left.
pub fn none_effective() -> bool {
    caps::read(None, CapSet::Effective).is_ok_and(|s| s.is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_thread_can_drop_everything() {
        std::thread::spawn(|| {
            super::drop_all().unwrap();
            assert!(super::none_effective());
            let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
            assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
        })
        .join()
        .unwrap();
    }
}
