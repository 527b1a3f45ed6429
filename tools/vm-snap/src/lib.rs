//! vm-snap: the VM's state saved to a file and started again from it, as
//! a library the binary is a thin shell over.

pub mod cli;
pub mod cmd;
mod meta;

use cli::{Cli, Command};

/// Runs one parsed command line; returns the process exit code.
pub fn run(cli: &Cli) -> i32 {
    let result = match &cli.command {
        Command::Save { vm, file, no_fsync } => cmd::save::run(vm, file, !no_fsync),
        Command::Restore {
            file,
            paused,
            name,
            spec,
            console,
            disk,
            nic,
        } => cmd::restore::run(&cmd::restore::Options {
            disks: disk,
            nics: nic,
            file,
            paused: *paused,
            name: name.as_deref(),
            spec: spec.as_deref(),
            console: console.as_deref(),
        }),
        Command::Verify { file } => cmd::verify::run(file),
        Command::Create {
            vm,
            name,
            disk,
            atomic: _,
        } => cmd::create::run(vm, name.as_deref(), disk),
        Command::List { vm } => cmd::list::run(vm),
        Command::Revert {
            vm,
            name,
            force,
            running,
            paused,
        } => cmd::revert::run(&cmd::revert::Options {
            vm,
            snap: name,
            force: *force,
            boot: if *paused {
                Some(cmd::revert::Boot::Paused)
            } else if *running {
                Some(cmd::revert::Boot::Running)
            } else {
                None
            },
        }),
        Command::Delete { vm, name } => cmd::delete::run(vm, name),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vm-snap: error: {}", vm_spec::text::one_line(e.as_ref()));
            1
        }
    }
}
