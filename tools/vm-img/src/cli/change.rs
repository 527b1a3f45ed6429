//! Arguments of the subcommands that make an image or change one in place:
//! create, resize, amend, snapshot, bitmap.

use std::path::PathBuf;

use clap::{ArgGroup, Args};

use super::Common;

/// One `bitmap` action, in the order given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BitmapAction {
    Add,
    Remove,
    Clear,
    Enable,
    Disable,
    /// Merge the named source bitmap into BITMAP.
    Merge(String),
}

#[derive(Debug, Args)]
#[command(
    after_help = "Actions run in the order given, and the image changes only if all \
of them succeed. Exit codes: 0 success, 1 error."
)]
pub struct BitmapArgs {
    #[command(flatten)]
    pub common: Common,
    /// Add BITMAP, empty and enabled (it then records every write).
    #[arg(long = "add")]
    pub add: bool,
    /// Remove BITMAP.
    #[arg(long = "remove")]
    pub remove: bool,
    /// Clear BITMAP's bits.
    #[arg(long = "clear")]
    pub clear: bool,
    /// Enable BITMAP: it records writes again.
    #[arg(long = "enable")]
    pub enable: bool,
    /// Disable BITMAP: it keeps its bits and records no writes.
    #[arg(long = "disable")]
    pub disable: bool,
    /// Add SOURCE's bits to BITMAP (SOURCE is in -b's image, else in this one).
    #[arg(long = "merge", value_name = "SOURCE", action = clap::ArgAction::Append)]
    pub merge: Vec<String>,
    /// Granularity of a new bitmap (bytes, a power of two from 512; K and M
    /// suffixes); the cluster size within 4K..64K by default.
    #[arg(short = 'g', long = "granularity", value_name = "GRANULARITY")]
    pub granularity: Option<String>,
    /// The image holding --merge's SOURCE bitmap.
    #[arg(short = 'b', value_name = "SOURCE_FILE")]
    pub source_file: Option<PathBuf>,
    /// The format of -b's image.
    #[arg(short = 'F', value_name = "SOURCE_FMT")]
    pub source_format: Option<String>,
    pub filename: PathBuf,
    #[arg(value_name = "BITMAP")]
    pub bitmap: String,
    /// The actions in command-line order (filled in by `crate::parse`).
    #[arg(skip)]
    pub actions: Vec<BitmapAction>,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub common: Common,
    /// Format options: backing_file, backing_fmt, cluster_size, preallocation,
    /// lazy_refcounts, compat, refcount_bits, size (comma separated, key=value;
    /// `help` lists them all).
    #[arg(short = 'o', value_name = "OPTIONS", action = clap::ArgAction::Append)]
    pub options: Vec<String>,
    /// Backing file (qcow2 only).
    #[arg(short = 'b', long = "backing", value_name = "BACKING_FILE")]
    pub backing: Option<String>,
    /// Backing file format.
    #[arg(
        short = 'F',
        long = "backing-format",
        value_name = "BACKING_FMT",
        overrides_with = "backing_format"
    )]
    pub backing_format: Option<String>,
    /// Do not open the backing file (the size must then be given).
    #[arg(short = 'u')]
    pub unsafe_backing: bool,
    /// A secret for encryption: `secret,id=ID,data=PASSWORD[,format=base64]`
    /// or `secret,id=ID,file=PATH`, named by `-o encrypt.key-secret=ID`
    /// (qcow2 with `encrypt.format=luks`) or `-o key-secret=ID` (`-f luks`).
    #[arg(long = "object", value_name = "OBJECT", action = clap::ArgAction::Append)]
    pub objects: Vec<String>,
    /// The image to make (needed unless `-o help` only lists options).
    pub filename: Option<PathBuf>,
    /// Virtual size, e.g. 4G; defaults to the backing file's size.
    pub size: Option<String>,
}

impl CreateArgs {
    /// The image to make: qemu-img's error when none is named.
    pub fn file(&self) -> anyhow::Result<&std::path::Path> {
        self.filename
            .as_deref()
            .ok_or_else(|| crate::hint::try_help("Expecting image file name").into())
    }
}

#[derive(Debug, Args)]
pub struct ResizeArgs {
    #[command(flatten)]
    pub common: Common,
    /// Allow shrinking (data past the new end is lost).
    #[arg(long = "shrink")]
    pub shrink: bool,
    /// Preallocate the grown area: off, metadata (qcow2: clusters mapped,
    /// nothing written), falloc (fallocate) or full (zeroes written).
    #[arg(long = "preallocation", value_name = "MODE")]
    pub preallocation: Option<String>,
    pub filename: PathBuf,
    /// New size: absolute (24G), or relative (+20G, -1G).
    #[arg(allow_hyphen_values = true)]
    pub size: String,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("action").args(["list", "apply", "create", "delete"])))]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub common: Common,
    /// List the snapshots (also what happens with no action given).
    #[arg(short = 'l')]
    pub list: bool,
    /// Revert the image to SNAPSHOT (its ID, else its name).
    #[arg(short = 'a', value_name = "SNAPSHOT")]
    pub apply: Option<String>,
    /// Take a snapshot named SNAPSHOT of the image as it is now.
    #[arg(short = 'c', value_name = "SNAPSHOT")]
    pub create: Option<String>,
    /// Delete SNAPSHOT (its ID, else its name).
    #[arg(short = 'd', value_name = "SNAPSHOT")]
    pub delete: Option<String>,
    /// List without locks (force share), as for an image in use.
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
    pub filename: PathBuf,
}

#[derive(Debug, Args)]
pub struct AmendArgs {
    #[command(flatten)]
    pub common: Common,
    /// Options to change (comma separated, key=value): compat (0.10, 1.1),
    /// lazy_refcounts, refcount_bits, size, backing_file, backing_fmt.
    #[arg(short = 'o', value_name = "OPTIONS", action = clap::ArgAction::Append, required = true)]
    pub options: Vec<String>,
    /// Show progress (qemu-img's steps for a refcount width change; 0 and
    /// 100% for the rest).
    #[arg(short = 'p')]
    pub progress: bool,
    /// Cache mode (accepted for compatibility; amend always syncs).
    #[arg(short = 't', value_name = "CACHE")]
    pub cache: Option<String>,
    /// Allow changes that may lose data (accepted for compatibility).
    #[arg(long = "force")]
    pub force: bool,
    /// The image to change (needed unless `-o help` lists a format's
    /// options, given with -f).
    pub filename: Option<PathBuf>,
}
