//! The verbs that act on a VM that runs (or is defined).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use vm_control::{Liveness, Lookup, Request};
use vm_spec::{RunState, VmSpec, VmState};

use crate::output;

/// Whether a definition of `name` exists.
fn is_defined(name: &str) -> bool {
    vm_control::defined_spec_path(name).is_ok_and(|p| p.exists())
}

/// A VM's state: a running VM's (its pid is the process that holds the
/// VM's folder, as the kernel says), or a dead one's as `crashed`.
pub fn current_state(name: &str) -> Result<VmState> {
    match vm_control::lookup(name)? {
        Lookup::Running { state, .. } => Ok(state),
        Lookup::Dead { mut state, .. } => {
            state.state = RunState::Crashed;
            state.reason = "the VM process died".into();
            Ok(state)
        }
        Lookup::Absent { .. } if is_defined(name) => bail!("VM '{name}' is not running"),
        Lookup::Absent { .. } => bail!("no VM named '{name}'"),
    }
}

/// A running VM's folder and state, or why there is none.
fn running(name: &str) -> Result<(PathBuf, VmState)> {
    match vm_control::lookup(name)? {
        Lookup::Running { dir, state } => Ok((dir, state)),
        Lookup::Dead { state, .. } => bail!(
            "VM '{name}' is not running: its process (pid {}) died",
            state.pid
        ),
        Lookup::Absent { .. } if is_defined(name) => bail!("VM '{name}' is not running"),
        Lookup::Absent { .. } => bail!("no VM named '{name}'"),
    }
}

fn running_state(name: &str) -> Result<VmState> {
    running(name).map(|(_, st)| st)
}

/// Sends one request to the VM and returns its new state.
pub fn request(name: &str, req: &Request) -> Result<Option<VmState>> {
    let (dir, _) = running(name)?;
    send(&dir, req)
}

fn send(dir: &Path, req: &Request) -> Result<Option<VmState>> {
    let reply = vm_control::call(&dir.join("control.sock"), req, Duration::from_secs(30))?;
    if !reply.ok {
        bail!("{}", reply.error.unwrap_or_else(|| "the VM refused".into()));
    }
    Ok(reply.state.map(|b| *b))
}

pub fn simple(vm: &str, req: &Request, json: bool) -> Result<i32> {
    let name = crate::resolve::vm_name(vm)?;
    if let Some(st) = request(&name, req)? {
        output::print_state(&st, json);
    }
    Ok(0)
}

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

pub fn shutdown(
    vm: &str,
    mode: vm_control::ShutdownMode,
    timeout: u64,
    force: bool,
    json: bool,
) -> Result<i32> {
    let name = crate::resolve::vm_name(vm)?;
    let (dir, st) = running(&name)?;
    send(&dir, &Request::Shutdown { mode })?;
    if wait_released(&dir, st.pid, Duration::from_secs(timeout)) {
        if output::json_wanted(json) {
            println!(
                "{}",
                serde_json::json!({"name": name, "state": "shutoff", "reason": "shutdown"})
            );
        }
        return Ok(0);
    }
    if force {
        if send(&dir, &Request::Kill).is_err() || !wait_released(&dir, st.pid, KILL_WAIT) {
            vm_control::signal_vm(&dir, st.pid, libc::SIGKILL)?;
            wait_released(&dir, st.pid, KILL_WAIT);
            vm_control::remove_if_dead(&dir)?;
        }
        return Ok(0);
    }
    bail!("VM '{name}' did not shut down within {timeout} s (use --force to kill it)")
}

/// How long a killed VM may take to let go of its folder.
const KILL_WAIT: Duration = Duration::from_secs(10);

