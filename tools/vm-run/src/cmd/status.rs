//! `vm-run status` and `vm-run state` (virsh dominfo and domstate).

use anyhow::Result;

use super::{current_state, is_defined};
use crate::output;

pub fn status(vm: &str, json: bool) -> Result<i32> {
    let name = crate::resolve::vm_name(vm)?;
    output::print_state(&current_state(&name)?, json);
    Ok(0)
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
