//! Naming a VM on the command line: its name, the path of its spec or
//! state file, or `-` for a JSON document (spec or state) on stdin.

use std::path::Path;

use vm_spec::{VmName, VmSpec, VmState};

use crate::{Error, Result};

/// True when `s` names a file rather than a VM: it has a `/` or ends in
/// `.json`. A bare word is always a VM's name, even where a file of that
/// name happens to be in the current folder (`./NAME` names the file).
pub fn looks_like_path(s: &str) -> bool {
    s.contains('/')
        || Path::new(s)
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// The name of the VM a reference points at.
pub fn vm_name(reference: &str) -> Result<String> {
    let text = if reference == "-" {
        vm_spec::read_document_from(std::io::stdin().lock()).map_err(Error::io("reading stdin"))?
    } else if looks_like_path(reference) {
        vm_spec::read_document(Path::new(reference))
            .map_err(Error::io(format!("cannot read {reference}")))?
    } else {
        let name: VmName = reference
            .parse()
            .map_err(|e| Error::Protocol(format!("{e}")))?;
        return Ok(name.to_string());
    };
    if let Ok(state) = VmState::from_json(&text) {
        return Ok(state.name);
    }
    VmSpec::from_json(&text)
        .map(|spec| spec.name.to_string())
        .map_err(|e| Error::Protocol(format!("{reference}: neither a VM state nor a spec: {e}")))
}
