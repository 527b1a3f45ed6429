//! Where a VM's threads run: its cgroups (made, entered, tuned, and
//! removed after it exits), the spec's pinning, and its guest NUMA cells.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use vm_control::Liveness;
use vm_host::cgroup::{Hierarchy, VmCgroup};
use vm_spec::VmSpec;
use vmm::threads::{ThreadHook, ThreadRole};
use vmm::Vm;

use crate::timefmt::log;

/// The machine's threads: vCPUs in order, iothreads with their numbers.
#[derive(Debug, Clone)]
pub(crate) struct Threads {
    vcpus: Vec<u32>,
    iothreads: Vec<(u32, u32)>,
}

impl Threads {
    pub(crate) fn of(vm: &Vm) -> Self {
        Self {
            vcpus: vm.vcpu_tids(),
            iothreads: vm.iothread_tids(),
        }
    }
}

/// Removes the groups of VMs whose process is gone: one killed outright
/// (SIGKILL) could not remove its own.
pub(crate) fn remove_stale_groups() {
    if let Some(h) = Hierarchy::detect() {
        vm_host::cgroup::remove_stale(&h, |pid| Liveness::of(pid) == Liveness::Alive);
    }
}

/// Makes the VM's cgroup (`emulator`, `vcpuN` and `iothreadN` groups,
/// after removing dead VMs' groups), named for this process.
pub(crate) fn make_cgroup(
    h: Hierarchy,
    spec: &VmSpec,
) -> Result<VmCgroup, vm_host::cgroup::CgroupError> {
    vm_host::cgroup::remove_stale(&h, |pid| Liveness::of(pid) == Liveness::Alive);
    let vcpus = u8::try_from(spec.vcpus).unwrap_or(u8::MAX);
    VmCgroup::create(
        h,
        &spec.name.to_string(),
        std::process::id(),
        vcpus,
        spec.iothreads,
    )
}

/// Moves this process into the VM's cgroup (made here, or by the
/// launcher that started this process in it: `born`) with its main
/// thread in `emulator`, and applies the spec's shares and quotas.
/// Without cgroups (or the right to make them) the VM runs unplaced, with
/// a line in its log.
pub(crate) fn enter_cgroup(spec: &VmSpec, born: Option<VmCgroup>) -> Option<Arc<VmCgroup>> {
    let vcpus = u8::try_from(spec.vcpus).unwrap_or(u8::MAX);
    let made = match born {
        Some(cg) => Ok(cg),
        None => make_cgroup(Hierarchy::detect()?, spec),
    }
    .and_then(|cg| cg.enter().map(|()| cg));
    match made {
        Ok(cg) => {
            if let Some(t) = &spec.cputune {
                apply_cpu_tuning(&cg, t, vcpus.into());
            }
            Some(Arc::new(cg))
        }
        Err(e) => {
            log(&format!("running without a cgroup: {e}"));
            None
        }
    }
}

/// The spec's guest NUMA cells as ACPI nodes, in id order (the spec
/// checks ids are 0..N-1).
pub(crate) fn numa_nodes(spec: &VmSpec) -> Vec<vmm::acpi::NumaNode> {
    let Some(cpu) = &spec.cpu else {
        return Vec::new();
    };
    let mut cells: Vec<&vm_spec::NumaCell> = cpu.numa.iter().collect();
    cells.sort_by_key(|c| c.id);
    cells
        .iter()
        .map(|c| vmm::acpi::NumaNode {
            cpus: c.cpus.iter().map(|v| v as u8).collect(),
            memory: c.memory.bytes(),
            distances: cells.iter().map(|o| c.distance_to(o.id)).collect(),
        })
        .collect()
}

/// The VM's groups go once its process has exited: the teardown child
/// leaves and removes them (the next start's sweep is the fallback for a
/// VM that was killed).
pub(crate) fn after_exit(cgroup: Option<&VmCgroup>) -> vmm::teardown::AfterExit {
    use std::os::unix::ffi::OsStrExt;
    let Some(cg) = cgroup else {
        return vmm::teardown::AfterExit::default();
    };
    let (leave, remove) = cg.exit_plan();
    let c = |paths: Vec<PathBuf>| {
        paths
            .into_iter()
            .filter_map(|p| std::ffi::CString::new(p.as_os_str().as_bytes()).ok())
            .collect()
    };
    vmm::teardown::AfterExit {
        leave: c(leave),
        remove: c(remove),
    }
}

/// Each vCPU thread and iothread moves itself into its group as it starts.
pub(crate) fn placement_hook(cg: Arc<VmCgroup>) -> ThreadHook {
    ThreadHook(Arc::new(move |role: ThreadRole| {
        let group = role.name();
        if let Err(e) = cg.attach_self(&group) {
            log(&format!("{group} stays outside its cgroup: {e}"));
        }
    }))
}

/// The spec's vcpupin, iothreadpin and emulatorpin, checked against the
/// host's online CPUs (a spec may be written for a bigger host: it fails
/// here, at start).
pub(crate) fn apply_affinity(spec: &VmSpec, tids: &Threads) -> Result<()> {
    let Some(t) = &spec.cputune else {
        return Ok(());
    };
    for (&vcpu, list) in &t.vcpupin {
        vm_host::affinity::check_online(list)
            .map_err(|m| anyhow!("cputune.vcpupin.{vcpu}: {m}"))?;
        let tid = tids.vcpus[vcpu as usize];
        vm_host::affinity::set(tid, list).with_context(|| format!("pinning vcpu{vcpu}"))?;
    }
    for (&n, list) in &t.iothreadpin {
        vm_host::affinity::check_online(list)
            .map_err(|m| anyhow!("cputune.iothreadpin.{n}: {m}"))?;
        if let Some(&(_, tid)) = tids.iothreads.iter().find(|(id, _)| *id == n) {
            vm_host::affinity::set(tid, list).with_context(|| format!("pinning iothread{n}"))?;
        }
    }
    if let Some(list) = &t.emulatorpin {
        vm_host::affinity::check_online(list).map_err(|m| anyhow!("cputune.emulatorpin: {m}"))?;
        vm_host::affinity::set(std::process::id(), list).context("pinning the emulator thread")?;
    }
    Ok(())
}

/// The spec's shares and CPU bandwidth on the VM's cgroups.
fn apply_cpu_tuning(cg: &VmCgroup, t: &vm_spec::CpuTune, vcpus: usize) {
    use vm_host::cgroup::CpuTuning;
    let mut results = Vec::new();
    if t.shares.is_some() {
        results.push(cg.set_cpu_tuning(
            None,
            CpuTuning {
                shares: t.shares,
                ..CpuTuning::default()
            },
        ));
    }
    let vcpu = CpuTuning {
        shares: None,
        period: t.vcpu_period,
        quota: t.vcpu_quota,
    };
    if vcpu != CpuTuning::default() {
        for i in 0..vcpus {
            results.push(cg.set_cpu_tuning(Some(&format!("vcpu{i}")), vcpu));
        }
    }
    let emu = CpuTuning {
        shares: None,
        period: t.emulator_period,
        quota: t.emulator_quota,
    };
    if emu != CpuTuning::default() {
        results.push(cg.set_cpu_tuning(Some("emulator"), emu));
    }
    for r in results {
        if let Err(e) = r {
            log(&format!("CPU tuning not applied: {e}"));
        }
    }
}
