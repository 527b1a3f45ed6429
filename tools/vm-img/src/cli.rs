//! vm-img's command line, with qemu-img's subcommands, options and meanings.
//! The man pages and completions are generated from these definitions.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "vm-img",
    version,
    // A repeated option's last value counts, as qemu-img takes `-f raw -f qcow2`.
    args_override_self = true,
    about = "Create, inspect, check, resize and convert disk images (qemu-img compatible)",
    long_about = "vm-img manages raw and qcow2 disk images with qemu-img's subcommands, \
options, output and exit codes, so scripts written for qemu-img keep working.\n\n\
Exit codes: 0 success, 1 error (usage errors too). check: 0 clean, 1 not \
checked, 2 corruptions, 3 leaks only, 63 the format has no check. compare: 0 \
identical, 1 different, 2 an image could not be opened, 3 allocation check \
error, 4 read error.",
    after_help = "Sizes take K, M, G, T, P, E (powers of 1024, also KiB, MiB...); a bare number is bytes."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RepairMode {
    Leaks,
    All,
}

/// Cache modes for the output image, as qemu-img's -t.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CacheArg {
    None,
    Writeback,
    Writethrough,
    Directsync,
    Unsafe,
}

impl CacheArg {
    /// Whether the command ends with an fsync.
    pub fn syncs(self) -> bool {
        self != Self::Unsafe
    }
    pub fn direct(self) -> bool {
        matches!(self, Self::None | Self::Directsync)
    }
}

#[derive(Debug, Args)]
pub struct Common {
    /// Image format (raw, qcow2); probed from the contents when left out.
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    pub format: Option<String>,
    /// Quiet: no progress or informational messages.
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// FILENAME is an option list (driver=qcow2,file.filename=PATH), as
    /// qemu-img's --image-opts; only the file protocol is supported.
    #[arg(long = "image-opts")]
    pub image_opts: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new image.
    Create(CreateArgs),
    /// Describe an image.
    Info(InfoArgs),
    /// Check a qcow2 image for leaks and corruptions, optionally repairing them.
    Check(CheckArgs),
    /// Change an image's virtual size.
    Resize(ResizeArgs),
    /// Copy an image to another file, changing format or compressing.
    Convert(ConvertArgs),
    /// Compare the guest-visible contents of two images.
    Compare(CompareArgs),
    /// Show how an image's guest ranges are stored.
    Map(MapArgs),
    /// Write an overlay's changes into its backing file.
    Commit(CommitArgs),
    /// Change an image's backing file.
    Rebase(RebaseArgs),
    /// List, create, apply or delete a qcow2 image's internal snapshots.
    Snapshot(SnapshotArgs),
    /// Copy part of an image into a new one, with dd's operands.
    Dd(DdArgs),
    /// How large a new image would be: for a size, or for an image's data.
    Measure(MeasureArgs),
    /// Change a qcow2 image's options in place (compat, lazy_refcounts,
    /// refcount_bits, size, backing_file, backing_fmt).
    Amend(AmendArgs),
    /// Add, remove, clear, enable, disable or merge a qcow2 image's
    /// persistent dirty bitmaps (what incremental backups read).
    Bitmap(BitmapArgs),
    /// Time a run of reads or writes against an image, as qemu-img bench.
    Bench(BenchArgs),
}

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
pub struct InfoArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(
        long = "output",
        value_enum,
        default_value = "human",
        value_name = "FMT"
    )]
    pub output: OutputFormat,
    /// Describe every image of the backing chain.
    #[arg(long = "backing-chain")]
    pub backing_chain: bool,
    /// A secret for an encrypted image (`secret,id=ID,data=...`), named
    /// by `encrypt.key-secret=ID` in an --image-opts list.
    #[arg(long = "object", value_name = "OBJECT", action = clap::ArgAction::Append)]
    pub objects: Vec<String>,
    /// Read without locks (force share), as for an image in use.
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
    pub filename: PathBuf,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(
        long = "output",
        value_enum,
        default_value = "human",
        value_name = "FMT"
    )]
    pub output: OutputFormat,
    /// Repair leaks, or all errors that can be repaired.
    #[arg(short = 'r', long = "repair", value_enum, value_name = "leaks|all")]
    pub repair: Option<RepairMode>,
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
    pub filename: PathBuf,
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
pub struct CompareArgs {
    /// First image's format.
    #[arg(short = 'f', value_name = "FMT")]
    pub format1: Option<String>,
    /// Second image's format.
    #[arg(short = 'F', value_name = "FMT")]
    pub format2: Option<String>,
    /// Strict: images of different sizes, or allocated in one and not the
    /// other, differ even where both read the same.
    #[arg(short = 's')]
    pub strict: bool,
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
    /// Show a progress bar.
    #[arg(short = 'p')]
    pub progress: bool,
    #[arg(short = 'q')]
    pub quiet: bool,
    /// A secret for an encrypted image (`secret,id=ID,data=...`), named
    /// by `encrypt.key-secret=ID` in an --image-opts list.
    #[arg(long = "object", value_name = "OBJECT", action = clap::ArgAction::Append)]
    pub objects: Vec<String>,
    /// Both images are option lists (`driver=qcow2,file.filename=PATH`).
    #[arg(long = "image-opts")]
    pub image_opts: bool,
    pub image1: PathBuf,
    pub image2: PathBuf,
}

