//! `vm-run start`: in the foreground the VM lives in this process; with
//! --detach a copy of vm-run serves it in the background (its own session,
//! stderr to vm.log) and this process returns once the guest runs,
//! printing the VM's state.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use vm_spec::{VmSpec, VmState};

use crate::cli::StartArgs;
use crate::{monitor, output};

pub fn run(a: &StartArgs, json: bool) -> Result<i32> {
    let (spec, restore) = match (&a.restore, a.incoming) {
        (Some(path), _) => restore_spec(a, path)?,
        (None, Some(fd)) => incoming_spec(a, fd)?,
        (None, None) => (
            crate::resolve::load_spec(a.vm.as_deref().unwrap_or("-"))?,
            None,
        ),
    };
    if !a.detach {
        return monitor::run(spec, false, a.console.clone(), None, restore);
    }
    detach(&spec, a.console.clone(), json, restore.as_ref())
}

/// The spec a restore runs: the saved one, or `--spec`, under `--name`.
/// The file is checked here (header, state) so a bad one fails before
/// anything starts; the VM process checks it again as it opens it.
fn restore_spec(
    a: &StartArgs,
    path: &std::path::Path,
) -> Result<(VmSpec, Option<monitor::RestoreFrom>)> {
    let path = std::path::absolute(path).with_context(|| format!("saved VM {}", path.display()))?;
    let f = std::fs::File::open(&path).with_context(|| format!("saved VM {}", path.display()))?;
    let opened = vmm::state::file::open(f).with_context(|| path.display().to_string())?;
    let spec = local_spec(a, opened.saved.spec)?;
    Ok((
        spec,
        Some(monitor::RestoreFrom {
            source: monitor::RestoreSource::File(path),
            paused: a.paused,
        }),
    ))
}

/// The arriving spec with this host's parts: `--spec` whole, then
/// `--name`, `--disk` and `--nic`.
fn local_spec(a: &StartArgs, arrived: VmSpec) -> Result<VmSpec> {
    let mut spec = match &a.spec {
        Some(s) => crate::resolve::load_spec(s)?,
        None => arrived,
    };
    if let Some(n) = &a.name {
        spec.name = n.parse().map_err(|e| anyhow!("--name: {e}"))?;
    }
    vm_spec::overrides::apply(&mut spec, &a.disk, &a.nic).map_err(|e| anyhow!(e))?;
    Ok(spec)
}

/// An incoming migration: the hello is read and checked here, before the
/// VM's folder or process exists; the VM process reads the rest.
fn incoming_spec(a: &StartArgs, fd: i32) -> Result<(VmSpec, Option<monitor::RestoreFrom>)> {
    // SAFETY: F_GETFD only asks whether the number is an open descriptor.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        bail!("--incoming {fd}: not an open descriptor");
    }
    // SAFETY: the descriptor is open (checked above) and was handed to
    // this process to own; nothing else here uses it.
    let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut conn = crate::migrate::Conn::from_fd(owned)?;
    let hello = crate::migrate::recv::hello(&mut conn)?;
    let spec = VmSpec::from_json(&hello.spec.to_string())
        .map_err(|e| anyhow!("the arriving spec: {e}"))
        .and_then(|s| local_spec(a, s))
        .and_then(|s| {
            crate::migrate::storage::check(&s, &hello.disks)?;
            Ok(s)
        });
    let spec = match spec {
        Ok(s) => s,
        Err(e) => {
            let _ = vmm::state::stream::Reply::Error {
                error: crate::one_line(&e),
            }
            .write(&mut conn);
            return Err(e);
        }
    };
    Ok((
        spec,
        Some(monitor::RestoreFrom {
            source: monitor::RestoreSource::Stream(conn, hello.disks),
            paused: a.paused,
        }),
    ))
}

/// Where the detached VM process finds an incoming migration's stream.
const INCOMING_FD: i32 = 3;

