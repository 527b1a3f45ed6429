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
    #[error("{path}: {message}: {LOCK_QUESTION}")]
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
    /// A snapshot table QEMU will not open and `check -r all` repairs.
    #[error("{path}: {}", fault.message())]
    SnapshotTable { path: PathBuf, fault: TableFault },
    /// A snapshot's L1 table QEMU will not use (`L1Fault` has its words
    /// and the errno QEMU fails with after saying them).
    #[error("{}", .0.message())]
    SnapshotL1(crate::qcow2::meta::L1Fault),
    /// A fault QEMU reports by its errno number alone (qemu-img's snapshot
    /// says `-N (text)`): `errno` is that number, `message` what it was.
    #[error("{path}: {message}")]
    Errno {
        path: PathBuf,
        errno: i32,
        message: String,
    },
    /// A change met metadata that cannot be right and set the image's
    /// corrupt bit before touching anything else (`qcow2::corrupt`): only
    /// `check -r` clears it. `what` is QEMU's account of the fault.
    #[error("{path}: image marked corrupt: {what}")]
    MarkedCorrupt { path: PathBuf, what: String },
    #[error("{0}")]
    Invalid(String),
    /// Freeing a deleted snapshot's clusters failed once the table no
    /// longer named it: they stay as leaks (`check -r leaks` frees them),
    /// as with QEMU.
    #[error("Failed to free the cluster and L1 table: {}", os_text(.0))]
    FreeFailed(io::Error),
}

/// An I/O error's words without Rust's "(os error N)" tail, as QEMU
/// prints strerror.
pub fn os_text(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// What a lock error asks after saying which lock (a tool that words the
/// question its own way strips it).
pub const LOCK_QUESTION: &str = "is another process using the image?";

/// What is wrong with a snapshot table that a repair can mend, in QEMU's
/// terms (its limits: 65536 entries, 1 KiB of extra data per entry, 64 MiB
/// of table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFault {
    /// More entries than QEMU allows; `overhanging` are past the limit.
    TooMany { overhanging: u32 },
    /// Entry `entry` carries more extra data than QEMU keeps.
    TooMuchExtra { entry: usize },
    /// The entries from the `overhanging`-th last on lie past 64 MiB.
    TooBig { overhanging: u32 },
}

impl TableFault {
    /// QEMU's words when an open meets it.
    pub fn message(&self) -> String {
        match self {
            Self::TooMany { .. } => "Snapshot table too large".into(),
            Self::TooMuchExtra { entry } => {
                format!("Too much extra metadata in snapshot table entry {entry}")
            }
            Self::TooBig { .. } => "Snapshot table is too big".into(),
        }
    }

    /// QEMU's words when `check` meets it (after the program's name).
    pub fn check_message(&self) -> String {
        match self {
            Self::TooMany { .. } => "ERROR snapshot table too large".into(),
            _ => format!(
                "ERROR failed to read the snapshot table: {}",
                self.message()
            ),
        }
    }

    /// What `check -r all` does about it ("You can ... with check -r all").
    pub fn remedy(&self) -> String {
        match self {
            Self::TooMuchExtra { .. } => "force-remove this extra metadata".into(),
            Self::TooMany { overhanging } | Self::TooBig { overhanging } => {
                format!("force-remove all {overhanging} overhanging snapshots")
            }
        }
    }

    /// Whether QEMU names the remedy when an open (not a check) fails.
    pub fn remedy_on_open(&self) -> bool {
        !matches!(self, Self::TooMany { .. })
    }
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
    pub(crate) fn errno(path: impl Into<PathBuf>, errno: i32, message: impl Into<String>) -> Self {
        Self::Errno {
            path: path.into(),
            errno,
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