pub fn kill(vm: &str, json: bool) -> Result<i32> {
    let name = crate::resolve::vm_name(vm)?;
    let (dir, st) = match vm_control::lookup(&name)? {
        Lookup::Running { dir, state } => (dir, state),
        Lookup::Dead { dir, mut state } => {
            // Its process is gone: clear what it left, if it is ours.
            vm_control::remove_if_dead(&dir)?;
            state.state = RunState::Shutoff;
            state.reason = "destroyed".into();
            output::print_state(&state, json);
            return Ok(0);
        }
        Lookup::Absent { .. } => return running(&name).map(|_| 0),
    };
    match send(&dir, &Request::Kill) {
        Ok(Some(s)) => {
            wait_released(&dir, st.pid, KILL_WAIT);
            output::print_state(&s, json);
        }
        // Another user's VM (the peer check said no): leave it alone.
        Err(e) if is_refused(&e) => return Err(e),
        _ => {
            // The VM does not answer: end the process that provably holds
            // its folder, then clear the folder once nobody holds it.
            vm_control::signal_vm(&dir, st.pid, libc::SIGKILL)?;
            if !wait_released(&dir, st.pid, KILL_WAIT) {
                bail!("VM '{name}' (pid {}) did not end after SIGKILL", st.pid);
            }
            vm_control::remove_if_dead(&dir)?;
        }
    }
    Ok(0)
}

fn is_refused(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<vm_control::Error>(),
        Some(vm_control::Error::Refused(_))
    )
}

