//! Records as JSON when stdout is not a terminal (or with --json), as text
//! on a terminal.

use std::io::IsTerminal;

use vm_spec::{VmSpec, VmState};

pub fn json_wanted(force: bool) -> bool {
    force || !std::io::stdout().is_terminal()
}

pub fn print_state(s: &VmState, json: bool) {
    if json_wanted(json) {
        println!(
            "{}",
            serde_json::to_string(s).expect("a VmState serialises")
        );
    } else {
        print!("{}", dominfo(s));
    }
}

fn row(k: &str, v: &str) -> String {
    format!("{:<16}{}\n", format!("{k}:"), escape(v))
}

/// dominfo's first rows, which a stopped VM has too.
fn dominfo_head(
    name: &str,
    spec: &VmSpec,
    uuid: &str,
    (state, reason): (&str, &str),
    pid: &str,
) -> String {
    let mut out = String::new();
    out += &row("Name", name);
    out += &row("UUID", uuid);
    out += &row("State", state);
    out += &row("Reason", reason);
    out += &row("PID", pid);
    out += &row("CPU(s)", &spec.vcpus.to_string());
    out += &row("Max memory", &format!("{} KiB", spec.memory.bytes() / 1024));
    out
}

/// dominfo of a VM that is defined but not running (virsh prints `-` for
/// a shut-off domain's id).
pub fn dominfo_defined(spec: &VmSpec) -> String {
    let uuid = spec.uuid.map_or_else(|| "-".to_string(), |u| u.to_string());
    dominfo_head(
        spec.name.as_str(),
        spec,
        &uuid,
        ("shut off", "defined"),
        "-",
    )
}

/// virsh dominfo's layout.
pub fn dominfo(s: &VmState) -> String {
    let mut out = dominfo_head(
        &s.name,
        &s.spec,
        &s.uuid.to_string(),
        (&s.state.to_string(), &s.reason),
        &s.pid.to_string(),
    );
    out += &row("Control socket", &s.control_socket.display().to_string());
    if let Some(c) = &s.console {
        out += &row("Console", &c.display().to_string());
    }
    out += &row("vCPU threads", &format!("{:?}", s.vcpu_threads));
    out += &row("Started", &crate::timefmt::rfc3339(s.started));
    out
}

pub use vm_spec::text::escape;
