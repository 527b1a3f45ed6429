//! Typed errors for image access. Every message is a complete clause the
//! tools can print after the image's name.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Unsupported { path: PathBuf, message: String },
    /// Another process holds or refuses to share a lock the open needs;
    /// `message` says which (`Failed to get "write" lock`).
    #[error("{path}: {message}: is another process using the image?")]
    Locked { path: PathBuf, message: String },
    #[error("could not open backing file: {path}: {message}")]
    Backing { path: PathBuf, message: String },
    /// The image names a backing file without its format. Guessing it
    /// would let a guest that wrote a header into a raw disk pick the host
    /// file its next VM reads, so nothing that runs a VM or writes an image
    /// guesses.
    #[error(
        "{image}: the format of its backing file '{backing}' is not recorded (never guessed \
         for a write or a VM); record it with: vm-img rebase -u -F FMT -b '{backing}' '{image}'"
    )]
    UnrecordedBackingFormat { image: PathBuf, backing: String },
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn corrupt(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Corrupt {
            path: path.into(),
            message: message.into(),
        }
    }
    pub(crate) fn unsupported(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Unsupported {
            path: path.into(),
            message: message.into(),
        }
    }
    /// True when a backing file is missing or unreadable (qemu-img's compare
    /// and check report these with their own exit codes).
    pub fn is_backing(&self) -> bool {
        matches!(
            self,
            Self::Backing { .. } | Self::UnrecordedBackingFormat { .. }
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
