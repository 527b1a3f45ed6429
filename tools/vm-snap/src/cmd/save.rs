//! `vm-snap save VM FILE` (virsh save): the VM writes itself into a file
//! that has no name yet (O_TMPFILE, in FILE's folder), which gets FILE's
//! name only once it is whole; then the VM ends. A save that fails, or a
//! vm-snap killed on the way, leaves the VM running as it was and nothing
//! under FILE (the unnamed file goes with the last descriptor).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use vm_control::{Lookup, Request, Session};

/// How long the VM has to end after the commit.
const EXIT_WAIT: Duration = Duration::from_secs(60);

pub fn run(vm: &str, path: &Path, fsync: bool) -> Result<i32> {
    let t0 = Instant::now();
    let name = vm_control::vm_name(vm)?;
    let Lookup::Running { dir, state } = vm_control::lookup(&name)? else {
        bail!("VM '{name}' is not running");
    };
    let path = std::path::absolute(path).with_context(|| path.display().to_string())?;
    if path.is_dir() {
        bail!("{}: is a folder", path.display());
    }
    let folder = path.parent().unwrap_or(Path::new("/")).to_path_buf();
    let out = unnamed_file(&folder)?;

    let mut session = Session::connect(&state.control_socket)?;
    let reply = session.call(&Request::Save { fsync }, &[out.as_raw_fd()], None)?;
    if !reply.ok {
        bail!(
            "{}",
            reply.error.unwrap_or_else(|| "the save failed".into())
        );
    }
    let report = reply
        .saved
        .ok_or_else(|| anyhow!("the VM's reply has no save report"))?;
    name_it(&out, &path, fsync)?;
    let reply = session.call(&Request::SaveCommit, &[], Some(Duration::from_secs(30)))?;
    if !reply.ok {
        bail!(
            "{} is saved, but the VM did not end: {}",
            path.display(),
            reply.error.unwrap_or_default()
        );
    }
    drop(session);
    wait_gone(&dir, state.pid)?;
    super::print_json(&serde_json::json!({
        "vm": name,
        "file": path,
        "memory_bytes": report.memory_bytes,
        "written_bytes": report.written_bytes,
        "state_bytes": report.state_bytes,
        "file_bytes": report.file_bytes,
        "fsync": fsync,
        "pause_ms": report.pause_ms,
        "write_ms": report.write_ms,
        "sync_ms": report.sync_ms,
        "total_ms": t0.elapsed().as_millis() as u64,
    }));
    Ok(0)
}

/// An empty file in `folder` with no name (O_TMPFILE), readable by its
/// owner only.
fn unnamed_file(folder: &Path) -> Result<File> {
    let c = CString::new(folder.as_os_str().as_bytes())?;
    // SAFETY: open(2) reads the NUL-terminated path for the call; on
    // success we own the returned descriptor.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
            0o600,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(anyhow!(e)).with_context(|| {
            format!(
                "{}: cannot make an unnamed file there (the file system needs O_TMPFILE)",
                folder.display()
            )
        });
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Gives the written file its name: linked under a temporary name, then
/// renamed over `path` (an old save of that name is replaced whole or
/// not at all), the folder synced when `fsync`.
fn name_it(f: &File, path: &Path, fsync: bool) -> Result<()> {
    let folder = path.parent().unwrap_or(Path::new("/"));
    let base = path
        .file_name()
        .ok_or_else(|| anyhow!("{}: no file name", path.display()))?;
    let tmp: PathBuf = folder.join(format!(
        ".{}.vm-snap-{}",
        base.to_string_lossy(),
        std::process::id()
    ));
    let from = CString::new(format!("/proc/self/fd/{}", f.as_raw_fd()))?;
    let to = CString::new(tmp.as_os_str().as_bytes())?;
    // SAFETY: linkat reads two NUL-terminated paths that live for the call.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r < 0 {
        return Err(anyhow!(std::io::Error::last_os_error()))
            .with_context(|| format!("naming {}", tmp.display()));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("naming {}", path.display()));
    }
    if fsync {
        File::open(folder)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", folder.display()))?;
    }
    Ok(())
}

/// Waits until the VM process has let go of its folder (and so of its
/// disk images' locks).
fn wait_gone(dir: &Path, pid: u32) -> Result<()> {
    let t0 = Instant::now();
    while vm_control::holder(dir).is_some_and(|p| p == pid) {
        if t0.elapsed() > EXIT_WAIT {
            bail!("the VM (pid {pid}) is saved but has not exited yet");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}
