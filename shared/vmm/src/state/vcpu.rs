//! One vCPU's state as KVM holds it, read and written in the order KVM
//! needs: CPUID before anything that depends on it, the LAPIC before the
//! MSRs (the TSC deadline is armed against the LAPIC timer mode), the
//! events last (they may inject what the rest set up).

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs,
    kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES,
    KVM_MAX_MSR_ENTRIES,
};
use kvm_ioctls::VcpuFd;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// IA32_TSC_DEADLINE: written after every other MSR (and the LAPIC).
const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;
/// A TSC frequency this close to the saved one needs no scaling (the
/// tolerance Linux's own calibration has).
const TSC_TOLERANCE_PPM: u64 = 250;

/// Deserialized from a checksummed file; KVM checks each part again as
/// it takes it (restore's one unsafe call passes a whole kvm_xsave).
#[allow(clippy::unsafe_derive_deserialize)]
#[derive(Debug, Serialize, Deserialize)]
pub struct VcpuState {
    pub cpuid: Vec<kvm_cpuid_entry2>,
    pub mp_state: kvm_mp_state,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub xsave: kvm_xsave,
    pub xcrs: kvm_xcrs,
    pub debug_regs: kvm_debugregs,
    pub lapic: kvm_lapic_state,
    pub msrs: Vec<kvm_msr_entry>,
    pub events: kvm_vcpu_events,
    /// The guest's TSC frequency; None where KVM cannot say.
    pub tsc_khz: Option<u32>,
}

impl VcpuState {
    /// Reads the state of a vCPU that is not in KVM_RUN (and whose last
    /// port or MMIO exit was completed). `msr_list` is KVM's list of MSRs
    /// to save (KVM_GET_MSR_INDEX_LIST).
    pub fn save(fd: &VcpuFd, msr_list: &[u32]) -> Result<Self> {
        let cpuid = fd
            .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
            .map_err(Error::kvm("KVM_GET_CPUID2"))?
            .as_slice()
            .to_vec();
        Ok(Self {
            cpuid,
            mp_state: fd.get_mp_state().map_err(Error::kvm("KVM_GET_MP_STATE"))?,
            regs: fd.get_regs().map_err(Error::kvm("KVM_GET_REGS"))?,
            sregs: fd.get_sregs().map_err(Error::kvm("KVM_GET_SREGS"))?,
            xsave: fd.get_xsave().map_err(Error::kvm("KVM_GET_XSAVE"))?,
            xcrs: fd.get_xcrs().map_err(Error::kvm("KVM_GET_XCRS"))?,
            debug_regs: fd
                .get_debug_regs()
                .map_err(Error::kvm("KVM_GET_DEBUGREGS"))?,
            lapic: fd.get_lapic().map_err(Error::kvm("KVM_GET_LAPIC"))?,
            msrs: read_msrs(fd, msr_list)?,
            events: fd
                .get_vcpu_events()
                .map_err(Error::kvm("KVM_GET_VCPU_EVENTS"))?,
            tsc_khz: fd.get_tsc_khz().ok(),
        })
    }

