//! One module per subcommand (vm-img's layout), and what they share:
//! the VM a command names, its scope (live, config) and the tables.

pub mod emulator;
pub mod host;
pub mod numa;
pub mod pin;
pub mod sched;

use crate::cli::Scope;
use anyhow::{anyhow, bail, Result};
use std::fmt::Write as _;
use vm_spec::{CpuList, CpuTune, VmSpec, VmState};

/// A VM as vm-pin sees it: its running state (if it runs) and definition.
pub(crate) struct Target {
    name: String,
    running: Option<VmState>,
    defined: Option<VmSpec>,
}

pub(crate) fn target(reference: &str) -> Result<Target> {
    let name = vm_control::vm_name(reference)?;
    let running = match vm_control::lookup(&name) {
        Ok(vm_control::Lookup::Running { state, .. }) => Some(state),
        Ok(_) => None,
        // A VM we may not read or ask belongs to someone else: say so.
        Err(e) if e.is_other_users() => {
            bail!("VM '{name}': permission denied (only its owner and root may place it)")
        }
        Err(e) => return Err(e.into()),
    };
    let defined = std::fs::read_to_string(vm_control::defined_spec_path(&name)?)
        .ok()
        .map(|t| VmSpec::from_json(&t).map_err(|e| anyhow!("definition of {name}: {e}")))
        .transpose()?;
    if running.is_none() && defined.is_none() {
        bail!("no VM named '{name}' is running or defined");
    }
    Ok(Target {
        name,
        running,
        defined,
    })
}

/// (live, config) as virsh decides them: neither flag = the running VM if
/// it runs, else its definition.
pub(crate) fn scope(t: &Target, s: Scope) -> Result<(bool, bool)> {
    let (live, config) = if s.live || s.config {
        (s.live, s.config)
    } else {
        (t.running.is_some(), t.running.is_none())
    };
    if live && t.running.is_none() {
        bail!("VM '{}' is not running (--live)", t.name);
    }
    if config && t.defined.is_none() {
        bail!(
            "VM '{}' was started from a file and never defined: there is no definition to change (vm-run define)",
            t.name
        );
    }
    Ok((live, config))
}

pub(crate) fn parse_list(text: &str) -> Result<CpuList> {
    let list: CpuList = text
        .parse()
        .map_err(|e| anyhow!("invalid CPU list '{text}': {e}"))?;
    vm_host::affinity::check_online(&list)
        .map_err(|m| anyhow!("invalid CPU list '{text}': {m}"))?;
    Ok(list)
}

/// A pin from the definition, or every online CPU when there is none.
pub(crate) fn pinned(spec: Option<&VmSpec>, f: impl Fn(&CpuTune) -> Option<CpuList>) -> String {
    spec.and_then(|s| s.cputune.as_ref())
        .and_then(f)
        .map(|l| l.to_string())
        .or_else(|| vm_host::affinity::online_cpus().ok().map(|l| l.to_string()))
        .unwrap_or_default()
}

pub(crate) fn print_table(
    head: &[&str; 2],
    rows: &[(String, String)],
    json: bool,
    to_json: impl Fn(&(String, String)) -> serde_json::Value,
) {
    if json {
        let v: Vec<_> = rows.iter().map(to_json).collect();
        println!("{}", serde_json::Value::Array(v));
        return;
    }
    let mut out = String::new();
    let w = head[0].len().max(6);
    let _ = writeln!(out, " {:<w$} {}", head[0], head[1]);
    let _ = writeln!(out, "{}", "-".repeat(16 + w));
    for (a, b) in rows {
        let _ = writeln!(out, " {a:<w$} {b}");
    }
    print!("{out}");
}
