//! What a live migration needs from a running machine: the pages written
//! since the last look (KVM's dirty log for the vCPUs' writes, the
//! devices' own log for theirs), and where every virtio queue's rings lie
//! (they are copied whole in the final pause).

use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::VmFd;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

use std::sync::Arc;

use super::Vm;
use crate::dirty::DirtyLog;
use crate::layout::ram_ranges;
use crate::memory::GuestMemory;
use crate::state::stream::CpuidLeaf;
use crate::{Error, Result};

/// Registers every RAM region with KVM as slot 0, 1, ... with `flags`
/// (again, to turn dirty logging on or off).
pub(super) fn register_slots(vm_fd: &VmFd, mem: &GuestMemory, flags: u32) -> Result<()> {
    for (slot, region) in mem.iter().enumerate() {
        let host = region
            .get_host_address(MemoryRegionAddress(0))
            .map_err(|e| Error::Memory(e.to_string()))?;
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
            flags,
        };
        // SAFETY: the region is a live mapping of `len` bytes owned by
        // `mem`, which the Vm keeps for as long as the VM fd exists.
        unsafe { vm_fd.set_user_memory_region(r) }
            .map_err(Error::kvm("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(())
}

/// Refuses received memory whose regions are not the ones a spec of
/// `size` bytes gets.
pub(super) fn check_layout(mem: &GuestMemory, size: u64) -> Result<()> {
    let have: Vec<(u64, u64)> = mem.iter().map(|r| (r.start_addr().0, r.len())).collect();
    if have != ram_ranges(size) {
        return Err(Error::State(format!(
            "the received memory's layout {have:x?} is not that of {size} bytes"
        )));
    }
    Ok(())
}

/// A migration's view of a running machine's memory: which pages were
/// written since it last looked. It lives on the migration's own thread;
/// the VM's descriptor and memory are shared, not copied.
#[derive(Debug)]
pub struct DirtyTracker {
    vm: Arc<VmFd>,
    mem: GuestMemory,
    dirty: Arc<DirtyLog>,
}

impl DirtyTracker {
    /// Starts recording the pages written from now on: KVM's log on every
    /// slot, and the devices' log.
    pub fn start(&self) -> Result<()> {
        self.dirty.set(true);
        register_slots(&self.vm, &self.mem, KVM_MEM_LOG_DIRTY_PAGES)
    }

    /// Stops recording (a migration ended, either way).
    pub fn stop(&self) -> Result<()> {
        self.dirty.set(false);
        register_slots(&self.vm, &self.mem, 0)
    }

    /// The pages written since the start or the last call, one bitmap per
    /// RAM region (bit b of word w: page 64 w + b of the region), the
    /// vCPUs' and the devices' together.
    pub fn pages(&self) -> Result<Vec<Vec<u64>>> {
        self.mem
            .iter()
            .enumerate()
            .map(|(slot, region)| {
                let kvm = self
                    .vm
                    .get_dirty_log(slot as u32, region.len() as usize)
                    .map_err(Error::kvm("KVM_GET_DIRTY_LOG"))?;
                let dev = self.dirty.take(slot);
                Ok(kvm
                    .iter()
                    .zip(dev.iter().chain(std::iter::repeat(&0)))
                    .map(|(a, b)| a | b)
                    .collect())
            })
            .collect()
    }

    pub fn memory(&self) -> &GuestMemory {
        &self.mem
    }
}

impl Vm {
    /// Holds the vCPUs back (or lets them go) without touching the
    /// devices: a migration's auto-converge runs the guest part of the
    /// time only, so it dirties memory more slowly than the copy goes.
    pub fn hold_vcpus(&self, hold: bool) {
        let w = if hold {
            crate::vcpu::Wanted::Pause
        } else {
            crate::vcpu::Wanted::Run
        };
        for v in &self.vcpus {
            v.set_wanted(w);
        }
    }

    /// A tracker of the pages written, for a migration's thread.
    pub fn dirty_tracker(&self) -> DirtyTracker {
        DirtyTracker {
            vm: Arc::clone(&self.machine),
            mem: self.mem.clone(),
            dirty: Arc::clone(&self.dirty),
        }
    }

    /// The CPUID the guest was given, as a migration's hello carries it.
    pub fn guest_cpuid(&self) -> Vec<CpuidLeaf> {
        self.guest_cpuid
            .iter()
            .map(|e| CpuidLeaf {
                function: e.function,
                index: e.index,
                eax: e.eax,
                ebx: e.ebx,
                ecx: e.ecx,
                edx: e.edx,
            })
            .collect()
    }

    /// Where the rings of every ready virtio queue lie, as (guest address,
    /// length): the descriptor table, the available ring and the used
    /// ring. The device writes the used ring; a migration copies all of
    /// them in its final pause rather than track each write.
    pub fn queue_rings(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for (_, t) in &self.registry {
            for q in crate::devices::lock(t).state().queues {
                if !q.ready {
                    continue;
                }
                let n = u64::from(q.size);
                out.push((q.desc_table, 16 * n));
                out.push((q.avail_ring, 6 + 2 * n));
                out.push((q.used_ring, 6 + 8 * n));
            }
        }
        out
    }
}
