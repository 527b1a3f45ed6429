//! `vm-run start`: in the foreground the VM lives in this process (on
//! cgroup v2 in a child born in its cgroup, see launch.rs); with --detach
//! a fork of this process, or on v2 `vm-run serve`, runs it in the
//! background (its own session, stderr to vm.log) and this process
//! returns once the guest runs, printing the VM's state.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use vm_spec::{VmSpec, VmState};

use crate::cli::StartArgs;
use crate::{launch, monitor, output};

pub fn run(a: &StartArgs, json: bool) -> Result<i32> {
    let (spec, restore) = match (&a.restore, a.incoming) {
        (Some(path), _) => restore_spec(a, path)?,
        (None, Some(fd)) => incoming_spec(a, fd)?,
        (None, None) => (
            crate::resolve::load_spec(a.vm.as_deref().unwrap_or("-"))?,
            a.paused.then_some(monitor::RestoreFrom {
                source: monitor::RestoreSource::Boot,
                paused: true,
            }),
        ),
    };
    if !a.detach {
        if let Some(cg) = launch::v2_group(&spec) {
            match launch::foreground(&spec, a.console.as_deref(), restore.as_ref(), &cg) {
                Err(e) if e.kind() == std::io::ErrorKind::Unsupported => cg.remove_if_empty(),
                r => return r.context("starting the VM process"),
            }
        }
        return monitor::run(spec, false, a.console.clone(), None, restore, None);
    }
    detach(&spec, a.console.as_deref(), json, restore)
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
    let mut conn = crate::migrate::Conn::from_fd(inherited(fd, "--incoming")?)?;
    let listener = match a.incoming_listener {
        Some(l) if l == fd => Err(anyhow!(
            "--incoming-listener {l}: the stream's own descriptor"
        )),
        l => l.map(|l| inherited(l, "--incoming-listener")).transpose(),
    };
    let hello = crate::migrate::recv::hello(&mut conn)?;
    let spec = listener.and_then(|listener| {
        let spec = VmSpec::from_json(&hello.spec.to_string())
            .map_err(|e| anyhow!("the arriving spec: {e}"))
            .and_then(|s| local_spec(a, s))?;
        crate::migrate::storage::check(&spec, &hello.disks)?;
        let more = crate::migrate::recv::joins(&hello, listener)?;
        Ok((spec, more))
    });
    let (spec, more) = match spec {
        Ok(s) => s,
        Err(e) => {
            let _ = vmm::state::stream::Reply::Error {
                error: crate::one_line(&e),
            }
            .write(&mut conn);
            return Err(e);
        }
    };
    let mut conns = vec![conn];
    conns.extend(more);
    Ok((
        spec,
        Some(monitor::RestoreFrom {
            source: monitor::RestoreSource::Stream(conns, hello.disks),
            paused: a.paused,
        }),
    ))
}

/// Takes a descriptor handed to this process on the command line.
fn inherited(fd: i32, what: &str) -> Result<std::os::fd::OwnedFd> {
    // SAFETY: F_GETFD only asks whether the number is an open descriptor.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        bail!("{what} {fd}: not an open descriptor");
    }
    // SAFETY: the descriptor is open (checked above) and was handed to
    // this process to own; nothing else here uses it.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

fn detach(
    spec: &VmSpec,
    console: Option<&Path>,
    json: bool,
    restore: Option<monitor::RestoreFrom>,
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
    let (ready_r, ready_w) = vm_host::launch::pipe().context("pipe")?;
    let cg = launch::v2_group(spec);
    let pid = if cg.is_none() && launch::single_threaded() {
        // v1: a fork of this process is the VM process, with the spec and
        // the checked file it has already read.
        // SAFETY: this process has one thread, so the child's copy of it
        // is whole (no lock held by a thread that is not there).
        match unsafe { libc::fork() } {
            0 => launch::serve_forked(spec.clone(), console, restore, ready_r, ready_w, log),
            -1 => return Err(std::io::Error::last_os_error()).context("starting the VM process"),
            pid => {
                // Our copy of the child's end closed, so a child that dies
                // reads as end of file.
                drop(ready_w);
                pid
            }
        }
    } else {
        let (spec_r, mut spec_w) = vm_host::launch::pipe().context("pipe")?;
        let serve = launch::Serve::new(console, restore.as_ref(), false)?;
        let fds = [(spec_r.as_fd(), 0), (ready_w.as_fd(), 1), (log.as_fd(), 2)];
        let pid = match serve.spawn(cg.as_ref(), &fds, true) {
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported && cg.is_some() => {
                // The VM process then moves into a group of its own.
                if let Some(cg) = &cg {
                    cg.remove_if_empty();
                }
                serve.spawn(None, &fds, true)
            }
            r => r,
        }
        .context("starting the VM process")?;
        // Our copies of the child's ends close, so a child that dies reads
        // as end of file.
        drop((spec_r, ready_w, log));
        spec_w.write_all(serde_json::to_string(spec)?.as_bytes())?;
        pid
    };
    drop(restore);
    let mut line = String::new();
    BufReader::new(ready_r).read_line(&mut line)?;
    let failed = |why: String| -> Result<i32> {
        if let Some(cg) = &cg {
            cg.remove_if_empty();
        }
        // The VM process cleared what it made once it held the folder; a
        // folder another VM holds (the start that won a race) stays.
        vm_control::remove_if_dead(&dir)?;
        Err(anyhow!("{why}"))
    };
    if let Some(msg) = line.strip_prefix("ERROR ") {
        launch::reap(pid);
        return failed(msg.trim().to_string());
    }
    if line.trim().is_empty() {
        let status = launch::reap(pid);
        let mut log = String::new();
        std::fs::File::open(&log_path)
            .and_then(|mut f| f.read_to_string(&mut log))
            .ok();
        let why = launch::why_not_started(&log, status);
        return failed(format!("the VM did not start: {why}"));
    }
    let state = VmState::from_json(line.trim())
        .map_err(|e| anyhow!("bad state from the VM process: {e}"))?;
    output::print_state(&state, json);
    Ok(0)
}

