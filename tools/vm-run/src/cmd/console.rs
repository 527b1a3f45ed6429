//! `vm-run console`: the VM's serial console, attached or followed.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use vm_control::Liveness;

use super::running_state;
use crate::console::Until;

/// Attaches to a running VM's console: a pty or socket interactively
/// (Ctrl-] leaves), a console file by following it until the VM stops;
/// with `until`, only until the console shows that text.
pub fn console(vm: &str, until: Option<&str>) -> Result<i32> {
    let name = crate::resolve::vm_name(vm)?;
    let st = running_state(&name)?;
    let path = st.console.clone().ok_or_else(|| {
        anyhow!("VM '{name}' has no console to attach to (its serial goes to stdio or nowhere)")
    })?;
    let until = until.map(Until::new);
    match st.spec.serial.as_ref().map(|s| s.mode) {
        Some(vm_spec::SerialMode::Pty) => {
            let (r, w) = crate::console::open_client(&path, false)?;
            crate::console::attach(r, w, st.pid, until)
        }
        Some(vm_spec::SerialMode::Socket) => {
            let (r, w) = crate::console::open_client(&path, true)?;
            crate::console::attach(r, w, st.pid, until)
        }
        _ => follow(&path, st.pid, until),
    }
}

fn follow(path: &Path, pid: u32, mut until: Option<Until>) -> Result<i32> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = [0u8; 4096];
    let mut out = std::io::stdout();
    loop {
        let n = f.read(&mut buf)?;
        if n > 0 {
            let found = until.as_mut().and_then(|u| u.feed(&buf[..n]));
            let wrote = std::io::Write::write_all(&mut out, &buf[..found.unwrap_or(n)])
                .and_then(|()| std::io::Write::flush(&mut out));
            match wrote {
                Ok(()) if found.is_some() => return Ok(0),
                Ok(()) => continue,
                // The reader went away (`| head`): done, as cat and tail
                // are, without an error.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(0),
                Err(e) => return Err(e.into()),
            }
        }
        if Liveness::of(pid) == Liveness::Dead {
            if let Some(u) = &until {
                bail!("the VM ended before its console showed '{}'", u.text());
            }
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
