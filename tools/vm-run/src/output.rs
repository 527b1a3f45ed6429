//! Records as JSON when stdout is not a terminal (or with --json), as text
//! on a terminal.

use std::io::IsTerminal;

use vm_spec::VmState;

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

/// virsh dominfo's layout.
pub fn dominfo(s: &VmState) -> String {
    let row = |k: &str, v: &str| format!("{:<16}{}\n", format!("{k}:"), escape(v));
    let mut out = String::new();
    out += &row("Name", &s.name);
    out += &row("UUID", &s.uuid.to_string());
    out += &row("State", &s.state.to_string());
    out += &row("Reason", &s.reason);
    out += &row("PID", &s.pid.to_string());
    out += &row("CPU(s)", &s.spec.vcpus.to_string());
    out += &row(
        "Max memory",
        &format!("{} KiB", s.spec.memory.bytes() / 1024),
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