#[derive(Debug, Args)]
pub struct MapArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(
        long = "output",
        value_enum,
        default_value = "human",
        value_name = "FMT"
    )]
    pub output: OutputFormat,
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
    /// Start of the range to map.
    #[arg(short = 's', long = "start-offset", value_name = "OFFSET")]
    pub start: Option<String>,
    /// Length of the range to map.
    #[arg(short = 'l', long = "max-length", value_name = "LENGTH")]
    pub length: Option<String>,
    /// A secret for an encrypted image (`secret,id=ID,data=...`), named
    /// by `encrypt.key-secret=ID` in an --image-opts list.
    #[arg(long = "object", value_name = "OBJECT", action = clap::ArgAction::Append)]
    pub objects: Vec<String>,
    pub filename: PathBuf,
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

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub common: Common,
    /// Number of requests (default 75000).
    #[arg(
        short = 'c',
        value_name = "COUNT",
        default_value = "75000",
        allow_hyphen_values = true
    )]
    pub count: String,
    /// Requests in flight at once (default 64).
    #[arg(
        short = 'd',
        value_name = "DEPTH",
        default_value = "64",
        allow_hyphen_values = true
    )]
    pub depth: String,
    /// Bytes per request; takes K, M, G (default 4096).
    #[arg(
        short = 's',
        value_name = "SIZE",
        default_value = "4096",
        allow_hyphen_values = true
    )]
    pub size: String,
    /// Distance between requests (default: the request size).
    #[arg(short = 'S', value_name = "STEP", allow_hyphen_values = true)]
    pub step: Option<String>,
    /// Offset of the first request (default 0).
    #[arg(
        short = 'o',
        value_name = "OFFSET",
        default_value = "0",
        allow_hyphen_values = true
    )]
    pub offset: String,
    /// Write instead of read.
    #[arg(short = 'w')]
    pub write: bool,
    /// The byte written (0 to 255, default 0).
    #[arg(long = "pattern", value_name = "BYTE")]
    pub pattern: Option<String>,
    /// Flush after every N write requests.
    #[arg(long = "flush-interval", value_name = "N")]
    pub flush_interval: Option<String>,
    /// With --flush-interval: flush without waiting for the requests in
    /// flight.
    #[arg(long = "no-drain")]
    pub no_drain: bool,
    /// O_DIRECT (cache mode none).
    #[arg(short = 'n')]
    pub nocache: bool,
    /// Cache mode: none and directsync open with O_DIRECT; writeback,
    /// writethrough and unsafe do not.
    #[arg(short = 't', value_name = "CACHE")]
    pub cache: Option<String>,
    /// AIO mode (threads, native, io_uring): taken, and requests run on
    /// threads whatever it says.
    #[arg(short = 'i', value_name = "AIO")]
    pub aio: Option<String>,
    /// Open without locks (force share; reads only).
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
    pub filename: PathBuf,
}

#[derive(Debug, Args)]
pub struct MeasureArgs {
    /// The measured image's format; probed when left out.
    #[arg(short = 'f', value_name = "FMT")]
    pub format: Option<String>,
    /// FILENAME is an option list (`driver=qcow2,file.filename=PATH`).
    #[arg(long = "image-opts")]
    pub image_opts: bool,
    /// Measure the image as it was at this internal snapshot (an ID or
    /// name, or `snapshot.id=ID`/`snapshot.name=NAME`).
    #[arg(short = 'l', value_name = "SNAPSHOT")]
    pub snapshot: Option<String>,
    /// Format of the image to be made (default raw).
    #[arg(short = 'O', value_name = "OUTPUT_FMT", default_value = "raw")]
    pub output_format: String,
    /// Creation options of the image to be made, as for create.
    #[arg(short = 'o', value_name = "OPTIONS", action = clap::ArgAction::Append)]
    pub options: Vec<String>,
    /// Measure an empty image of this virtual size instead of FILENAME.
    #[arg(long = "size", value_name = "SIZE", allow_hyphen_values = true)]
    pub size: Option<String>,
    #[arg(long = "output", value_enum, default_value = "human")]
    pub output: OutputFormat,
    /// Read FILENAME without locks (force share).
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
    /// A secret (as for create); checked, not needed to measure.
    #[arg(long = "object", value_name = "OBJECT", action = clap::ArgAction::Append)]
    pub objects: Vec<String>,
    pub filename: Option<PathBuf>,
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
