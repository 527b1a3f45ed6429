//! vm-pin: placement of a VM's threads.

pub mod cli;
pub mod cmd;

use std::io::IsTerminal;

use cli::{Cli, Command};

pub fn run(cli: &Cli) -> i32 {
    let json = cli.json || !std::io::stdout().is_terminal();
    let r = match &cli.command {
        Command::Vcpu {
            vm,
            vcpu,
            cpulist,
            scope,
        } => cmd::pin::pin_cmd(
            cmd::pin::Kind::Vcpu,
            vm,
            *vcpu,
            cpulist.as_deref(),
            *scope,
            json,
        ),
        Command::Emulator { vm, cpulist, scope } => {
            cmd::emulator::emulator_cmd(vm, cpulist.as_deref(), *scope, json)
        }
        Command::Sched { vm, set, scope } => {
            cmd::sched::sched_cmd(vm, set.as_deref(), *scope, json)
        }
        Command::Iothread {
            vm,
            id,
            cpulist,
            scope,
        } => cmd::pin::pin_cmd(
            cmd::pin::Kind::Iothread,
            vm,
            *id,
            cpulist.as_deref(),
            *scope,
            json,
        ),
        Command::Host(h) => cmd::host::run(h, json),
        Command::Numa {
            vm,
            mode,
            nodeset,
            scope,
        } => cmd::numa::numa_cmd(vm, mode.as_deref(), nodeset.as_deref(), *scope, json),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("vm-pin: error: {}", vm_spec::text::one_line(e.as_ref()));
            1
        }
    }
}
