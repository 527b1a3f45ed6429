//! `save` on the control socket: the VM pauses, the emulator thread reads
//! the machine's state, and a thread of its own writes the file that came
//! with the request (guest I/O and other clients are never stuck behind
//! it). The VM then waits on the save's connection: `save-commit` (the
//! file is in place) ends it; the connection closing, or a failed write,
//! resumes it as it was. So a save that fails or is killed loses nothing.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{channel, Receiver};
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use vm_control::{Reply, Request, SaveReport};
use vmm::state::file::{self, Saved, WriteStats};
use vmm_sys_util::eventfd::EventFd;

use crate::monitor::Machine;

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    /// The writer thread runs.
    Writing,
    /// Written and answered: waiting for the commit.
    Written,
}

/// A save in progress.
#[derive(Debug)]
pub(crate) struct SaveJob {
    stream: UnixStream,
    /// The VM ran when the save began (it runs again if the save ends
    /// without a commit).
    pub(crate) was_running: bool,
    pause_ms: u64,
    done: EventFd,
    result: Receiver<Result<WriteStats, String>>,
    phase: Phase,
    buf: Vec<u8>,
}

/// What happened on a save's descriptors.
#[derive(Debug)]
pub(crate) enum SaveEvent {
    /// Nothing decided yet.
    Pending,
    /// The file is written; reply with this.
    Written(Reply),
    /// The save is over without a commit (failed, or its client left):
    /// the reply if one is owed, and the VM goes on.
    Abandoned(Option<Reply>, String),
    /// The client committed: end the VM.
    Commit,
}

/// Checks the descriptor a save came with: exactly one, an empty regular
/// file this process may write.
fn save_file(fds: Vec<OwnedFd>) -> Result<File> {
    let mut fds = fds.into_iter();
    let (Some(fd), None) = (fds.next(), fds.next()) else {
        bail!("save needs exactly one file descriptor (the file to write)");
    };
    let f = File::from(fd);
    let meta = f.metadata()?;
    if !meta.file_type().is_file() {
        bail!("save: the descriptor is not a regular file");
    }
    if meta.len() != 0 {
        bail!("save: the file is not empty");
    }
    if !crate::fds::writable(&f) {
        bail!("save: the file is not open for writing");
    }
    Ok(f)
}

impl SaveJob {
    /// Pauses the VM (if it runs), reads its state and starts the writer.
    /// On an error the VM is as it was.
    pub(crate) fn start(
        m: &Machine,
        running: bool,
        fsync: bool,
        fds: Vec<OwnedFd>,
        stream: UnixStream,
    ) -> Result<Self> {
        let out = save_file(fds)?;
        let t0 = Instant::now();
        if running {
            if let Err(e) = m.vm().pause() {
                m.vm().resume();
                return Err(anyhow!("not saved: {e}"));
            }
        }
        let machine = match m.vm().save_state() {
            Ok(s) => s,
            Err(e) => {
                if running {
                    m.vm().resume();
                }
                return Err(anyhow!("not saved: {e}"));
            }
        };
        let pause_ms = t0.elapsed().as_millis() as u64;
        let saved = Saved {
            spec: m.spec.clone(),
            machine,
        };
        let (mem, memfd) = m.vm().memory();
        let mem = mem.clone();
        let memfd = memfd.and_then(|f| f.try_clone().ok());
        let done = EventFd::new(libc::EFD_NONBLOCK)?;
        let wake = done.try_clone()?;
        let (tx, rx) = channel();
        let started = std::thread::Builder::new()
            .name("save".into())
            .spawn(move || {
                let r = file::write(&out, &saved, &mem, memfd.as_ref(), fsync)
                    .map_err(|e| e.to_string());
                let _ = tx.send(r);
                let _ = wake.write(1);
            });
        if let Err(e) = started {
            if running {
                m.vm().resume();
            }
            return Err(anyhow!("not saved: starting the writer: {e}"));
        }
        stream.set_nonblocking(true)?;
        Ok(Self {
            stream,
            was_running: running,
            pause_ms,
            done,
            result: rx,
            phase: Phase::Writing,
            buf: Vec::new(),
        })
    }

    /// The descriptors to poll: the writer's, and the client's once the
    /// file is written (before, an early hang-up would wake us in a loop).
    pub(crate) fn fds(&self) -> Vec<RawFd> {
        match self.phase {
            Phase::Writing => vec![self.done.as_raw_fd()],
            Phase::Written => vec![self.stream.as_raw_fd()],
        }
    }

    pub(crate) fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Called when one of `fds` is ready.
    pub(crate) fn on_ready(&mut self) -> SaveEvent {
        match self.phase {
            Phase::Writing => {
                let _ = self.done.read();
                match self.result.try_recv() {
                    Ok(Ok(stats)) => {
                        self.phase = Phase::Written;
                        let mut reply = Reply::ok(None);
                        reply.saved = Some(SaveReport {
                            memory_bytes: stats.memory_bytes,
                            written_bytes: stats.written_bytes,
                            state_bytes: stats.state_bytes,
                            file_bytes: stats.file_bytes,
                            pause_ms: self.pause_ms,
                            write_ms: stats.write_ms,
                            sync_ms: stats.sync_ms,
                        });
                        SaveEvent::Written(reply)
                    }
                    Ok(Err(e)) => {
                        let msg = format!("not saved: {e}");
                        SaveEvent::Abandoned(Some(Reply::err(msg.clone())), msg)
                    }
                    Err(_) => SaveEvent::Pending,
                }
            }
            Phase::Written => self.read_commit(),
        }
    }

    fn read_commit(&mut self) -> SaveEvent {
        let mut chunk = [0u8; 512];
        loop {
            match (&self.stream).read(&mut chunk) {
                Ok(0) => {
                    return SaveEvent::Abandoned(None, "the saving client left".into());
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                        return match Request::parse(&self.buf[..end]) {
                            Ok(Request::SaveCommit) => SaveEvent::Commit,
                            _ => SaveEvent::Abandoned(
                                Some(Reply::err("the save was abandoned")),
                                "the saving client abandoned it".into(),
                            ),
                        };
                    }
                    if self.buf.len() > 4096 {
                        return SaveEvent::Abandoned(None, "bad commit".into());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return SaveEvent::Pending,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return SaveEvent::Abandoned(None, e.to_string()),
            }
        }
    }
}