/// Waits until the VM process `pid` no longer holds `dir` and has ended
/// (its disks and taps are closed).
fn wait_released(dir: &Path, pid: u32, timeout: Duration) -> bool {
    let t0 = Instant::now();
    while vm_control::holder(dir) == Some(pid) || Liveness::of(pid) == Liveness::Alive {
        if t0.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

pub fn wait(vm: &str) -> Result<i32> {
    let name = crate::resolve::vm_name(vm)?;
    let (dir, st) = running(&name)?;
    wait_released(&dir, st.pid, Duration::MAX);
    Ok(0)
}

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

/// Attaches to a running VM's console: a pty or socket interactively
/// (Ctrl-] leaves), a console file by following it until the VM stops.
pub fn console(vm: &str) -> Result<i32> {
    let name = crate::resolve::vm_name(vm)?;
    let st = running_state(&name)?;
    let path = st.console.clone().ok_or_else(|| {
        anyhow!("VM '{name}' has no console to attach to (its serial goes to stdio or nowhere)")
    })?;
    match st.spec.serial.as_ref().map(|s| s.mode) {
        Some(vm_spec::SerialMode::Pty) => {
            let (r, w) = crate::console::open_client(&path, false)?;
            crate::console::attach(r, w, st.pid)
        }
        Some(vm_spec::SerialMode::Socket) => {
            let (r, w) = crate::console::open_client(&path, true)?;
            crate::console::attach(r, w, st.pid)
        }
        _ => follow(&path, st.pid),
    }
}

fn follow(path: &Path, pid: u32) -> Result<i32> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = [0u8; 4096];
    let mut out = std::io::stdout();
    loop {
        let n = f.read(&mut buf)?;
        if n > 0 {
            std::io::Write::write_all(&mut out, &buf[..n])?;
            std::io::Write::flush(&mut out)?;
            continue;
        }
        if Liveness::of(pid) == Liveness::Dead {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

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

/// virsh domblkstat and domifstat: each device's counters, `ID name value`
/// per line.
pub fn stats(vm: &str, disk: Option<&str>, iface: Option<&str>, json: bool) -> Result<i32> {
    let name = crate::resolve::vm_name(vm)?;
    let st = running_state(&name)?;
    let reply = vm_control::call(&st.control_socket, &Request::Stats, Duration::from_secs(30))?;
    if !reply.ok {
        bail!("{}", reply.error.unwrap_or_else(|| "the VM refused".into()));
    }
    let mut stats = reply.stats.unwrap_or_default();
    if let Some(id) = disk {
        stats.disks.retain(|d| d.id == id);
        stats.nets.clear();
        if stats.disks.is_empty() {
            bail!("VM '{name}' has no disk '{id}'");
        }
    }
    if let Some(id) = iface {
        stats.nets.retain(|n| n.id == id);
        stats.disks.clear();
        if stats.nets.is_empty() {
            bail!("VM '{name}' has no network interface '{id}'");
        }
    }
    if output::json_wanted(json) {
        println!("{}", serde_json::to_string(&stats)?);
        return Ok(0);
    }
    for d in &stats.disks {
        let v = serde_json::to_value(d)?;
        for key in [
            "rd_req",
            "rd_bytes",
            "wr_req",
            "wr_bytes",
            "flush_operations",
            "rd_total_times",
            "wr_total_times",
            "flush_total_times",
            "errs",
        ] {
            println!("{} {key} {}", d.id, v[key]);
        }
    }
    for n in &stats.nets {
        let v = serde_json::to_value(n)?;
        for key in [
            "rx_bytes",
            "rx_packets",
            "rx_errs",
            "rx_drop",
            "tx_bytes",
            "tx_packets",
            "tx_errs",
            "tx_drop",
        ] {
            println!("{} {key} {}", n.id, v[key]);
        }
    }
    Ok(0)
}

/// virsh domiflist: a running VM's NICs with their taps and MACs.
pub fn ifaces(vm: &str, json: bool) -> Result<i32> {
    let name = crate::resolve::vm_name(vm)?;
    let st = running_state(&name)?;
    // The tap's state as the host sees it (this network namespace's):
    // taps report no operational state, so up means up with a carrier.
    let mut nl = vm_host::netlink::Netlink::open().ok();
    let rows: Vec<_> = st
        .spec
        .nets
        .iter()
        .zip(&st.nets)
        .map(|(n, s)| {
            let state = nl
                .as_mut()
                .and_then(|nl| nl.link(&s.tap).ok().flatten())
                .map_or("unknown", |l| match (l.up, l.lower_up) {
                    (true, true) => "up",
                    (true, false) => "no-carrier",
                    (false, _) => "down",
                });
            serde_json::json!({
                "state": state,
                "id": n.id,
                "interface": s.tap,
                "type": if n.bridge.is_some() { "bridge" } else { "ethernet" },
                "source": n.bridge,
                "model": "virtio",
                "mac": s.mac.to_string(),
                "queues": n.queues,
            })
        })
        .collect();
    if output::json_wanted(json) {
        println!("{}", serde_json::Value::Array(rows));
        return Ok(0);
    }
    println!(
        " {:<10} {:<9} {:<10} {:<7} MAC",
        "Interface", "Type", "Source", "Model"
    );
    println!("{}", "-".repeat(64));
    for r in &rows {
        println!(
            " {:<10} {:<9} {:<10} {:<7} {}",
            output::escape(r["interface"].as_str().unwrap_or("")),
            r["type"].as_str().unwrap_or(""),
            output::escape(r["source"].as_str().unwrap_or("-")),
            "virtio",
            r["mac"].as_str().unwrap_or("")
        );
    }
    Ok(0)
}

/// virsh domblklist: a running VM's disks with their current top image,
/// or a defined VM's from its spec.
pub fn disks(vm: &str, json: bool) -> Result<i32> {
    let name = crate::resolve::vm_name(vm)?;
    let spec = match current_state(&name) {
        Ok(st) => {
            let mut spec = st.spec;
            for (d, s) in spec.disks.iter_mut().zip(&st.disks) {
                d.path.clone_from(&s.top);
            }
            spec
        }
        Err(e) => {
            let path = vm_control::defined_spec_path(&name)?;
            if !path.exists() {
                return Err(e);
            }
            VmSpec::from_json(&std::fs::read_to_string(&path)?).map_err(|e| anyhow!("{e}"))?
        }
    };
    if output::json_wanted(json) {
        let rows: Vec<_> = spec
            .disks
            .iter()
            .map(|d| {
                serde_json::json!({
                    "id": d.id, "source": d.path, "format": d.format.as_str(),
                    "readonly": d.readonly, "cache": d.cache.as_str(),
                    "iothread": d.iothread, "serial": d.serial,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(0);
    }
    println!(" {:<8} Source", "Target");
    println!("{}", "-".repeat(48));
    for d in &spec.disks {
        println!(
            " {:<8} {}",
            d.id,
            output::escape(&d.path.display().to_string())
        );
    }
    Ok(0)
}