/// The VM process a launcher started: the spec arrives on stdin (fd 4 in
/// the foreground, where stdin is the console's), and a detached one
/// writes its state line to stdout once the guest runs. Errors go to
/// stderr (a detached VM's vm.log) as any command's do.
pub fn serve() -> Result<i32> {
    let foreground = std::env::var_os(launch::ENV_FOREGROUND).is_some();
    let mut text = String::new();
    if foreground {
        // SAFETY: the launcher put the spec's pipe at this number for this
        // process alone.
        let mut f =
            unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(launch::SPEC_FD) };
        f.read_to_string(&mut text)?;
    } else {
        std::io::stdin().read_to_string(&mut text)?;
    }
    let spec = VmSpec::from_json(&text).map_err(|e| anyhow!("{e}"))?;
    let console = std::env::var_os(launch::ENV_CONSOLE).map(PathBuf::from);
    let paused = std::env::var_os(launch::ENV_PAUSED).is_some();
    let restore = if let Some(p) = std::env::var_os(launch::ENV_RESTORE) {
        Some(monitor::RestoreFrom {
            source: monitor::RestoreSource::File(PathBuf::from(p)),
            paused,
        })
    } else if std::env::var_os(launch::ENV_INCOMING).is_some() {
        // SAFETY: the launcher put the stream at INCOMING_FD for this
        // process alone.
        let fd = unsafe {
            <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(launch::INCOMING_FD)
        };
        let mut conns = vec![crate::migrate::Conn::from_fd(fd)?];
        let more: i32 = std::env::var(launch::ENV_INCOMING_STREAMS)
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        for k in 1..more.min(crate::migrate::MAX_STREAMS as i32) {
            // SAFETY: the launcher put stream k at this number for this
            // process alone.
            let fd = unsafe {
                <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(
                    launch::MORE_STREAMS_FD + k - 1,
                )
            };
            conns.push(crate::migrate::Conn::from_fd(fd)?);
        }
        let disks = std::env::var(launch::ENV_INCOMING_DISKS).unwrap_or_default();
        let disks = serde_json::from_str(&disks).context("the incoming disks")?;
        Some(monitor::RestoreFrom {
            source: monitor::RestoreSource::Stream(conns, disks),
            paused,
        })
    } else if paused {
        Some(monitor::RestoreFrom {
            source: monitor::RestoreSource::Boot,
            paused,
        })
    } else {
        None
    };
    // The group the launcher made, if this process really is in it.
    let born = std::env::var_os(launch::ENV_CGROUP)
        .and_then(|g| vm_host::cgroup::VmCgroup::born_in(std::path::Path::new(&g)));
    if foreground {
        return monitor::run(spec, false, console, None, restore, born);
    }
    // SAFETY: dup-ing our stdout keeps the readiness pipe; the original fd
    // 1 then points at /dev/null so nothing else writes into the pipe.
    let fd = unsafe { libc::dup(1) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("dup");
    }
    // SAFETY: `fd` was just returned to us.
    let ready = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    launch::stdio_to_null();
    serve_detached(spec, console, restore, born, ready)
}

/// A detached VM process from here on: the state line (or `ERROR` and the
/// reason) goes to `ready`, which `start --detach` reads.
pub(crate) fn serve_detached(
    spec: VmSpec,
    console: Option<PathBuf>,
    restore: Option<monitor::RestoreFrom>,
    born: Option<vm_host::cgroup::VmCgroup>,
    ready: std::fs::File,
) -> Result<i32> {
    // A second handle on the pipe reports a failure before readiness to
    // the waiting `start --detach` (after it, nobody reads: EPIPE is fine).
    let mut report = ready.try_clone().context("dup")?;
    let r = monitor::run(spec, true, console, Some(ready), restore, born);
    if let Err(e) = &r {
        let _ = report.write_all(format!("ERROR {}\n", crate::one_line(e)).as_bytes());
    }
    r
}
