//! `vm-run list` (virsh list): running VMs, and with --all the defined ones.

use anyhow::Result;

use super::current_state;
use crate::output;

pub fn list(all: bool, json: bool) -> Result<i32> {
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let run = vm_control::run_dir();
    if run.exists() {
        vm_control::check_trusted(&run)?;
    }
    if let Ok(entries) = std::fs::read_dir(&run) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            match current_state(&name) {
                Ok(st) => {
                    rows.push((name.clone(), st.pid.to_string(), st.state.to_string()));
                    seen.insert(name);
                }
                Err(err) if !err.to_string().starts_with("no VM named") => {
                    eprintln!("vm-run: warning: {}", output::escape(&format!("{err:#}")));
                }
                Err(_) => {}
            }
        }
    }
    if all {
        let defs = vm_control::config_dir();
        if defs.exists() {
            vm_control::check_trusted(&defs)?;
        }
        if let Ok(entries) = std::fs::read_dir(&defs) {
            for e in entries.flatten() {
                let f = e.file_name().to_string_lossy().to_string();
                if let Some(name) = f.strip_suffix(".json") {
                    if !seen.contains(name) {
                        rows.push((name.to_string(), "-".into(), "shut off".into()));
                    }
                }
            }
        }
    }
    rows.sort();
    if output::json_wanted(json) {
        let v: Vec<_> = rows
            .iter()
            .map(|(n, p, s)| serde_json::json!({"name": n, "pid": p.parse::<u32>().ok(), "state": s}))
            .collect();
        println!("{}", serde_json::Value::Array(v));
    } else {
        println!(" {:<8} {:<24} State", "PID", "Name");
        println!("{}", "-".repeat(44));
        for (n, p, s) in rows {
            println!(" {p:<8} {:<24} {s}", output::escape(&n));
        }
    }
    Ok(0)
}
