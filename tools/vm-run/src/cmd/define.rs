//! `vm-run define`, `undefine` and `edit` (virsh define, undefine, edit).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use vm_spec::VmSpec;

use crate::output;

pub fn define(reference: &str, json: bool) -> Result<i32> {
    let spec = crate::resolve::load_spec(reference)?;
    vm_control::save_definition(&spec)?;
    if output::json_wanted(json) {
        println!("{}", serde_json::to_string(&spec)?);
    } else {
        println!("VM {} defined from {reference}", spec.name);
    }
    Ok(0)
}

pub fn undefine(vm: &str) -> Result<i32> {
    let name = crate::resolve::vm_name(vm)?;
    let p = vm_control::defined_spec_path(&name)?;
    std::fs::remove_file(&p).map_err(|_| anyhow!("no VM named '{name}' is defined"))?;
    println!("VM {name} undefined");
    Ok(0)
}

pub fn edit(vm: &str) -> Result<i32> {
    let name = crate::resolve::vm_name(vm)?;
    let p = vm_control::defined_spec_path(&name)?;
    let original =
        std::fs::read_to_string(&p).map_err(|_| anyhow!("no VM named '{name}' is defined"))?;
    let tmp = std::env::temp_dir().join(format!("vm-run-edit-{name}-{}.json", std::process::id()));
    std::fs::write(&tmp, &original)?;
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&tmp)
        .status()
        .with_context(|| format!("running {editor}"))?;
    let edited = std::fs::read_to_string(&tmp)?;
    let _ = std::fs::remove_file(&tmp);
    if !status.success() {
        bail!("{editor} failed; {} is unchanged", p.display());
    }
    if edited == original {
        println!("VM {name} unchanged");
        return Ok(0);
    }
    let mut spec = VmSpec::from_json(&edited).map_err(|e| anyhow!("not saved: {e}"))?;
    if spec.name.as_str() != name {
        bail!("not saved: the name cannot change in edit (define the VM anew)");
    }
    spec.resolve_paths(Path::new("/"));
    vm_control::save_definition(&spec)?;
    println!("VM {name} saved");
    Ok(0)
}