    /// Writes the state into a vCPU that has not run yet.
    pub fn restore(&self, fd: &VcpuFd) -> Result<()> {
        if let Some(saved) = self.tsc_khz {
            set_tsc_khz(fd, saved)?;
        }
        let cpuid = CpuId::from_entries(&self.cpuid)
            .map_err(|_| Error::State(format!("{} CPUID entries", self.cpuid.len())))?;
        fd.set_cpuid2(&cpuid)
            .map_err(Error::kvm("KVM_SET_CPUID2"))?;
        fd.set_mp_state(self.mp_state)
            .map_err(Error::kvm("KVM_SET_MP_STATE"))?;
        fd.set_regs(&self.regs)
            .map_err(Error::kvm("KVM_SET_REGS"))?;
        fd.set_sregs(&self.sregs)
            .map_err(Error::kvm("KVM_SET_SREGS"))?;
        // SAFETY: the buffer is a whole kvm_xsave read from KVM_GET_XSAVE
        // of a vCPU with the same CPUID (set above), which is what the
        // ioctl expects; KVM checks the header it carries.
        unsafe { fd.set_xsave(&self.xsave) }.map_err(Error::kvm("KVM_SET_XSAVE"))?;
        fd.set_xcrs(&self.xcrs)
            .map_err(Error::kvm("KVM_SET_XCRS"))?;
        fd.set_debug_regs(&self.debug_regs)
            .map_err(Error::kvm("KVM_SET_DEBUGREGS"))?;
        fd.set_lapic(&self.lapic)
            .map_err(Error::kvm("KVM_SET_LAPIC"))?;
        write_msrs(fd, &self.msrs)?;
        fd.set_vcpu_events(&self.events)
            .map_err(Error::kvm("KVM_SET_VCPU_EVENTS"))?;
        Ok(())
    }
}

/// Sets the guest's TSC frequency when it differs from this host's by
/// more than the tolerance; a host that cannot scale it is an error (the
/// guest's clock would run fast or slow).
fn set_tsc_khz(fd: &VcpuFd, saved: u32) -> Result<()> {
    let Ok(here) = fd.get_tsc_khz() else {
        return Ok(());
    };
    let diff = u64::from(here.abs_diff(saved));
    if diff * 1_000_000 <= u64::from(saved) * TSC_TOLERANCE_PPM {
        return Ok(());
    }
    fd.set_tsc_khz(saved).map_err(|e| {
        Error::State(format!(
            "the guest's TSC runs at {saved} kHz, this host's at {here} kHz, and KVM \
             cannot scale it: {e}"
        ))
    })
}

/// Reads every MSR of `list` that KVM reads: KVM_GET_MSRS stops at the
/// first it cannot (some listed MSRs depend on CPUID bits the guest lacks),
/// so that one is skipped and the read goes on after it.
fn read_msrs(fd: &VcpuFd, list: &[u32]) -> Result<Vec<kvm_msr_entry>> {
    let mut out = Vec::with_capacity(list.len());
    let mut start = 0;
    while start < list.len() {
        let chunk = &list[start..list.len().min(start + KVM_MAX_MSR_ENTRIES)];
        let entries: Vec<kvm_msr_entry> = chunk
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..kvm_msr_entry::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries)
            .map_err(|_| Error::State(format!("{} MSRs", entries.len())))?;
        let n = fd.get_msrs(&mut msrs).map_err(Error::kvm("KVM_GET_MSRS"))?;
        out.extend_from_slice(&msrs.as_slice()[..n]);
        start += n;
        if n < chunk.len() {
            // The one at `n` is unreadable: skip it.
            start += 1;
        }
    }
    Ok(out)
}

/// Writes the saved MSRs back, the TSC deadline last; an MSR this KVM
/// refuses is named.
fn write_msrs(fd: &VcpuFd, saved: &[kvm_msr_entry]) -> Result<()> {
    let mut ordered: Vec<kvm_msr_entry> = saved
        .iter()
        .filter(|e| e.index != MSR_IA32_TSC_DEADLINE)
        .copied()
        .collect();
    ordered.extend(saved.iter().filter(|e| e.index == MSR_IA32_TSC_DEADLINE));
    for chunk in ordered.chunks(KVM_MAX_MSR_ENTRIES) {
        let msrs =
            Msrs::from_entries(chunk).map_err(|_| Error::State(format!("{} MSRs", chunk.len())))?;
        let n = fd.set_msrs(&msrs).map_err(Error::kvm("KVM_SET_MSRS"))?;
        if n < chunk.len() {
            return Err(Error::State(format!(
                "KVM refused MSR {:#x} of the saved state",
                chunk[n].index
            )));
        }
    }
    Ok(())
}
