//! vm-migrate: live migration between vm-run processes, as a library the
//! binary is a thin shell over. The copying is vm-run's (its own thread);
//! this tool opens the transport and hands the connected socket over.

pub mod cli;
pub mod cmd;
mod transport;

use cli::{Cli, Command};

/// Runs one parsed command line; returns the process exit code.
pub fn run(cli: &Cli) -> i32 {
    let result = match &cli.command {
        Command::Send(a) => cmd::send::run(a),
        Command::Recv(a) => cmd::recv::run(a),
        Command::Status { vm } => cmd::status::run(vm),
        Command::Cancel { vm } => cmd::cancel::run(vm),
        Command::Set(a) => cmd::set::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vm-migrate: error: {}", vm_spec::text::one_line(e.as_ref()));
            1
        }
    }
}
