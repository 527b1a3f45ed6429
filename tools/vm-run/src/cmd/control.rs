//! `vm-run pause`, `resume` and `reboot`: one request each, the new state printed.

use anyhow::Result;
use vm_control::Request;

use super::request;
use crate::output;

pub fn simple(vm: &str, req: &Request, json: bool) -> Result<i32> {
    let name = crate::resolve::vm_name(vm)?;
    if let Some(st) = request(&name, req)? {
        output::print_state(&st, json);
    }
    Ok(0)
}
