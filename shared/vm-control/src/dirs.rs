//! Where VMs live: the runtime directory (`$VMTOOLS_RUN_DIR`, else
//! `$XDG_RUNTIME_DIR/vmtools` for a user, else `/run/vmtools`) with one
//! 0700 folder per VM, and the definitions folder (`$VMTOOLS_CONFIG_DIR`,
//! else `/etc/vmtools/vms` for root, else `~/.config/vmtools/vms`).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use vm_spec::VmState;

use crate::{Error, Result};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Another of the tools (`vm-run`), beside this program (an installed or
/// built set of tools), or else the one on PATH.
pub fn sibling_tool(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

pub fn run_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VMTOOLS_RUN_DIR") {
        return d.into();
    }
    if !is_root() {
        if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
            return PathBuf::from(d).join("vmtools");
        }
    }
    PathBuf::from("/run/vmtools")
}

pub fn config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VMTOOLS_CONFIG_DIR") {
        return d.into();
    }
    if is_root() {
        return PathBuf::from("/etc/vmtools/vms");
    }
    let base = std::env::var_os("XDG_CONFIG_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".config"),
        PathBuf::from,
    );
    base.join("vmtools/vms")
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// A folder we keep state in must be a real folder (never a symlink),
/// owned by the caller or root, and writable by no one else: otherwise
/// another user could plant a link, a forged state.json or a definition
/// in it.
pub fn check_trusted(dir: &Path) -> Result<()> {
    let md = fs::symlink_metadata(dir).map_err(Error::io(format!("reading {}", dir.display())))?;
    let bad = |why: String| Err(Error::Untrusted(format!("{}: {why}", dir.display())));
    if !md.file_type().is_dir() {
        return bad("not a folder (a symlink or a file there is never followed)".into());
    }
    if md.uid() != euid() && md.uid() != 0 {
        return bad(format!(
            "owned by uid {}, neither you nor root: not trusted",
            md.uid()
        ));
    }
    if md.mode() & 0o022 != 0 {
        return bad("writable by other users: not trusted (chmod go-w)".into());
    }
    Ok(())
}

/// Checks `dir` when it exists; a missing folder holds nothing to trust.
fn check_if_there(dir: &Path) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        _ => check_trusted(dir),
    }
}

/// Makes `dir` (and missing parents) private, then checks it.
fn make_trusted(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(Error::io(format!("creating {}", dir.display())))?;
    check_trusted(dir)
}

/// The VM's runtime folder, in a checked run folder; created 0700 (and
/// its parent) when `create`. An existing folder must pass the same
/// checks: a symlink planted under the VM's name is refused, not followed.
pub fn vm_dir(name: &str, create: bool) -> Result<PathBuf> {
    let run = run_dir();
    let dir = run.join(name);
    if create {
        make_trusted(&run)?;
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(Error::io(format!("creating {}", dir.display()))(e));
            }
            _ => {}
        }
        check_trusted(&dir)?;
        // An existing folder of ours keeps its mode: make sure it is private.
        if fs::symlink_metadata(&dir).is_ok_and(|m| m.uid() == euid()) {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .map_err(Error::io(format!("securing {}", dir.display())))?;
        }
    } else {
        check_if_there(&run)?;
        check_if_there(&dir)?;
    }
    Ok(dir)
}

/// Where a definition lives, in a checked definitions folder.
pub fn defined_spec_path(name: &str) -> Result<PathBuf> {
    let dir = config_dir();
    check_if_there(&dir)?;
    Ok(dir.join(format!("{name}.json")))
}

/// Replaces `path` with `data` through a temporary file and a rename
/// (readers see the old or the new file, never half of one); no fsync.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    write_with(path, data, mode, false)
}

/// As `write_atomic`, and the data and the rename are on disk on return.
pub fn write_durable(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    write_with(path, data, mode, true)
}

fn write_with(path: &Path, data: &[u8], mode: u32, sync: bool) -> Result<()> {
    let what = || format!("writing {}", path.display());
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f: File = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(Error::io(what()))?;
    f.write_all(data).map_err(Error::io(what()))?;
    if sync {
        f.sync_all().map_err(Error::io(what()))?;
    }
    drop(f);
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(what())(e)
    })?;
    if sync {
        if let Some(dir) = path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(Error::io(what()))?;
        }
    }
    Ok(())
}

