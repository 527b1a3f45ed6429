//! The transports, named as QEMU names them: `tcp:HOST:PORT`, `unix:PATH`
//! and `exec:COMMAND` to send; `tcp:`, `unix:` or `-` (stdin and stdout)
//! to receive. Either way vm-run gets one connected stream socket, and
//! over tcp: and unix: the listener too, for a source that sends over
//! several streams.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Tcp(String),
    Unix(PathBuf),
    Exec(String),
    /// stdin and stdout (receive only).
    Stdio,
}

impl std::str::FromStr for Target {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        if s == "-" {
            return Ok(Self::Stdio);
        }
        match s.split_once(':') {
            Some(("tcp", a)) if !a.is_empty() => Ok(Self::Tcp(a.to_string())),
            Some(("unix", p)) if !p.is_empty() => Ok(Self::Unix(PathBuf::from(p))),
            Some(("exec", c)) if !c.trim().is_empty() => Ok(Self::Exec(c.to_string())),
            _ => bail!("'{s}': not tcp:HOST:PORT, unix:PATH or exec:COMMAND"),
        }
    }
}

/// The sending side's connection, and the command an `exec:` started.
pub fn connect(t: &Target) -> Result<(OwnedFd, Option<Child>)> {
    match t {
        Target::Tcp(addr) => {
            let mut last = None;
            for a in addr
                .to_socket_addrs()
                .with_context(|| format!("tcp:{addr}"))?
            {
                match TcpStream::connect_timeout(&a, Duration::from_secs(10)) {
                    Ok(s) => return Ok((OwnedFd::from(s), None)),
                    Err(e) => last = Some(e),
                }
            }
            Err(anyhow!(
                "tcp:{addr}: {}",
                last.map_or_else(|| "no address".into(), |e| e.to_string())
            ))
        }
        Target::Unix(p) => {
            let s = UnixStream::connect(p).with_context(|| format!("unix:{}", p.display()))?;
            Ok((OwnedFd::from(s), None))
        }
        Target::Exec(cmd) => {
            let (ours, theirs) = UnixStream::pair()?;
            let child = Command::new("/bin/sh")
                .arg("-c")
                .arg(cmd)
                .stdin(Stdio::from(OwnedFd::from(theirs.try_clone()?)))
                .stdout(Stdio::from(OwnedFd::from(theirs)))
                .spawn()
                .with_context(|| format!("exec:{cmd}"))?;
            Ok((OwnedFd::from(ours), Some(child)))
        }
        Target::Stdio => bail!("'-' is for receiving"),
    }
}

/// What the receiving side waited for: the first connection, the
/// listener (tcp: and unix:) where the source's further streams will
/// connect, and the relay thread of `-`.
#[derive(Debug)]
pub struct Accepted {
    pub conn: OwnedFd,
    pub listener: Option<OwnedFd>,
    pub relay: Option<std::thread::JoinHandle<()>>,
    /// A unix listener's path, removed when this goes if it is still the
    /// socket bound here.
    pub bound: Option<vm_control::BoundPath>,
}

/// The receiving side: waits for one connection. `-` relays stdin and
/// stdout through a socket pair (its relay thread ends when the far end
/// closes), since vm-run takes one socket.
pub fn accept(target: &Target) -> Result<Accepted> {
    match target {
        Target::Tcp(addr) => {
            let listener =
                TcpListener::bind(addr.as_str()).with_context(|| format!("tcp:{addr}"))?;
            let local = listener.local_addr()?;
            eprintln!("vm-migrate: listening on tcp:{local}");
            let (conn, _) = listener.accept()?;
            Ok(Accepted {
                conn: OwnedFd::from(conn),
                listener: Some(OwnedFd::from(listener)),
                relay: None,
                bound: None,
            })
        }
        Target::Unix(path) => {
            let listener =
                UnixListener::bind(path).with_context(|| format!("unix:{}", path.display()))?;
            // Bound here (bind refuses a path that exists), so ours to
            // remove once done, unless something else is there by then.
            let bound = vm_control::BoundPath::new(path);
            eprintln!("vm-migrate: listening on unix:{}", path.display());
            let (conn, _) = listener.accept()?;
            Ok(Accepted {
                conn: OwnedFd::from(conn),
                listener: Some(OwnedFd::from(listener)),
                relay: None,
                bound: Some(bound),
            })
        }
        Target::Stdio => {
            let (ours, theirs) = UnixStream::pair()?;
            let mut up = ours.try_clone()?;
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut std::io::stdin().lock(), &mut up);
                let _ = up.shutdown(std::net::Shutdown::Write);
            });
            let mut down = ours;
            let relay = std::thread::spawn(move || {
                // SAFETY: in this mode stdout carries the replies and
                // nothing else (recv prints to stderr): this thread owns
                // fd 1, and closing it tells the far end we are done.
                let mut out = unsafe { std::fs::File::from_raw_fd(1) };
                let mut buf = vec![0u8; 1 << 16];
                while let Ok(n) = down.read(&mut buf) {
                    if n == 0 || out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
            Ok(Accepted {
                conn: OwnedFd::from(theirs),
                listener: None,
                relay: Some(relay),
                bound: None,
            })
        }
        Target::Exec(_) => bail!("exec: is for sending"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            "tcp:127.0.0.1:4444".parse::<Target>().unwrap(),
            Target::Tcp("127.0.0.1:4444".into())
        );
        assert_eq!(
            "unix:/run/m.sock".parse::<Target>().unwrap(),
            Target::Unix("/run/m.sock".into())
        );
        assert_eq!(
            "exec:ssh h vm-migrate recv -".parse::<Target>().unwrap(),
            Target::Exec("ssh h vm-migrate recv -".into())
        );
        assert_eq!("-".parse::<Target>().unwrap(), Target::Stdio);
        for bad in ["", "tcp:", "file:/x", "exec: ", "host:1"] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }
}
