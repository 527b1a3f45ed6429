//! How the vmtools find and talk to a VM: the state directory (runtime
//! state and definitions), state.json, and the control socket protocol
//! (one JSON request per line, one JSON reply per line).

mod dirs;
mod lookup;
mod naming;
mod proto;
mod socket;
mod socket_path;
mod vmlock;

pub use dirs::{
    check_trusted, config_dir, defined_spec_path, read_state, remove_runtime, run_dir,
    save_definition, sibling_tool, vm_dir, write_atomic, write_durable, write_state, Liveness,
};
pub use lookup::{lookup, Lookup};
pub use naming::{looks_like_path, vm_name};
pub use proto::{
    CommitReport, DiskSnapshot, DiskStats, MigrateOptions, MigrationReport, NetStats, Reply,
    Request, SaveReport, ShutdownMode, SnapshotReport, Stats,
};
pub use socket::{
    call, peer_allowed, recv_with_fds, send_with_fds, too_many_fds, Listener, Session, MAX_FDS,
};
pub use socket_path::{clear_stale_socket, BoundPath};
pub use vmlock::{holder, remove_if_dead, signal_vm, VmLock};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Protocol(String),
    /// The VM would not talk to us (the peer check: another user's VM).
    #[error("{0}")]
    Refused(String),
    /// The VM ended while we were talking to it (another client's save,
    /// migration or kill), or no VM listens on its socket: it answers no
    /// more, whether or not its process is still there.
    #[error("{0}")]
    Gone(String),
    /// A folder another user could have planted things in.
    #[error("{0}")]
    Untrusted(String),
    /// The name is taken: a VM of that name runs.
    #[error("{0}")]
    Busy(String),
}

impl Error {
    /// True when the VM belongs to another user: its state cannot be read
    /// or its socket refused us.
    pub fn is_other_users(&self) -> bool {
        match self {
            Self::Refused(_) => true,
            Self::Io { source, .. } => source.kind() == std::io::ErrorKind::PermissionDenied,
            _ => false,
        }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
