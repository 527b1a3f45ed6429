//! The control socket: a Unix stream socket, mode 0600 in a 0700 folder,
//! that also checks each peer's credentials (SO_PEERCRED), since file
//! modes alone can be opened up by mistake.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Error, Reply, Request, Result};

#[derive(Debug)]
pub struct Listener {
    pub inner: UnixListener,
    path: PathBuf,
}

impl Listener {
    pub fn bind(path: &Path) -> Result<Self> {
        let _ = std::fs::remove_file(path);
        // Created under a restrictive umask so there is no window in which
        // the socket is open to others.
        // SAFETY: umask only changes this process's file creation mask.
        let old = unsafe { libc::umask(0o177) };
        let bound = UnixListener::bind(path);
        // SAFETY: as above, restoring the previous mask.
        unsafe { libc::umask(old) };
        let inner = bound.map_err(Error::io(format!("binding {}", path.display())))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(Error::io(format!("securing {}", path.display())))?;
        inner
            .set_nonblocking(true)
            .map_err(Error::io("control socket"))?;
        Ok(Self {
            inner,
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Only the VM's owner and root may control it.
pub fn peer_allowed(stream: &UnixStream) -> bool {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, which lives
    // for the call; the fd is an open socket.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &raw mut len,
        )
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    r == 0 && (cred.uid == me || cred.uid == 0)
}

/// Sends one request and reads one reply.
pub fn call(socket: &Path, req: &Request, timeout: Duration) -> Result<Reply> {
    let what = || format!("control socket {}", socket.display());
    let refused = || {
        Error::Refused(format!(
            "{}: the VM refused the connection (only its owner and root may control it)",
            socket.display()
        ))
    };
    // A refused peer sees its connection closed: EPIPE, ECONNRESET or EOF.
    let closed = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        )
    };
    let stream = UnixStream::connect(socket).map_err(Error::io(what()))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(Error::io(what()))?;
    let mut line = serde_json::to_string(req).map_err(|e| Error::Protocol(e.to_string()))?;
    line.push('\n');
    match (&stream).write_all(line.as_bytes()) {
        Err(e) if closed(&e) => return Err(refused()),
        Err(e) => return Err(Error::io(what())(e)),
        Ok(()) => {}
    }
    let mut reply = String::new();
    match BufReader::new(&stream).read_line(&mut reply) {
        Err(e) if closed(&e) => return Err(refused()),
        Err(e) => return Err(Error::io(what())(e)),
        Ok(0) => return Err(refused()),
        Ok(_) => {}
    }
    serde_json::from_str(&reply).map_err(|e| Error::Protocol(format!("bad reply from the VM: {e}")))
}
