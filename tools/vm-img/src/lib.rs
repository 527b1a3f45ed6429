//! vm-img: qemu-img's job, as a library the binary is a thin shell over
//! (and the man-page test reads the command line from).

pub mod cli;
pub mod cmd;
pub mod json;
pub mod util;

use cli::{Cli, Command};

/// Runs one parsed command line; returns the process exit code.
pub fn run(cli: &Cli) -> i32 {
    let (result, error_code) = match &cli.command {
        Command::Create(a) => (cmd::create::run(a), 1),
        Command::Info(a) => (cmd::info::run(a), 1),
        Command::Check(a) => (cmd::check::run(a), 1),
        Command::Resize(a) => (cmd::resize::run(a), 1),
        Command::Convert(a) => (cmd::convert::run(a), 1),
        Command::Compare(a) => (cmd::compare::run(a), 2),
        Command::Map(a) => (cmd::map::run(a), 1),
        Command::Commit(a) => (cmd::commit::run(a), 1),
        Command::Rebase(a) => (cmd::rebase::run(a), 1),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vm-img: error: {}", one_line(&e));
            error_code
        }
    }
}

/// The error and its causes on one line (DESIGN.md's error contract).
pub fn one_line(e: &anyhow::Error) -> String {
    vm_spec::text::one_line(e.as_ref())
}
