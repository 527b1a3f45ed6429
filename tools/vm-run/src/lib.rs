//! vm-run: the VM process and the lifecycle verbs, as a library the binary
//! is a thin shell over.

pub mod cli;
mod clients;
pub mod cmd;
mod commit;
pub mod console;
pub mod disks;
mod fds;
mod jobs;
mod launch;
pub mod migrate;
pub mod monitor;
pub mod nets;
pub mod output;
mod placement;
pub mod resolve;
mod save;
mod serve;
mod snapshot;
pub mod timefmt;

use cli::{Cli, Command};
use vm_control::Request;

/// Runs one parsed command line; returns the process exit code.
pub fn run(cli: &Cli) -> i32 {
    let j = cli.json;
    let result = match &cli.command {
        Command::Start(a) => cmd::start::run(a, j),
        Command::Serve => cmd::start::serve(),
        Command::Define { spec } => cmd::define::define(spec, j),
        Command::Undefine(v) => cmd::define::undefine(&v.vm),
        Command::Edit(v) => cmd::define::edit(&v.vm),
        Command::List { all } => cmd::list::list(*all, j),
        Command::Status(v) => cmd::status::status(&v.vm, j),
        Command::State { vm, reason } => cmd::status::state(&vm.vm, *reason, j),
        Command::Pause(v) => cmd::control::simple(&v.vm, &Request::Pause, j),
        Command::Resume(v) => cmd::control::simple(&v.vm, &Request::Resume, j),
        Command::Reboot(v) => cmd::control::simple(&v.vm, &Request::Reboot, j),
        Command::Shutdown {
            vm,
            mode,
            timeout,
            force,
        } => cmd::shutdown::shutdown(&vm.vm, (*mode).into(), *timeout, *force, j),
        Command::Kill(v) => cmd::kill::kill(&v.vm, j),
        Command::Console { vm, until } => cmd::console::console(&vm.vm, until.as_deref()),
        Command::Wait(v) => cmd::kill::wait(&v.vm),
        Command::Stats { vm, disk, iface } => {
            cmd::stats::stats(&vm.vm, disk.as_deref(), iface.as_deref(), j)
        }
        Command::Disks(v) => cmd::devices::disks(&v.vm, j),
        Command::Ifaces(v) => cmd::devices::ifaces(&v.vm, j),
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
