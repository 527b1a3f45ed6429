//! vm-migrate's command line: virsh migrate and its job verbs.

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "vm-migrate",
    version,
    about = "Live-migrate KVM virtual machines between vm-run processes",
    long_about = "vm-migrate moves a running VM to another vm-run, on this host or another, \
while it runs (virsh migrate --live): guest memory is copied in rounds while the guest \
goes on, then the last pages and the machine's state in one short pause. The VM ends \
at the source only once the destination runs it; on any failure it runs on at the \
source as before.\n\n\
Transports, as QEMU names them: tcp:HOST:PORT, unix:PATH, exec:COMMAND (e.g. \
exec:ssh host2 vm-migrate recv -).\n\n\
Records are printed as JSON.\n\n\
Exit codes: 0 ok, 1 error, 2 usage error."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send a running VM to a destination (virsh migrate --live).
    ///
    /// Ctrl-C (SIGINT), SIGTERM or SIGHUP cancels the migration before its
    /// last copy, as virsh's does: the VM runs on here.
    Send(SendArgs),
    /// Receive a VM: listen, then start it in vm-run once it has arrived
    /// whole; prints its state as `vm-run start --detach` does.
    Recv(RecvArgs),
    /// How a migration in progress is doing (virsh domjobinfo).
    Status {
        /// The VM's name.
        vm: String,
    },
    /// Abandon a migration in progress; the VM runs on here (virsh
    /// domjobabort).
    Cancel {
        /// The VM's name.
        vm: String,
    },
    /// Change the downtime budget or the bandwidth cap of a migration in
    /// progress (virsh migrate-setmaxdowntime, migrate-setspeed); prints
    /// its progress with the knobs as they now are. `status` shows them
    /// too (virsh migrate-getspeed).
    Set(SetArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("knob").required(true).multiple(true)))]
pub struct SetArgs {
    /// The VM's name.
    pub vm: String,
    /// The longest pause for the last copy, in ms.
    #[arg(long, value_name = "MS", group = "knob", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_downtime: Option<u64>,
    /// A cap on the rate in MiB/s, or `unlimited` to lift it.
    #[arg(long, value_name = "MIB_S|unlimited", group = "knob", value_parser = parse_cap)]
    pub bandwidth: Option<Cap>,
}

/// A bandwidth cap as `set` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    MibPerSec(u64),
    Unlimited,
}

fn parse_cap(s: &str) -> Result<Cap, String> {
    if s == "unlimited" {
        return Ok(Cap::Unlimited);
    }
    match s.parse::<u64>() {
        Ok(0) => Err("0 moves nothing: give 1 or more, or `unlimited`".into()),
        Ok(n) => Ok(Cap::MibPerSec(n)),
        Err(_) => Err("a number of MiB/s, or `unlimited`".into()),
    }
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The VM's name.
    pub vm: String,
    /// Where to: tcp:HOST:PORT, unix:PATH or exec:COMMAND.
    pub to: String,
    /// The longest pause for the last copy, in ms (virsh
    /// migrate-setmaxdowntime).
    #[arg(long, value_name = "MS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_downtime: u64,
    /// A cap on the rate, in MiB/s (virsh migrate-setspeed); default:
    /// unlimited. `vm-migrate set` changes it while the copy runs.
    #[arg(long, value_name = "MIB_S", value_parser = clap::value_parser!(u64).range(1..))]
    pub bandwidth: Option<u64>,
    /// Hold the vCPUs back while the rounds do not shrink.
    #[arg(long)]
    pub auto_converge: bool,
    /// After this many seconds, pause and finish whatever is left.
    #[arg(long, value_name = "S")]
    pub timeout: Option<u64>,
    /// Non-shared storage: every writable disk's contents go along, into
    /// images the destination has made with the same size (its --disk
    /// names them).
    #[arg(long)]
    pub copy_storage_all: bool,
    /// Non-shared storage for these disks only (by id, comma-separated);
    /// the others are on shared storage.
    #[arg(long, value_name = "ID,...", value_delimiter = ',')]
    pub migrate_disks: Vec<String>,
    /// Connections that carry guest memory side by side over tcp: or
    /// unix:, each with a thread at either end (QEMU's multifd-channels);
    /// worth it where both hosts have cores to spare. Default 1; exec:
    /// always uses one.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=16))]
    pub streams: Option<u32>,
    /// No progress bar, even on a terminal.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct RecvArgs {
    /// Where to wait: tcp:HOST:PORT (port 0: any free one, printed),
    /// unix:PATH, or - for the stream on stdin and the replies on stdout
    /// (the far end of an exec: transport).
    #[arg(long, value_name = "WHERE", default_value = "-")]
    pub listen: String,
    /// The same as --listen WHERE, for `exec:ssh host2 vm-migrate recv -`.
    #[arg(value_name = "WHERE", conflicts_with = "listen")]
    pub at: Option<String>,
    /// A spec whose host-local parts (disk paths, console, taps,
    /// placement) replace the arriving ones (virsh migrate --xml).
    #[arg(long, value_name = "SPEC")]
    pub spec: Option<String>,
    /// Run under this name.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Disk ID uses PATH here. Repeatable.
    #[arg(long, value_name = "ID=PATH[,format=F]")]
    pub disk: Vec<String>,
    /// NIC ID runs on this tap, or a new tap on this bridge. Repeatable.
    #[arg(long, value_name = "ID,tap=NAME|ID,bridge=NAME")]
    pub nic: Vec<String>,
    /// Serial console file (default: console.log in the VM's state folder).
    #[arg(long, value_name = "PATH")]
    pub console: Option<std::path::PathBuf>,
    /// Stay paused once arrived, until `vm-run resume`.
    #[arg(long)]
    pub paused: bool,
}
