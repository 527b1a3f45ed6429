//! Socket paths the user names (a serial console's socket) or that a VM
//! leaves (its control socket): only a socket nobody listens on is ever
//! removed to bind a new one, and only the socket a process bound is
//! removed when it is done. A path that names anything else (a typo
//! naming a disk image, /dev/zero) is refused, never deleted.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Clears the way to bind a socket at `path`: nothing there, or a stale
/// socket (no listener), which is removed. Anything else is an error that
/// says what is there.
pub fn clear_stale_socket(path: &Path) -> io::Result<()> {
    let md = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    if !md.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "exists and is not a socket: refusing to replace it",
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "a process listens on it already",
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path),
        Err(e) => Err(e),
    }
}

/// A socket this process bound, removed when dropped if the path still
/// names it (not a file someone put there since).
#[derive(Debug)]
pub struct BoundPath {
    path: PathBuf,
    id: Option<(u64, u64)>,
}

impl BoundPath {
    /// Records the socket now at `path` (call right after binding it).
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            id: identity(path),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.file_type().is_socket())
        .map(|m| (m.dev(), m.ino()))
}

impl Drop for BoundPath {
    fn drop(&mut self) {
        if self.id.is_some() && identity(&self.path) == self.id {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn only_stale_sockets_give_way() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s");
        clear_stale_socket(&p).unwrap();
        // A file is kept, whatever it is.
        std::fs::write(&p, b"the user's data").unwrap();
        let e = clear_stale_socket(&p).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&p).unwrap(), b"the user's data");
        std::fs::remove_file(&p).unwrap();
        // A live socket is another process's.
        let live = UnixListener::bind(&p).unwrap();
        assert_eq!(
            clear_stale_socket(&p).unwrap_err().kind(),
            io::ErrorKind::AddrInUse
        );
        // A stale one goes.
        drop(live);
        clear_stale_socket(&p).unwrap();
        assert!(!p.exists());
    }

    #[test]
    fn only_our_own_socket_is_removed_when_done() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s");
        let l = UnixListener::bind(&p).unwrap();
        drop(BoundPath::new(&p));
        assert!(!p.exists(), "ours goes");
        drop(l);
        let l = UnixListener::bind(&p).unwrap();
        let ours = BoundPath::new(&p);
        // Replaced meanwhile by a file: it stays.
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, b"x").unwrap();
        drop(ours);
        assert_eq!(std::fs::read(&p).unwrap(), b"x");
        drop(l);
    }
}
