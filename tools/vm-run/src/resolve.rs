//! Naming a VM: its name, the path of its spec or state file, or `-` for a
//! JSON document (spec or state) on stdin.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use vm_spec::{VmName, VmSpec, VmState};

/// A spec with every relative path made absolute.
pub fn load_spec(reference: &str) -> Result<VmSpec> {
    let (text, base, origin) = if reference == "-" {
        let mut t = String::new();
        std::io::stdin()
            .read_to_string(&mut t)
            .context("reading the spec from stdin")?;
        (t, std::env::current_dir()?, "stdin".to_string())
    } else if looks_like_path(reference) {
        let p = Path::new(reference);
        let t =
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
        let base = p
            .canonicalize()
            .ok()
            .and_then(|c| c.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("."));
        (t, base, p.display().to_string())
    } else {
        let name: VmName = reference.parse().map_err(|e| anyhow!("{e}"))?;
        let p = vm_control::defined_spec_path(name.as_str());
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

/// True when `s` names a file rather than a VM.
fn looks_like_path(s: &str) -> bool {
    let p = Path::new(s);
    s.contains('/')
        || p.extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        || p.is_file()
}

/// The name of the VM a reference points at.
pub fn vm_name(reference: &str) -> Result<String> {
    let text = if reference == "-" {
        let mut t = String::new();
        std::io::stdin()
            .read_to_string(&mut t)
            .context("reading stdin")?;
        t
    } else if looks_like_path(reference) {
        std::fs::read_to_string(reference).with_context(|| format!("cannot read {reference}"))?
    } else {
        let name: VmName = reference.parse().map_err(|e| anyhow!("{e}"))?;
        return Ok(name.to_string());
    };
    if let Ok(state) = VmState::from_json(&text) {
        return Ok(state.name);
    }
    match VmSpec::from_json(&text) {
        Ok(spec) => Ok(spec.name.to_string()),
        Err(e) => bail!("{reference}: neither a VM state nor a spec: {e}"),
    }
}
