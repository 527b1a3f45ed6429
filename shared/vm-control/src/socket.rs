//! The control socket: a Unix stream socket, mode 0600 in a 0700 folder,
//! that also checks each peer's credentials (SO_PEERCRED), since file
//! modes alone can be opened up by mistake.

use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{BoundPath, Error, Reply, Request, Result};

#[derive(Debug)]
pub struct Listener {
    pub inner: UnixListener,
    _path: BoundPath,
}

impl Listener {
    pub fn bind(path: &Path) -> Result<Self> {
        crate::clear_stale_socket(path)
            .map_err(Error::io(format!("binding {}", path.display())))?;
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
            _path: BoundPath::new(path),
        })
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

/// The VM closed the connection under us (the other errors are EOF).
fn closed(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
    )
}

/// Why a VM closed our connection without a reply. It closes at once on
/// anyone but its owner and root (the peer check), so for those two it can
/// only have ended meanwhile (another client's save, migration or kill).
fn closed_on_us(socket: &Path) -> Error {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let ours = match std::fs::metadata(socket) {
        Ok(m) => m.uid() == me,
        // Removed: the VM has ended.
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    };
    if me == 0 || ours {
        Error::Gone(format!(
            "{}: the VM closed the connection without a reply: it ended meanwhile",
            socket.display()
        ))
    } else {
        Error::Refused(format!(
            "{}: the VM refused the connection (only its owner and root may control it)",
            socket.display()
        ))
    }
}

/// Connects to a VM's control socket. No socket, or no listener on it, is
/// most often a VM that ended since it was looked up.
fn connect(socket: &Path) -> Result<UnixStream> {
    UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            Error::Gone(format!(
                "{}: no VM listens there (it has ended, or its socket was removed)",
                socket.display()
            ))
        }
        _ => Error::io(format!("control socket {}", socket.display()))(e),
    })
}

/// Sends one request and reads one reply (a one-request [`Session`]).
pub fn call(socket: &Path, req: &Request, timeout: Duration) -> Result<Reply> {
    Session::connect(socket)?.call(req, &[], Some(timeout))
}

/// Descriptors passed with one message, or one request, at most
/// (SCM_RIGHTS).
pub const MAX_FDS: usize = 16;

/// Sends `bytes` with `fds` attached (SCM_RIGHTS) in one message.
pub fn send_with_fds(stream: &UnixStream, bytes: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("at most {MAX_FDS} descriptors in one message"),
        ));
    }
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    };
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 16];
    // SAFETY: a zeroed msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let data_len = std::mem::size_of_val(fds) as u32;
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE(data_len) } as usize;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: msg_control points at `control`, at least `space` bytes
        // (128 bytes hold 16 descriptors), so the first header and its data
        // fit; we write exactly CMSG_LEN(data_len) bytes.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&raw const msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(data_len) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c).cast(), fds.len());
        }
    }
    let mut sent = 0;
    while sent < bytes.len() {
        // SAFETY: msg points at live buffers for the call.
        let n = unsafe { libc::sendmsg(stream.as_raw_fd(), &raw const msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        sent += n as usize;
        // The rest goes without descriptors (they went with the first bytes).
        msg.msg_control = std::ptr::null_mut();
        msg.msg_controllen = 0;
        iov.iov_base = bytes[sent..].as_ptr().cast_mut().cast();
        iov.iov_len = bytes.len() - sent;
        msg.msg_iov = &raw mut iov;
    }
    Ok(())
}

/// A request that came with more than [`MAX_FDS`] descriptors, in one
/// message or several.
pub fn too_many_fds() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("more than {MAX_FDS} descriptors in one request"),
    )
}

