//! Naming a VM: its name, the path of its spec or state file, or `-` for a
//! JSON document (spec or state) on stdin.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use vm_spec::{VmName, VmSpec};

/// A spec with every relative path made absolute.
pub fn load_spec(reference: &str) -> Result<VmSpec> {
    let (text, base, origin) = if reference == "-" {
        let t = vm_spec::read_document_from(std::io::stdin().lock())
            .context("reading the spec from stdin")?;
        (t, std::env::current_dir()?, "stdin".to_string())
    } else if vm_control::looks_like_path(reference) {
        let p = Path::new(reference);
        let t =
            vm_spec::read_document(p).with_context(|| format!("cannot read {}", p.display()))?;
        let base = p
            .canonicalize()
            .ok()
            .and_then(|c| c.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("."));
        (t, base, p.display().to_string())
    } else {
        let name: VmName = reference.parse().map_err(|e| anyhow!("{e}"))?;
        let p = vm_control::defined_spec_path(name.as_str())?;
        let t = std::fs::read_to_string(&p).map_err(|_| {
            anyhow!(
                "no VM named '{name}' is defined (looked for {})",
                p.display()
            )
        })?;
        (t, PathBuf::from("/"), p.display().to_string())
    };
    let mut spec = VmSpec::from_json(&text).map_err(|e| anyhow!("{origin}: {e}"))?;
    spec.resolve_paths(&base);
    Ok(spec)
}

/// The name of the VM a reference points at.
pub fn vm_name(reference: &str) -> Result<String> {
    Ok(vm_control::vm_name(reference)?)
}
