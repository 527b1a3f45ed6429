//! vm-run: the VM process and the lifecycle verbs, as a library the binary
//! is a thin shell over.

pub mod cli;
mod clients;
pub mod commands;
mod commit;
pub mod console;
pub mod disks;
pub mod monitor;
pub mod nets;
pub mod output;
mod placement;
pub mod resolve;
mod save;
mod serve;
mod snapshot;
pub mod start;
pub mod timefmt;

use cli::{Cli, Command};
use vm_control::Request;

/// Runs one parsed command line; returns the process exit code.
pub fn run(cli: &Cli) -> i32 {
    let j = cli.json;
    let result = match &cli.command {
        Command::Start(a) => start::run(a, j),
        Command::Serve => return start::serve().unwrap_or(1),
        Command::Define { spec } => commands::define(spec, j),
        Command::Undefine(v) => commands::undefine(&v.vm),
        Command::Edit(v) => commands::edit(&v.vm),
        Command::List { all } => commands::list(*all, j),
        Command::Status(v) => commands::status(&v.vm, j),
        Command::State { vm, reason } => commands::state(&vm.vm, *reason, j),
        Command::Pause(v) => commands::simple(&v.vm, &Request::Pause, j),
        Command::Resume(v) => commands::simple(&v.vm, &Request::Resume, j),
        Command::Reboot(v) => commands::simple(&v.vm, &Request::Reboot, j),
        Command::Shutdown {
            vm,
            mode,
            timeout,
            force,
        } => commands::shutdown(&vm.vm, (*mode).into(), *timeout, *force, j),
        Command::Kill(v) => commands::kill(&v.vm, j),
        Command::Console(v) => commands::console(&v.vm),
        Command::Wait(v) => commands::wait(&v.vm),
        Command::Stats { vm, disk, iface } => {
            commands::stats(&vm.vm, disk.as_deref(), iface.as_deref(), j)
        }
        Command::Disks(v) => commands::disks(&v.vm, j),
        Command::Ifaces(v) => commands::ifaces(&v.vm, j),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vm-run: error: {}", one_line(&e));
            1
        }
    }
}

/// The error and its causes on one line (DESIGN.md's error contract).
pub fn one_line(e: &anyhow::Error) -> String {
    vm_spec::text::one_line(e.as_ref())
}
