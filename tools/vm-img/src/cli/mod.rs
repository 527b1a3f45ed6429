//! vm-img's command line, with qemu-img's subcommands, options and meanings.
//! The man pages and completions are generated from these definitions.

use clap::{Args, Parser, Subcommand, ValueEnum};

mod change;
mod copy;
mod describe;

pub use change::{AmendArgs, BitmapAction, BitmapArgs, CreateArgs, ResizeArgs, SnapshotArgs};
pub use copy::{CommitArgs, ConvertArgs, DdArgs, RebaseArgs};
pub use describe::{BenchArgs, CheckArgs, CompareArgs, InfoArgs, MapArgs, MeasureArgs};

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
