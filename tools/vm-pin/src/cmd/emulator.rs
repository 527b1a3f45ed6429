//! `vm-pin emulator` (virsh emulatorpin).

use anyhow::{Context, Result};
use vm_spec::CpuTune;

use super::{parse_list, pinned, print_table, scope, target};
use crate::cli::Scope;

pub(crate) fn emulator_cmd(vm: &str, list: Option<&str>, s: Scope, json: bool) -> Result<()> {
    let t = target(vm)?;
    let (live, config) = scope(&t, s)?;
    if let Some(text) = list {
        let list = parse_list(text)?;
        if live {
            let pid = t.running.as_ref().expect("checked").pid;
            vm_host::affinity::set(pid, &list).context("pinning the emulator thread")?;
        }
        if config {
            let mut d = t.defined.clone().expect("checked");
            d.cputune.get_or_insert_with(CpuTune::default).emulatorpin = Some(list);
            vm_control::save_definition(&d)?;
        }
    } else {
        let cpus = if live {
            vm_host::affinity::get(t.running.as_ref().expect("checked").pid)?.to_string()
        } else {
            pinned(t.defined.as_ref(), |c| c.emulatorpin.clone())
        };
        print_table(
            &["", "CPU Affinity"],
            &[("*".into(), cpus)],
            json,
            |(_, c)| serde_json::json!({"emulator": c}),
        );
    }
    Ok(())
}
