//! How the vmtools find and talk to a VM: the state directory (runtime
//! state and definitions), state.json, and the control socket protocol
//! (one JSON request per line, one JSON reply per line).

mod dirs;
mod naming;
mod proto;
mod socket;

pub use dirs::{
    config_dir, defined_spec_path, read_state, remove_runtime, run_dir, save_definition, vm_dir,
    write_atomic, write_durable, write_state, Liveness,
};
pub use naming::{looks_like_path, vm_name};
pub use proto::{DiskStats, NetStats, Reply, Request, Stats};
pub use socket::{call, peer_allowed, Listener};

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
    #[error("{0}")]
    Refused(String),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
