//! Typed errors of the machine.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open /dev/kvm: {0}")]
    Kvm(#[source] kvm_ioctls::Error),
    #[error("KVM API version {0} is not supported (need 12)")]
    KvmVersion(i32),
    #[error("KVM lacks a required capability: {0}")]
    KvmCap(&'static str),
    #[error("{what}: {source}")]
    KvmCall {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("guest memory: {0}")]
    Memory(String),
    #[error("guest memory of {requested} bytes is more than the host's {available} bytes")]
    MemoryTooLarge { requested: u64, available: u64 },
    #[error("kernel {path}: {message}")]
    Kernel { path: PathBuf, message: String },
    #[error("initrd {path}: {message}")]
    Initrd { path: PathBuf, message: String },
    #[error("boot setup: {0}")]
    Boot(String),
    /// A saved state that this machine cannot take.
    #[error("saved state: {0}")]
    State(String),
    /// A saved-VM file that is not one, or is damaged.
    #[error("saved VM: {0}")]
    SavedFile(String),
    #[error("saved VM: written by a newer vmtools (format version {0}; this one reads up to {v})", v = crate::state::file::VERSION)]
    SavedFileVersion(u32),
    /// A migration stream that is damaged, cut short or not one.
    #[error("migration stream: {0}")]
    Stream(String),
    /// The source ended the stream on purpose, for this reason.
    #[error("the source ended the migration: {0}")]
    SourceGaveUp(String),
    #[error("migration stream: sent by a newer vmtools (version {0}; this one reads up to {v})", v = crate::state::stream::VERSION)]
    StreamVersion(u32),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Self {
        move |source| Self::KvmCall { what, source }
    }
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
