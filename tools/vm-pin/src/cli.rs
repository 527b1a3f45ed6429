//! vm-pin's command line: virsh's vcpupin, emulatorpin and schedinfo.

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "vm-pin",
    version,
    about = "Place a VM's threads: vCPU and emulator affinity, CPU shares and bandwidth",
    long_about = "vm-pin shows and changes where a VM's threads run, as virsh vcpupin, \
emulatorpin and schedinfo do. With neither --live nor --config a change applies to \
the running VM, or to the definition of a VM that is not running (virsh's --current).\n\n\
CPU lists take the guide's syntax, e.g. 0-3,^1, and are checked against the host's \
online CPUs.\n\nExit codes: 0 ok, 1 error, 2 usage error."
)]
pub struct Cli {
    /// Print JSON even on a terminal.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone, Copy)]
pub struct Scope {
    /// Change the running VM's threads.
    #[arg(long)]
    pub live: bool,
    /// Change the VM's definition (used at its next start).
    #[arg(long)]
    pub config: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show or set vCPU affinity (virsh vcpupin).
    Vcpu {
        /// VM name, spec or state file, or - for JSON on stdin.
        vm: String,
        /// The vCPU to pin.
        vcpu: Option<u32>,
        /// Host CPUs, e.g. 0-3,^1.
        cpulist: Option<String>,
        #[command(flatten)]
        scope: Scope,
    },
    /// Show or set the emulator thread's affinity (virsh emulatorpin).
    Emulator {
        vm: String,
        cpulist: Option<String>,
        #[command(flatten)]
        scope: Scope,
    },
    /// Show or set iothread affinity (virsh iothreadpin).
    Iothread {
        vm: String,
        id: Option<u32>,
        cpulist: Option<String>,
        #[command(flatten)]
        scope: Scope,
    },
    /// Show or set the host NUMA policy of guest memory (virsh numatune).
    Numa {
        vm: String,
        /// strict, preferred or interleave (at start; not live).
        #[arg(long)]
        mode: Option<String>,
        /// NUMA nodes, e.g. 0 or 0-1.
        #[arg(long)]
        nodeset: Option<String>,
        #[command(flatten)]
        scope: Scope,
    },
    /// Host tuning from the guide: KVM halt polling, kworker CPUs.
    #[command(subcommand)]
    Host(HostCommand),
    /// Show or set CPU shares and bandwidth (virsh schedinfo).
    Sched {
        vm: String,
        /// cpu_shares=N,vcpu_period=US,vcpu_quota=US,emulator_period=US,emulator_quota=US
        #[arg(long, value_name = "LIST")]
        set: Option<String>,
        #[command(flatten)]
        scope: Scope,
    },
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Show or set /sys/module/kvm/parameters/halt_poll_ns.
    HaltPoll {
        /// Nanoseconds a vCPU polls before it sleeps (0: no polling).
        ns: Option<u64>,
        /// Print what would be written, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show or set the CPUs unbound kworkers may use
    /// (/sys/devices/virtual/workqueue/cpumask).
    KworkerMask {
        cpulist: Option<String>,
        #[arg(long)]
        dry_run: bool,
    },
}
