//! vm-net: bridges, taps and addresses through netlink; Open vSwitch
//! through ovs-vsctl; MAC addresses.

pub mod cli;
pub mod cmd;

use std::io::IsTerminal;

use cli::{Cli, Command};

pub fn run(cli: &Cli) -> i32 {
    let json = cli.json || !std::io::stdout().is_terminal();
    let r = match &cli.command {
        Command::Bridge(b) => cmd::bridge::bridge(b, json),
        Command::Tap(t) => cmd::tap::tap_cmd(t, json),
        Command::Link { state, name } => cmd::link::link_state(name, state == "up", json),
        Command::Addr {
            action,
            name,
            address,
        } => cmd::addr::addr(name, action == "add", address, json),
        Command::Mac { name, index } => cmd::mac::mac(name.as_deref(), *index, json),
        Command::List => cmd::list::list(json),
        Command::Ovs(o) => cmd::ovs::run(o, json),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("vm-net: error: {}", vm_spec::text::one_line(e.as_ref()));
            1
        }
    }
}
