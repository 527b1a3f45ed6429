//! vm-run's command line: virsh's verbs for the VM lifecycle.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "vm-run",
    version,
    about = "Run KVM virtual machines and manage their lifecycle",
    long_about = "vm-run is the vmtools machine monitor. `start` runs a VM from a spec \
file or a defined name, in the foreground or detached; the other verbs act on a \
running VM through its control socket.\n\n\
A VM is named by its name, the path of its spec or state file, or `-` for a JSON \
document (spec or state) on stdin. Records are printed as JSON when stdout is not a \
terminal, as text on a terminal; --json forces JSON.\n\n\
Exit codes: 0 ok, 1 error, 2 usage error, 3 the guest crashed (foreground start \
under on_crash=destroy)."
)]
pub struct Cli {
    /// Print JSON even on a terminal.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct VmArg {
    /// VM name, spec or state file, or - for JSON on stdin.
    pub vm: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a VM from a spec file or a defined name.
    Start(StartArgs),
    /// Store a spec as a defined VM (with absolute paths).
    Define {
        /// Spec file, or - for stdin.
        spec: String,
    },
    /// Remove a defined VM's definition.
    Undefine(VmArg),
    /// Edit a defined VM's spec with $VISUAL or $EDITOR; saved only if valid.
    Edit(VmArg),
    /// List running VMs (with --all, defined ones too).
    List {
        #[arg(long)]
        all: bool,
    },
    /// Describe a VM (virsh dominfo).
    #[command(alias = "info")]
    Status(VmArg),
    /// Print a VM's state (virsh domstate).
    State {
        #[command(flatten)]
        vm: VmArg,
        /// Also print why it is in that state.
        #[arg(long)]
        reason: bool,
    },
    /// Pause every vCPU.
    Pause(VmArg),
    /// Resume a paused VM.
    Resume(VmArg),
    /// Ask the guest to power off and wait for it.
    Shutdown {
        #[command(flatten)]
        vm: VmArg,
        /// How to ask: press the ACPI power button (acpi, virsh's default;
        /// Linux needs acpid or a desktop to act on it), or Ctrl-Alt-Del,
        /// whose answering reset counts as a power-off.
        #[arg(long, value_enum, default_value_t = ShutdownModeArg::Acpi)]
        mode: ShutdownModeArg,
        /// Seconds to wait for the guest.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Kill the VM if the guest has not gone down in time.
        #[arg(long)]
        force: bool,
    },
    /// Stop a VM at once (virsh destroy).
    #[command(alias = "destroy")]
    Kill(VmArg),
    /// Reset the guest.
    Reboot(VmArg),
    /// Attach to the VM's serial console (a pty or socket; Ctrl-] leaves),
    /// or follow its output (a file).
    Console {
        #[command(flatten)]
        vm: VmArg,
        /// Return once the console has shown TEXT (exit 0), as a script
        /// waits for a prompt; exit 1 if the VM ends first. The output ends
        /// with TEXT. Input from stdin is sent first. A console file is
        /// searched from its start.
        #[arg(long, value_name = "TEXT")]
        until: Option<String>,
    },
    /// Wait until the VM has stopped.
    Wait(VmArg),
    /// Print a running VM's disk and NIC counters (virsh domblkstat, domifstat).
    Stats {
        #[command(flatten)]
        vm: VmArg,
        /// Only this disk.
        #[arg(long, value_name = "ID", conflicts_with = "iface")]
        disk: Option<String>,
        /// Only this network interface (its id in the spec).
        #[arg(long, value_name = "ID")]
        iface: Option<String>,
    },
    /// List a VM's disks (virsh domblklist).
    Disks(VmArg),
    /// List a running VM's network interfaces (virsh domiflist).
    Ifaces(VmArg),
    #[command(hide = true)]
    Serve,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("resumed").args(["restore", "incoming"])))]
pub struct StartArgs {
    /// Spec file, defined name, or - for a spec on stdin.
    #[arg(required_unless_present_any = ["restore", "incoming"])]
    pub vm: Option<String>,
    /// Start from a saved VM (vm-snap save) instead of booting: the spec
    /// and the machine come from the file.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["vm", "incoming"])]
    pub restore: Option<PathBuf>,
    /// Start from a live migration's stream on this inherited descriptor
    /// (a connected socket; vm-migrate recv hands it over): the spec and
    /// the machine come from the source.
    #[arg(long, value_name = "FD", conflicts_with = "vm")]
    pub incoming: Option<i32>,
    /// With --incoming: a listening socket on this inherited descriptor,
    /// where the source's further streams connect when it sends over
    /// several (vm-migrate send --streams); each must show the hello's
    /// token, and any other connection is closed.
    #[arg(long, value_name = "FD", requires = "incoming")]
    pub incoming_listener: Option<i32>,
    /// Stay paused until `vm-run resume` (virsh start --paused): a booted
    /// guest runs no instruction before it, a restored or incoming one
    /// goes on from where it was.
    #[arg(long)]
    pub paused: bool,
    /// With --restore or --incoming: run under this name (an instant clone
    /// of a saved VM).
    #[arg(long, value_name = "NAME", requires = "resumed")]
    pub name: Option<String>,
    /// With --restore or --incoming: this spec replaces the saved one's
    /// host-local parts (disk paths, console, taps, placement); its
    /// devices, memory and vCPUs must match the saved machine's.
    #[arg(long, value_name = "SPEC", requires = "resumed")]
    pub spec: Option<String>,
    /// With --restore or --incoming: disk ID uses PATH (a clone's own
    /// overlay, say); the format stays the saved one unless given.
    /// Repeatable.
    #[arg(long, value_name = "ID=PATH[,format=F]", requires = "resumed")]
    pub disk: Vec<vm_spec::overrides::DiskOverride>,
    /// With --restore or --incoming: NIC ID runs on this tap, or a new tap
    /// on this bridge (the guest keeps its MAC). Repeatable.
    #[arg(long, value_name = "ID,tap=NAME|ID,bridge=NAME", requires = "resumed")]
    pub nic: Vec<vm_spec::overrides::NicOverride>,
    /// Run in the background; print the VM's state once the guest runs.
    #[arg(short, long)]
    pub detach: bool,
    /// Serial console file for a detached VM (default: console.log in its state folder).
    #[arg(long, value_name = "PATH")]
    pub console: Option<PathBuf>,
}

/// `shutdown --mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShutdownModeArg {
    Acpi,
    CtrlAltDel,
}

impl From<ShutdownModeArg> for vm_control::ShutdownMode {
    fn from(m: ShutdownModeArg) -> Self {
        match m {
            ShutdownModeArg::Acpi => Self::Acpi,
            ShutdownModeArg::CtrlAltDel => Self::CtrlAltDel,
        }
    }
}
