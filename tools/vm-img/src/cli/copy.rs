//! Arguments of the subcommands that move data between images: convert,
//! commit, rebase, dd.

use std::path::PathBuf;

use clap::Args;

use super::{CacheArg, Common};

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Source format; probed when left out.
    #[arg(short = 'f', value_name = "FMT")]
    pub format: Option<String>,
    /// The sources are option lists (`driver=qcow2,file.filename=PATH`),
    /// not file names.
    #[arg(long = "image-opts")]
    pub image_opts: bool,
    /// Output format (default raw).
    #[arg(short = 'O', value_name = "OUTPUT_FMT", default_value = "raw")]
    pub output_format: String,
    /// Compress the output (qcow2), on every core.
    #[arg(short = 'c')]
    pub compress: bool,
    /// Convert an internal snapshot of the source: `snapshot.id=ID`,
    /// `snapshot.name=NAME`, or an ID or name.
    #[arg(short = 'l', value_name = "SNAPSHOT_PARAM")]
    pub snapshot: Option<String>,
    /// Write into OUTPUT, which exists already (no new image is made).
    #[arg(short = 'n')]
    pub no_create: bool,
    /// Give the qcow2 output this backing file, and copy only what the
    /// source's top layer holds (the backing file holds the rest).
    #[arg(short = 'B', value_name = "BACKING_FILE")]
    pub backing: Option<String>,
    /// The backing file's format (needed with -B).
    #[arg(
        short = 'F',
        value_name = "BACKING_FMT",
        overrides_with = "backing_format"
    )]
    pub backing_format: Option<String>,
    /// Zero runs shorter than SIZE are written as data (default 4k; 0
    /// writes every byte, for a fully allocated output).
    #[arg(short = 'S', value_name = "SIZE")]
    pub sparse: Option<String>,
    /// Allow out-of-order writes (qemu-img's -W). Taken as allowed: vm-img
    /// writes in order, which -W permits too.
    #[arg(short = 'W')]
    pub out_of_order: bool,
    /// qemu-img's number of parallel copy requests (1..16). Taken and
    /// checked; vm-img's own parallelism (a worker per core with -c) stays.
    #[arg(short = 'm', value_name = "NUM_COROUTINES")]
    pub coroutines: Option<String>,
    /// Try copy offloading (qemu-img's -C); qemu-img falls back to copying
    /// when it is not possible, and vm-img always copies. Refused with -c
    /// and -S, as qemu-img.
    #[arg(short = 'C')]
    pub copy_offload: bool,
    /// Output format options, as for create.
    #[arg(short = 'o', value_name = "OPTIONS", action = clap::ArgAction::Append)]
    pub options: Vec<String>,
    /// Show a progress bar.
    #[arg(short = 'p')]
    pub progress: bool,
    /// Cache mode for the output: writeback (default) ends with one fsync,
    /// unsafe skips it; none, writethrough and directsync are accepted and
    /// behave as writeback (the output is new, so one fsync at the end gives
    /// the same durability).
    #[arg(
        short = 't',
        value_enum,
        value_name = "CACHE",
        default_value = "writeback"
    )]
    pub cache: CacheArg,
    /// Cache mode for the source (accepted for compatibility).
    #[arg(short = 'T', value_enum, value_name = "SRC_CACHE")]
    pub src_cache: Option<CacheArg>,
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
    /// Quiet.
    #[arg(short = 'q')]
    pub quiet: bool,
    /// Go on past read errors: a sector that cannot be read is written as
    /// zeroes, with a warning naming it (and a range whose allocation
    /// cannot be read is copied as data).
    #[arg(long = "salvage")]
    pub salvage: bool,
    /// Copy the source's persistent dirty bitmaps too (qcow2 to qcow2).
    #[arg(long = "bitmaps")]
    pub bitmaps: bool,
    /// With --bitmaps, leave out bitmaps that were not saved cleanly
    /// (in-use) instead of failing.
    #[arg(long = "skip-broken-bitmaps")]
    pub skip_broken_bitmaps: bool,
    /// A secret for an encrypted image (`secret,id=ID,data=...`), named
    /// by `encrypt.key-secret=ID` in an --image-opts list.
    #[arg(long = "object", value_name = "OBJECT", action = clap::ArgAction::Append)]
    pub objects: Vec<String>,
    /// SOURCE... OUTPUT: the image to copy (several are read one after
    /// another as one disk), then the image to write; options may come
    /// between them, as qemu-img takes them.
    #[arg(value_name = "FILE", num_args = 1.., action = clap::ArgAction::Append)]
    pub files: Vec<PathBuf>,
    /// The sources (filled in by `crate::parse` from FILE...).
    #[arg(skip)]
    pub sources: Vec<PathBuf>,
    /// The output (the last FILE).
    #[arg(skip)]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct CommitArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(
        short = 't',
        value_enum,
        value_name = "CACHE",
        default_value = "writeback"
    )]
    pub cache: CacheArg,
    /// Commit into this image of the chain (default: the backing file).
    #[arg(short = 'b', value_name = "BASE")]
    pub base: Option<PathBuf>,
    /// Keep the overlay's data (do not empty it).
    #[arg(short = 'd')]
    pub keep: bool,
    #[arg(short = 'p')]
    pub progress: bool,
    pub filename: PathBuf,
}

#[derive(Debug, Args)]
pub struct RebaseArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(
        short = 't',
        value_enum,
        value_name = "CACHE",
        default_value = "writeback"
    )]
    pub cache: CacheArg,
    /// Unsafe: only rewrite the backing file name, copy nothing.
    #[arg(short = 'u')]
    pub unsafe_mode: bool,
    /// The new backing file; "" removes it (the image becomes standalone).
    #[arg(short = 'b', value_name = "BACKING_FILE", required = true)]
    pub backing: String,
    /// The new backing file's format.
    #[arg(
        short = 'F',
        value_name = "BACKING_FMT",
        overrides_with = "backing_format"
    )]
    pub backing_format: Option<String>,
    #[arg(short = 'p')]
    pub progress: bool,
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
    pub filename: PathBuf,
}

#[derive(Debug, Args)]
pub struct DdArgs {
    /// Input format; probed when left out.
    #[arg(short = 'f', value_name = "FMT")]
    pub format: Option<String>,
    /// Output format (default raw).
    #[arg(short = 'O', value_name = "OUTPUT_FMT", default_value = "raw")]
    pub output_format: String,
    /// Read the input without locks (force share).
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
    /// dd's operands: if=INPUT of=OUTPUT [bs=BYTES] [count=BLOCKS]
    /// [skip=BLOCKS] (bs defaults to 512 and takes K, M, G).
    #[arg(value_name = "OPERAND", required = true)]
    pub operands: Vec<String>,
}
