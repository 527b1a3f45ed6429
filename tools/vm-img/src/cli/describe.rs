//! Arguments of the subcommands that read an image and describe it: info,
//! check, compare, map, measure, bench.

use std::path::PathBuf;

use clap::Args;

use super::{Common, OutputFormat, RepairMode};

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