fn detach(
    spec: &VmSpec,
    console: Option<PathBuf>,
    json: bool,
    restore: Option<&monitor::RestoreFrom>,
) -> Result<i32> {
    let name = spec.name.to_string();
    // A quick answer for the common case; the VM process's own lock on
    // the folder is what decides a race between two starts.
    let dir = vm_control::vm_dir(&name, false)?;
    if let Some(pid) = vm_control::holder(&dir)
        .filter(|&p| vm_control::Liveness::of(p) == vm_control::Liveness::Alive)
    {
        bail!("VM '{name}' is already running (pid {pid})");
    }
    let dir = vm_control::vm_dir(&name, true)?;
    let log_path = dir.join("vm.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let exe = std::env::current_exe().context("finding vm-run's own executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    if let Some(c) = console {
        cmd.env("VMTOOLS_SERVE_CONSOLE", c);
    }
    let mut stream_fd = None;
    if let Some(r) = restore {
        match &r.source {
            monitor::RestoreSource::File(p) => {
                cmd.env("VMTOOLS_SERVE_RESTORE", p);
            }
            monitor::RestoreSource::Stream(c, disks) => {
                cmd.env("VMTOOLS_SERVE_INCOMING", INCOMING_FD.to_string());
                cmd.env(
                    "VMTOOLS_SERVE_INCOMING_DISKS",
                    serde_json::to_string(disks)?,
                );
                stream_fd = Some(std::os::fd::AsRawFd::as_raw_fd(c));
            }
        }
        if r.paused {
            cmd.env("VMTOOLS_SERVE_PAUSED", "1");
        }
    }
    // SAFETY: in the child before exec: setsid detaches it from our
    // session and terminal, and the stream's descriptor is put at
    // INCOMING_FD without close-on-exec. Only async-signal-safe calls,
    // on descriptors the child has; no memory of ours is touched.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            if let Some(fd) = stream_fd {
                let r = if fd == INCOMING_FD {
                    libc::fcntl(fd, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, INCOMING_FD)
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the VM process")?;
    {
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(serde_json::to_string(spec)?.as_bytes())?;
    }
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    if let Some(msg) = line.strip_prefix("ERROR ") {
        // The VM process cleared what it made once it held the folder; a
        // folder another VM holds (the start that won a race) stays.
        let _ = child.wait();
        vm_control::remove_if_dead(&dir)?;
        return Err(anyhow!("{}", msg.trim()));
    }
    if line.trim().is_empty() {
        let _ = child.wait();
        let mut why = String::new();
        std::fs::File::open(&log_path)
            .and_then(|mut f| f.read_to_string(&mut why))
            .ok();
        let last = why
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no reason given");
        let last = last.split_once("error: ").map_or(last, |(_, m)| m);
        vm_control::remove_if_dead(&dir)?;
        return Err(anyhow!("the VM did not start: {last}"));
    }
    let state = VmState::from_json(line.trim())
        .map_err(|e| anyhow!("bad state from the VM process: {e}"))?;
    output::print_state(&state, json);
    Ok(0)
}

/// The background VM process: the spec arrives on stdin, the state line
/// goes to stdout once the guest runs.
pub fn serve() -> Result<i32> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    let spec = VmSpec::from_json(&text).map_err(|e| anyhow!("{e}"))?;
    let console = std::env::var_os("VMTOOLS_SERVE_CONSOLE").map(PathBuf::from);
    let paused = std::env::var_os("VMTOOLS_SERVE_PAUSED").is_some();
    let restore = if let Some(p) = std::env::var_os("VMTOOLS_SERVE_RESTORE") {
        Some(monitor::RestoreFrom {
            source: monitor::RestoreSource::File(PathBuf::from(p)),
            paused,
        })
    } else if std::env::var_os("VMTOOLS_SERVE_INCOMING").is_some() {
        // SAFETY: `start --detach` put the stream at INCOMING_FD for this
        // process alone.
        let fd =
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(INCOMING_FD) };
        let disks = std::env::var("VMTOOLS_SERVE_INCOMING_DISKS").unwrap_or_default();
        let disks = serde_json::from_str(&disks).context("the incoming disks")?;
        Some(monitor::RestoreFrom {
            source: monitor::RestoreSource::Stream(crate::migrate::Conn::from_fd(fd)?, disks),
            paused,
        })
    } else {
        None
    };
    // SAFETY: dup-ing our stdout keeps the readiness pipe; the original fd
    // 1 is then pointed at /dev/null so nothing else writes into the pipe.
    let ready = unsafe {
        let fd = libc::dup(1);
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("dup");
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::close(null);
        }
        <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd)
    };
    // A second handle on the pipe reports a failure before readiness to
    // the waiting `start --detach` (after it, nobody reads: EPIPE is fine).
    let mut report = ready.try_clone().context("dup")?;
    let r = monitor::run(spec, true, console, Some(ready), restore);
    if let Err(e) = &r {
        let msg = crate::one_line(e);
        eprintln!("vm-run: error: {msg}");
        let _ = report.write_all(format!("ERROR {msg}\n").as_bytes());
    }
    r
}