pub fn write_state(dir: &Path, state: &VmState) -> Result<()> {
    let mut text =
        serde_json::to_string_pretty(state).map_err(|e| Error::Protocol(e.to_string()))?;
    text.push('\n');
    write_atomic(&dir.join("state.json"), text.as_bytes(), 0o600)
}

pub fn read_state(dir: &Path) -> Result<VmState> {
    let path = dir.join("state.json");
    let text =
        fs::read_to_string(&path).map_err(Error::io(format!("reading {}", path.display())))?;
    parse_state(&text, &path)
}

fn parse_state(text: &str, path: &Path) -> Result<VmState> {
    VmState::from_json(text).map_err(|e| Error::Protocol(format!("{}: {e}", path.display())))
}

/// As [`read_state`], in the open `folder` (which is at `dir`, or was).
pub(crate) fn read_state_in(folder: &File, dir: &Path) -> Result<VmState> {
    let path = dir.join("state.json");
    let what = || format!("reading {}", path.display());
    // SAFETY: openat reads a NUL-terminated name and returns a new
    // descriptor, which the File takes.
    let fd = unsafe {
        libc::openat(
            folder.as_raw_fd(),
            c"state.json".as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Error::io(what())(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just opened and nothing else owns it.
    let mut file = unsafe { File::from_raw_fd(fd) };
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text).map_err(Error::io(what()))?;
    parse_state(&text, &path)
}

/// Removes a VM's runtime folder and what is in it.
pub fn remove_runtime(dir: &Path) {
    let _ = fs::remove_dir_all(dir);
}

/// Whether a recorded process still runs. PID 1 here reaps orphans late, so
/// a zombie counts as dead once its last thread has ended; the start time
/// guards against a reused pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Dead,
}

impl Liveness {
    pub fn of(pid: u32) -> Self {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => {
                // The state letter follows the parenthesised command name.
                let state = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.trim_start().chars().next());
                match state {
                    // A zombie leader whose other threads are still on
                    // their way out (a killed VM's vCPU threads leave KVM
                    // first) still holds the process's descriptors: its
                    // image locks, its folder's lock. Dead means all gone.
                    Some('Z' | 'X') if other_threads(pid) => Self::Alive,
                    Some('Z' | 'X') | None => Self::Dead,
                    Some(_) => Self::Alive,
                }
            }
            Err(_) => Self::Dead,
        }
    }
}

/// Whether thread group `pid` has threads other than its leader left.
fn other_threads(pid: u32) -> bool {
    fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_str() != Some(pid.to_string().as_str()))
    })
}

/// Stores `spec` as a defined VM (`<config dir>/<name>.json`), durably.
pub fn save_definition(spec: &vm_spec::VmSpec) -> Result<()> {
    make_trusted(&config_dir())?;
    let text = spec.to_json_pretty() + "\n";
    write_durable(
        &defined_spec_path(spec.name.as_str())?,
        text.as_bytes(),
        0o644,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process whose first thread has ended while another goes on (as a
    /// killed VM's leader ends before its vCPU threads) is not dead yet:
    /// it still holds its descriptors. Once the last thread ends, it is.
    #[test]
    fn a_zombie_leader_with_live_threads_is_alive() {
        let script = "import threading, time, ctypes\n\
                      threading.Thread(target=lambda: time.sleep(1.5)).start()\n\
                      ctypes.CDLL(None).syscall(60, 0)\n";
        let Ok(mut child) = std::process::Command::new("python3")
            .args(["-c", script])
            .spawn()
        else {
            println!("SKIP: python3 is not installed");
            return;
        };
        let pid = child.id();
        // The leader is a zombie once its own exit has run.
        let t0 = std::time::Instant::now();
        loop {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            if stat
                .rsplit_once(')')
                .unwrap()
                .1
                .trim_start()
                .starts_with('Z')
            {
                break;
            }
            assert!(t0.elapsed().as_secs() < 5, "the leader never ended: {stat}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(Liveness::of(pid), Liveness::Alive, "its thread still runs");
        std::thread::sleep(std::time::Duration::from_millis(2500));
        assert_eq!(Liveness::of(pid), Liveness::Dead, "all of it has ended");
        child.wait().unwrap();
    }

    #[test]
    fn atomic_writes_replace_whole_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.json");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_durable(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn liveness_from_proc() {
        assert_eq!(Liveness::of(std::process::id()), Liveness::Alive);
        assert_eq!(Liveness::of(u32::MAX - 1), Liveness::Dead);
    }
}
