//! Finding a VM: its folder, whether a VM process holds it (the kernel's
//! word, see `vmlock`), and its state. state.json is a convenience the VM
//! keeps up to date; when it is gone, garbled or names another pid, the
//! VM itself is asked over its control socket.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use vm_spec::VmState;

use crate::dirs::read_state_in;
use crate::vmlock::{holder_of, open_dir};
use crate::{call, holder, read_state, vm_dir, Error, Liveness, Request, Result};

/// A VM as the tools find it.
#[derive(Debug)]
pub enum Lookup {
    /// A VM process holds the folder; `state.pid` is that process.
    Running { dir: PathBuf, state: VmState },
    /// A state.json without a VM process: the VM died without cleaning up.
    Dead { dir: PathBuf, state: VmState },
    /// No VM of that name runs.
    Absent { dir: PathBuf },
}

/// How long a lookup waits for a VM that must be asked its state.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

pub fn lookup(name: &str) -> Result<Lookup> {
    let dir = vm_dir(name, false)?;
    // A VM that ends removes its folder, then lets go of it, and a new
    // start of the name may make it again at once: one folder's state and
    // holder are read, and read again if that folder was removed
    // meanwhile, so that a VM that ended is never taken for one that died.
    let mut tries = 0;
    loop {
        tries += 1;
        // Open, the folder cannot be swapped for another that reuses its
        // inode number between the reads.
        let folder = match open_dir(&dir) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Lookup::Absent { dir })
            }
            // Another user's folder: what its path says.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                let live = holder(&dir).filter(|&p| Liveness::of(p) == Liveness::Alive);
                return settle(name, dir.clone(), read_state(&dir), live);
            }
            Err(e) => return Err(Error::io(format!("opening {}", dir.display()))(e)),
        };
        let md = folder
            .metadata()
            .map_err(Error::io(format!("reading {}", dir.display())))?;
        let recorded = read_state_in(&folder, &dir);
        // A holder whose main thread has exited is a VM on its way out
        // (its other threads still closing): dead to the caller.
        let live = holder_of(&md).filter(|&p| Liveness::of(p) == Liveness::Alive);
        // Nobody holds a folder that was removed meanwhile: its VM ended.
        // Look again, in case the name runs anew; names that keep ending
        // and starting read as ended.
        let removed = folder.metadata().map_or(true, |m| m.nlink() == 0);
        if live.is_none() && removed {
            if tries < 5 {
                continue;
            }
            return Ok(Lookup::Absent { dir });
        }
        return settle(name, dir, recorded, live);
    }
}

/// What the reads of [`lookup`] say: the state and holder of one folder.
fn settle(
    name: &str,
    dir: PathBuf,
    recorded: Result<VmState>,
    live: Option<u32>,
) -> Result<Lookup> {
    let Some(pid) = live else {
        return match recorded {
            Ok(state) => Ok(Lookup::Dead { dir, state }),
            Err(Error::Io { source, what })
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                Err(Error::Io { what, source })
            }
            Err(_) => Ok(Lookup::Absent { dir }),
        };
    };
    if let Ok(state) = &recorded {
        if state.pid == pid {
            return Ok(Lookup::Running {
                dir,
                state: recorded?,
            });
        }
    }
    // The file does not describe the process that runs: ask that process.
    match call(&dir.join("control.sock"), &Request::Status, ASK_TIMEOUT) {
        Ok(reply) if reply.ok && reply.state.is_some() => {
            let mut state = *reply.state.expect("checked");
            state.pid = pid;
            Ok(Lookup::Running { dir, state })
        }
        // Another user's VM: its folder or its socket keeps us out.
        Err(e) if e.is_other_users() => Err(e),
        _ if recorded.as_ref().is_err_and(Error::is_other_users) => Err(recorded.unwrap_err()),
        other => match recorded {
            // It does not answer: what the file says, with the real pid.
            Ok(mut state) => {
                state.pid = pid;
                Ok(Lookup::Running { dir, state })
            }
            // Held, but neither file nor socket yet: a start in progress.
            Err(_) if !dir.join("control.sock").exists() => Err(Error::Busy(format!(
                "VM '{name}' is starting (pid {pid}); try again in a moment"
            ))),
            Err(_) => Err(Error::Protocol(format!(
                "VM '{name}' runs (pid {pid}) but its state.json is unreadable and it does not answer: {}",
                other.err().map_or_else(|| "no state in its reply".into(), |e| e.to_string())
            ))),
        },
    }
}