/// Reads what `stream` has into `buf`, taking the descriptors that came
/// with it (close-on-exec); more than MAX_FDS, or a truncated control
/// message, closes them all and fails with `InvalidInput`.
pub fn recv_with_fds(
    stream: &UnixStream,
    buf: &mut [u8],
) -> std::io::Result<(usize, Vec<std::os::fd::OwnedFd>)> {
    use std::os::fd::FromRawFd;
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 16];
    // SAFETY: a zeroed msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: msg points at live buffers for the call.
    let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &raw mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel wrote into
    // `control`, within msg_controllen; each SCM_RIGHTS payload holds
    // whole ints that are now our descriptors.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&raw const msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c);
                let len = (*c).cmsg_len - (data as usize - c as usize);
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let mut raw = [0u8; std::mem::size_of::<RawFd>()];
                    std::ptr::copy_nonoverlapping(
                        data.add(i * raw.len()),
                        raw.as_mut_ptr(),
                        raw.len(),
                    );
                    let fd = RawFd::from_ne_bytes(raw);
                    fds.push(std::os::fd::OwnedFd::from_raw_fd(fd));
                }
            }
            c = libc::CMSG_NXTHDR(&raw const msg, c);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 || fds.len() > MAX_FDS {
        return Err(too_many_fds());
    }
    Ok((n as usize, fds))
}

/// A conversation with a VM that lasts more than one request (a save:
/// the request with its file, then the commit once the file is in place).
#[derive(Debug)]
pub struct Session {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    socket: PathBuf,
}

impl Session {
    pub fn connect(socket: &Path) -> Result<Self> {
        let what = || format!("control socket {}", socket.display());
        let stream = connect(socket)?;
        let reader = BufReader::new(stream.try_clone().map_err(Error::io(what()))?);
        Ok(Self {
            stream,
            reader,
            socket: socket.to_path_buf(),
        })
    }

    /// Sends one request with `fds`, and waits up to `timeout` (None:
    /// forever) for its reply.
    pub fn call(
        &mut self,
        req: &Request,
        fds: &[RawFd],
        timeout: Option<Duration>,
    ) -> Result<Reply> {
        let what = || format!("control socket {}", self.socket.display());
        let mut line = serde_json::to_string(req).map_err(|e| Error::Protocol(e.to_string()))?;
        line.push('\n');
        match send_with_fds(&self.stream, line.as_bytes(), fds) {
            Err(e) if closed(&e) => return Err(closed_on_us(&self.socket)),
            other => other.map_err(Error::io(what()))?,
        }
        self.stream
            .set_read_timeout(timeout)
            .map_err(Error::io(what()))?;
        let mut reply = String::new();
        match self.reader.read_line(&mut reply) {
            Ok(0) => Err(closed_on_us(&self.socket)),
            Ok(_) => serde_json::from_str(&reply)
                .map_err(|e| Error::Protocol(format!("bad reply from the VM: {e}"))),
            Err(e) if closed(&e) => Err(closed_on_us(&self.socket)),
            Err(e) => Err(Error::io(what())(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    /// A VM that ends with our request unread (another client's save or
    /// kill) gives one plain line, however the close reaches us.
    #[test]
    fn a_vm_that_goes_away_mid_request_says_so() {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("control.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        for unread in [false, true] {
            let server = {
                let listener = listener.try_clone().unwrap();
                std::thread::spawn(move || {
                    let (s, _) = listener.accept().unwrap();
                    if unread {
                        // Closing over unread bytes resets the connection.
                        std::thread::sleep(Duration::from_millis(100));
                    } else {
                        let mut line = String::new();
                        BufReader::new(&s).read_line(&mut line).unwrap();
                    }
                    drop(s);
                })
            };
            let mut session = Session::connect(&sock).unwrap();
            let e = session
                .call(&Request::Status, &[], Some(Duration::from_secs(5)))
                .unwrap_err()
                .to_string();
            server.join().unwrap();
            assert!(
                e.contains("the VM closed the connection without a reply: it ended meanwhile"),
                "unread {unread}: {e}"
            );
        }
        // A socket nobody listens on, and none at all.
        drop(listener);
        for _ in 0..2 {
            let e = call(&sock, &Request::Status, Duration::from_secs(5)).unwrap_err();
            assert!(matches!(e, Error::Gone(_)), "{e}");
            assert!(e.to_string().contains("no VM listens there"), "{e}");
            let _ = std::fs::remove_file(&sock);
        }
    }
}
