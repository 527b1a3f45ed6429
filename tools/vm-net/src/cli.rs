//! vm-net's command line: the guide's brctl / ip / ovs-vsctl steps.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "vm-net",
    version,
    about = "Host networking for VMs: bridges, taps, Open vSwitch ports, MAC addresses",
    long_about = "vm-net makes the host side of a VM's network: Linux bridges and \
persistent taps through netlink (no ip or brctl needed), Open vSwitch bridges and \
ports through ovs-vsctl, and MAC addresses for NICs.\n\n\
Each command that changes a link prints the resulting link: JSON when stdout is not a \
terminal (or with --json), a line of text on a terminal. Links vm-net makes carry the \
alias 'vmtools', which `vm-net list` looks for.\n\n\
Exit codes: 0 ok, 1 error, 2 usage error."
)]
pub struct Cli {
    /// Print JSON even on a terminal.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Linux bridges (brctl addbr / delbr / show / addif / delif).
    #[command(subcommand)]
    Bridge(Bridge),
    /// Persistent TAP devices for VMs.
    #[command(subcommand)]
    Tap(Tap),
    /// Set a link up or down (ip link set NAME up|down).
    Link {
        #[arg(value_parser = ["up", "down"])]
        state: String,
        name: String,
    },
    /// A bridge's own addresses (ip addr add|del ADDR/PREFIX dev NAME).
    Addr {
        #[arg(value_parser = ["add", "del"])]
        action: String,
        name: String,
        /// Address with prefix length, e.g. 192.168.122.1/24.
        address: String,
    },
    /// Print a MAC address for a NIC: random, or the same every time for a
    /// VM name and NIC index.
    Mac {
        /// The VM's name (with --index: a stable address).
        #[arg(long, requires = "index")]
        name: Option<String>,
        /// The NIC's index in the VM's spec.
        #[arg(long, requires = "name")]
        index: Option<u32>,
    },
    /// The links vm-net made (alias 'vmtools').
    List,
    /// Open vSwitch bridges and ports, through ovs-vsctl.
    #[command(subcommand)]
    Ovs(Ovs),
}

#[derive(Debug, Subcommand)]
pub enum Bridge {
    /// Make a Linux bridge (down, like brctl addbr).
    Add {
        name: String,
        /// Succeed if a bridge of that name exists.
        #[arg(long)]
        may_exist: bool,
    },
    /// Remove a bridge.
    Del {
        name: String,
        /// Succeed if there is no such link.
        #[arg(long)]
        if_exists: bool,
    },
    /// Bridges and their ports (brctl show).
    List,
    /// Make IFACE a port of BRIDGE (brctl addif).
    Attach { bridge: String, iface: String },
    /// Take IFACE out of BRIDGE (brctl delif).
    Detach { bridge: String, iface: String },
}

#[derive(Debug, Subcommand)]
pub enum Tap {
    /// Make a persistent tap (with a virtio-net header, as VMs use it).
    Add {
        name: String,
        /// Attach it to this bridge.
        #[arg(long)]
        bridge: Option<String>,
        /// The user that may open it (a VM running as that user).
        #[arg(long)]
        owner: Option<u32>,
        /// Queues (more than 1: a multiqueue tap).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
        queues: u16,
        /// Succeed if a tap of that name exists.
        #[arg(long)]
        may_exist: bool,
    },
    /// Remove a tap.
    Del {
        name: String,
        /// Succeed if there is no such link.
        #[arg(long)]
        if_exists: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum Ovs {
    /// Open vSwitch bridges.
    #[command(subcommand)]
    Bridge(OvsBridge),
    /// Ports of an Open vSwitch bridge.
    #[command(subcommand)]
    Port(OvsPort),
}

#[derive(Debug, Subcommand)]
pub enum OvsBridge {
    /// ovs-vsctl add-br.
    Add {
        name: String,
        #[arg(long)]
        may_exist: bool,
        /// The bridge's datapath_type: `netdev` for the userspace datapath
        /// (no openvswitch kernel module), `system` for the kernel's.
        #[arg(long, value_name = "TYPE")]
        datapath: Option<String>,
    },
    /// ovs-vsctl del-br.
    Del {
        name: String,
        #[arg(long)]
        if_exists: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum OvsPort {
    /// ovs-vsctl add-port.
    Add {
        bridge: String,
        port: String,
        #[arg(long)]
        may_exist: bool,
    },
    /// ovs-vsctl del-port.
    Del {
        bridge: String,
        port: String,
        #[arg(long)]
        if_exists: bool,
    },
}
