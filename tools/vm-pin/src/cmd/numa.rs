//! `vm-pin numa` (virsh numatune).

use anyhow::{anyhow, bail, Result};
use vm_host::cgroup::VmCgroup;
use vm_spec::CpuList;

use super::{scope, target};
use crate::cli::Scope;

pub(crate) fn numa_cmd(
    vm: &str,
    mode: Option<&str>,
    nodeset: Option<&str>,
    s: Scope,
    json: bool,
) -> Result<()> {
    let t = target(vm)?;
    let (live, config) = scope(&t, s)?;
    let mode = mode
        .map(|m| -> Result<vm_spec::NumaMode> {
            serde_json::from_value(serde_json::json!(m))
                .map_err(|_| anyhow!("invalid NUMA mode '{m}' (strict, preferred, interleave)"))
        })
        .transpose()?;
    let nodes = nodeset
        .map(|n| -> Result<CpuList> {
            let l: CpuList = n
                .parse()
                .map_err(|e| anyhow!("invalid nodeset '{n}': {e}"))?;
            vm_host::affinity::check_nodes_online(&l)
                .map_err(|m| anyhow!("invalid nodeset '{n}': {m}"))?;
            Ok(l)
        })
        .transpose()?;
    if mode.is_none() && nodes.is_none() {
        let spec = if live {
            t.running.as_ref().map(|r| &r.spec)
        } else {
            t.defined.as_ref()
        };
        let nt = spec.and_then(|s| s.numatune.as_ref());
        let mode = nt
            .and_then(|n| serde_json::to_value(n.mode).ok())
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "-".into());
        let nodeset = if live {
            let st = t.running.as_ref().expect("checked");
            VmCgroup::find(&t.name, st.pid)
                .and_then(|cg| cg.mems().ok())
                .unwrap_or_else(|| "-".into())
        } else {
            nt.map_or("-".to_string(), |n| n.nodeset.to_string())
        };
        if json {
            println!(
                "{}",
                serde_json::json!({"numa_mode": mode, "numa_nodeset": nodeset})
            );
        } else {
            println!(
                "{:<13}: {mode}\n{:<13}: {nodeset}",
                "numa_mode", "numa_nodeset"
            );
        }
        return Ok(());
    }
    if live {
        if mode.is_some() {
            bail!("the NUMA mode cannot change while the VM runs (use --config)");
        }
        let st = t.running.as_ref().expect("checked");
        let cg = VmCgroup::find(&t.name, st.pid)
            .ok_or_else(|| anyhow!("VM '{}' has no cgroup (see its vm.log)", t.name))?;
        cg.set_mems(&nodes.clone().expect("checked above").to_string())?;
    }
    if config {
        let mut d = t.defined.clone().expect("checked");
        let cur = d.numatune.take();
        let mode = mode
            .or(cur.as_ref().map(|c| c.mode))
            .unwrap_or(vm_spec::NumaMode::Strict);
        let nodeset = nodes
            .or(cur.map(|c| c.nodeset))
            .ok_or_else(|| anyhow!("give --nodeset for a VM without numatune"))?;
        d.numatune = Some(vm_spec::NumaTune { mode, nodeset });
        vm_control::save_definition(&d)?;
    }
    Ok(())
}
