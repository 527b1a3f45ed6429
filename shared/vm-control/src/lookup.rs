//! Finding a VM: its folder, whether a VM process holds it (the kernel's
//! word, see `vmlock`), and its state. state.json is a convenience the VM
//! keeps up to date; when it is gone, garbled or names another pid, the
//! VM itself is asked over its control socket.

use std::path::PathBuf;
use std::time::Duration;

use vm_spec::VmState;

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
    let recorded = read_state(&dir);
    // A holder whose main thread has exited is a VM on its way out (its
    // other threads still closing): dead to the caller, as before.
    let live = holder(&dir).filter(|&p| Liveness::of(p) == Liveness::Alive);
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
