//! Host tuning the guide describes: KVM's halt polling and the CPUs
//! unbound kworkers may run on (to keep them off pinned vCPUs).

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use vm_spec::CpuList;

use crate::cli::HostCommand;

const HALT_POLL: &str = "/sys/module/kvm/parameters/halt_poll_ns";
const KWORKER_MASK: &str = "/sys/devices/virtual/workqueue/cpumask";

pub fn run(cmd: &HostCommand, json: bool) -> Result<()> {
    match cmd {
        HostCommand::HaltPoll { ns, dry_run } => knob(
            Path::new(HALT_POLL),
            "halt_poll_ns",
            ns.map(|n| n.to_string()),
            *dry_run,
            json,
        ),
        HostCommand::KworkerMask { cpulist, dry_run } => {
            let value = cpulist
                .as_deref()
                .map(|t| -> Result<String> {
                    let list: CpuList = t
                        .parse()
                        .map_err(|e| anyhow!("invalid CPU list '{t}': {e}"))?;
                    vm_host::affinity::check_online(&list)
                        .map_err(|m| anyhow!("invalid CPU list '{t}': {m}"))?;
                    Ok(hex_mask(&list))
                })
                .transpose()?;
            knob(
                Path::new(KWORKER_MASK),
                "kworker_cpumask",
                value,
                *dry_run,
                json,
            )
        }
    }
}

/// The kernel's cpumask format: hex words of 32 CPUs, most significant
/// first, separated by commas.
fn hex_mask(list: &CpuList) -> String {
    let words = list.max().map_or(1, |m| m as usize / 32 + 1);
    let mut w = vec![0u32; words];
    for c in list.iter() {
        w[c as usize / 32] |= 1 << (c % 32);
    }
    w.iter()
        .rev()
        .map(|x| format!("{x:x}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn knob(path: &Path, name: &str, value: Option<String>, dry_run: bool, json: bool) -> Result<()> {
    let current = std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .with_context(|| format!("{} (is the module loaded?)", path.display()))?;
    let Some(v) = value else {
        if json {
            println!("{}", serde_json::json!({ name: current }));
        } else {
            println!("{name}: {current}");
        }
        return Ok(());
    };
    if dry_run {
        println!("would write {v} to {} (now {current})", path.display());
        return Ok(());
    }
    std::fs::write(path, &v).with_context(|| format!("writing {v} to {}", path.display()))?;
    let now = std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if json {
        println!("{}", serde_json::json!({ name: now }));
    } else {
        println!("{name}: {now}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn masks_in_the_kernels_format() {
        let l = |s: &str| s.parse().unwrap();
        assert_eq!(super::hex_mask(&l("0-1")), "3");
        assert_eq!(super::hex_mask(&l("0,33")), "2,1");
        assert_eq!(super::hex_mask(&l("4-7")), "f0");
    }
}
