//! `vm-run status` and `vm-run state` (virsh dominfo and domstate).

use anyhow::Result;
use vm_spec::{RunState, VmSpec};

use super::{current_state, is_defined};
use crate::output;

/// A defined VM that is not running answers too, as virsh dominfo does
/// for a shut-off domain: from its definition, with no process fields.
pub fn status(vm: &str, json: bool) -> Result<i32> {
    let name = crate::resolve::vm_name(vm)?;
    match current_state(&name) {
        Ok(st) => output::print_state(&st, json),
        Err(_) if is_defined(&name) => {
            let spec = crate::resolve::load_spec(&name)?;
            print_defined(&spec, json);
        }
        Err(e) => return Err(e),
    }
    Ok(0)
}

/// The fields of a VmState that a VM with no process has, in its order.
#[derive(serde::Serialize)]
struct Defined<'a> {
    name: &'a str,
    uuid: Option<uuid::Uuid>,
    state: RunState,
    reason: &'a str,
    spec: &'a VmSpec,
}

fn print_defined(spec: &VmSpec, json: bool) {
    if output::json_wanted(json) {
        let d = Defined {
            name: spec.name.as_str(),
            uuid: spec.uuid,
            state: RunState::Shutoff,
            reason: "defined",
            spec,
        };
        println!("{}", serde_json::to_string(&d).expect("a spec serialises"));
    } else {
        print!("{}", output::dominfo_defined(spec));
    }
}

pub fn state(vm: &str, reason: bool, json: bool) -> Result<i32> {
    let name = crate::resolve::vm_name(vm)?;
    let (s, why) = match current_state(&name) {
        Ok(st) => (st.state.to_string(), st.reason),
        Err(_) if is_defined(&name) => ("shut off".into(), "defined".into()),
        Err(e) => return Err(e),
    };
    if output::json_wanted(json) {
        println!(
            "{}",
            serde_json::json!({"name": name, "state": s, "reason": why})
        );
    } else if reason {
        println!("{s} ({why})");
    } else {
        println!("{s}");
    }
    Ok(0)
}
