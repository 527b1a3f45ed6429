//! `vm-pin vcpu` and `vm-pin iothread` (virsh vcpupin and iothreadpin).

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use vm_spec::{CpuList, CpuTune, VmSpec, VmState};

use super::{parse_list, pinned, print_table, scope, target};
use crate::cli::Scope;

/// The per-thread pins: vCPUs (numbered from 0) and iothreads (from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Vcpu,
    Iothread,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Self::Vcpu => "vCPU",
            Self::Iothread => "iothread",
        }
    }
    /// The valid numbers for `spec`.
    fn ids(self, spec: &VmSpec) -> std::ops::Range<u32> {
        match self {
            Self::Vcpu => 0..spec.vcpus,
            Self::Iothread => 1..spec.iothreads + 1,
        }
    }
    /// The thread that runs vCPU or iothread `id`. state.json is a file,
    /// so the id it lists is taken only if the kernel says it is a thread
    /// of the VM's (verified) process with that job's name.
    fn tid(self, st: &VmState, id: u32) -> Option<u32> {
        let (tid, name) = match self {
            Self::Vcpu => (st.vcpu_threads.get(id as usize)?, format!("vcpu{id}")),
            Self::Iothread => (
                st.iothread_threads.get((id as usize).checked_sub(1)?)?,
                format!("iothread{id}"),
            ),
        };
        let comm = std::fs::read_to_string(format!("/proc/{}/task/{tid}/comm", st.pid)).ok()?;
        (comm.trim_end() == name).then_some(*tid)
    }
    fn pins(self, t: &CpuTune) -> &BTreeMap<u32, CpuList> {
        match self {
            Self::Vcpu => &t.vcpupin,
            Self::Iothread => &t.iothreadpin,
        }
    }
    fn pins_mut(self, t: &mut CpuTune) -> &mut BTreeMap<u32, CpuList> {
        match self {
            Self::Vcpu => &mut t.vcpupin,
            Self::Iothread => &mut t.iothreadpin,
        }
    }
}

/// vcpupin / iothreadpin: print the table, or pin one thread.
pub(crate) fn pin_cmd(
    kind: Kind,
    vm: &str,
    id: Option<u32>,
    list: Option<&str>,
    s: Scope,
    json: bool,
) -> Result<()> {
    let t = target(vm)?;
    let spec = t
        .running
        .as_ref()
        .map(|r| &r.spec)
        .or(t.defined.as_ref())
        .expect("one exists");
    let ids = kind.ids(spec);
    let what = kind.label();
    if ids.is_empty() {
        bail!("VM '{}' has no {what}s", t.name);
    }
    match (id, list) {
        (Some(v), Some(text)) => {
            if !ids.contains(&v) {
                bail!(
                    "{what} {v} does not exist (the VM has {}-{})",
                    ids.start,
                    ids.end - 1
                );
            }
            let list = parse_list(text)?;
            let (live, config) = scope(&t, s)?;
            if live {
                let st = t.running.as_ref().expect("checked");
                let tid = kind
                    .tid(st, v)
                    .ok_or_else(|| anyhow!("no thread for {what} {v}"))?;
                vm_host::affinity::set(tid, &list)
                    .with_context(|| format!("pinning {what} {v}"))?;
            }
            if config {
                let mut d = t.defined.clone().expect("checked");
                kind.pins_mut(d.cputune.get_or_insert_with(CpuTune::default))
                    .insert(v, list);
                vm_control::save_definition(&d)?;
            }
            Ok(())
        }
        (None, Some(_)) => bail!("give both a {what} number and a CPU list"),
        (v, None) => {
            let (live, _) = scope(&t, s)?;
            let mut rows = Vec::new();
            for i in ids {
                if v.is_some_and(|v| v != i) {
                    continue;
                }
                let cpus = if live {
                    let st = t.running.as_ref().expect("checked");
                    let tid = kind
                        .tid(st, i)
                        .ok_or_else(|| anyhow!("no thread for {what} {i}"))?;
                    vm_host::affinity::get(tid)?.to_string()
                } else {
                    pinned(t.defined.as_ref(), |c| kind.pins(c).get(&i).cloned())
                };
                rows.push((i.to_string(), cpus));
            }
            let (head, key) = match kind {
                Kind::Vcpu => ("VCPU", "vcpu"),
                Kind::Iothread => ("IOThread ID", "iothread"),
            };
            print_table(
                &[head, "CPU Affinity"],
                &rows,
                json,
                |(v, c)| serde_json::json!({key: v.parse::<u32>().unwrap_or(0), "cpus": c}),
            );
            Ok(())
        }
    }
}
