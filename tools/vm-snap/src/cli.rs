//! vm-snap's command line: virsh's save, restore and snapshot verbs.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "vm-snap",
    version,
    about = "Save and restore KVM virtual machines, and snapshot their disks",
    long_about = "vm-snap saves a running VM's whole machine (vCPUs, devices, memory) \
into one file and starts it again from there (virsh save / restore), also as \
instant clones under new names, and snapshots a VM's disks as qcow2 overlays \
(virsh snapshot-create-as --disk-only).\n\n\
Records are printed as JSON.\n\n\
Exit codes: 0 ok, 1 error, 2 usage error."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Save a running or paused VM into FILE and end it (virsh save).
    Save {
        /// The VM's name.
        vm: String,
        /// Where to write; replaced only once the save is whole.
        file: PathBuf,
        /// Skip the fsync: faster, but a power loss soon after can leave
        /// FILE incomplete (the VM is gone by then).
        #[arg(long)]
        no_fsync: bool,
    },
    /// Start a VM from a saved FILE (virsh restore); returns once it runs.
    Restore {
        file: PathBuf,
        /// Stay paused until `vm-run resume`.
        #[arg(long)]
        paused: bool,
        /// Run under this name: another VM from the same file (an instant
        /// clone). Give it its own disks with --spec.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// A spec whose host-local parts (disk paths, console, taps,
        /// placement) replace the saved ones (virsh restore --xml); its
        /// devices, memory and vCPUs must match the saved machine's.
        #[arg(long, value_name = "SPEC")]
        spec: Option<String>,
        /// Serial console file (default: console.log in the VM's state folder).
        #[arg(long, value_name = "PATH")]
        console: Option<PathBuf>,
        /// Disk ID uses PATH (a clone's own overlay, say); the format stays
        /// the saved one unless given. Repeatable.
        #[arg(long, value_name = "ID=PATH[,format=F]", value_parser = check::<vm_spec::overrides::DiskOverride>)]
        disk: Vec<String>,
        /// NIC ID runs on this tap, or a new tap on this bridge (the guest
        /// keeps its MAC). Repeatable.
        #[arg(long, value_name = "ID,tap=NAME|ID,bridge=NAME", value_parser = check::<vm_spec::overrides::NicOverride>)]
        nic: Vec<String>,
    },
    /// Check a saved FILE whole: header, state and every page of memory.
    Verify { file: PathBuf },
    /// Snapshot a VM's disks: a qcow2 overlay on each disk's top (virsh
    /// snapshot-create-as --disk-only --atomic), live or on a stopped,
    /// defined VM; all disks or none.
    Create {
        /// The VM's name.
        vm: String,
        /// The snapshot's name (default: the time, in seconds since 1970).
        #[arg(long)]
        name: Option<String>,
        /// A disk to snapshot, as ID[,file=PATH] (virsh's --diskspec, whose
        /// snapshot=external is accepted); default: every writable disk,
        /// each overlay beside its top as STEM.NAME.qcow2.
        #[arg(long, visible_alias = "diskspec", value_name = "SPEC", value_parser = crate::cmd::create::parse_disk)]
        disk: Vec<crate::cmd::create::DiskArg>,
        /// Accepted for virsh's sake: every snapshot is atomic.
        #[arg(long)]
        atomic: bool,
    },
    /// Put a defined VM's disks back as they were at a snapshot (virsh
    /// snapshot-revert); later snapshots and later writes are discarded.
    /// A running VM is refused unless --force ends it first.
    Revert {
        /// The VM's name.
        vm: String,
        /// The snapshot.
        name: String,
        /// End the VM first if it runs (virsh destroy): what its guest
        /// has not written to disk is lost.
        #[arg(long)]
        force: bool,
        /// Boot the VM from its definition once its disks are back.
        #[arg(long)]
        running: bool,
        /// As --running, but the VM waits paused for `vm-run resume`.
        #[arg(long, conflicts_with = "running")]
        paused: bool,
    },
    /// Delete a disk snapshot (virsh snapshot-delete): its overlay is
    /// merged into its base (blockcommit) and leaves the chain, live or on
    /// a stopped, defined VM. The disk's content stays as it is.
    Delete {
        /// The VM's name.
        vm: String,
        /// The snapshot.
        name: String,
    },
    /// List a VM's disk snapshots, oldest first (virsh snapshot-list).
    List {
        /// The VM's name.
        vm: String,
    },
}

/// Checks an override at parse time and keeps its text for vm-run.
fn check<T: std::str::FromStr<Err = String>>(s: &str) -> Result<String, String> {
    s.parse::<T>().map(|_| s.to_string())
}
