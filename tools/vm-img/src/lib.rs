//! vm-img: qemu-img's job, as a library the binary is a thin shell over
//! (and the man-page test reads the command line from).

pub mod cli;
pub mod cmd;
pub mod json;
pub mod prealloc;
pub mod progress;
pub mod snapshot_copy;
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
        Command::Snapshot(a) => (cmd::snapshot::run(a), 1),
        Command::Dd(a) => (cmd::dd::run(a), 1),
        Command::Measure(a) => (cmd::measure::run(a), 1),
        Command::Amend(a) => (cmd::amend::run(a), 1),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            error_line(one_line(&e));
            error_code
        }
    }
}

/// Writes one error line in qemu-img's form: the program's name as
/// invoked (its last path component), then the message. Scripts and
/// QEMU's iotests filters match `qemu-img: ` the same way.
pub fn error_line(message: impl std::fmt::Display) {
    eprintln!("{}: {message}", program_name());
}

/// The name this process was started as, without its folder; `vm-img`
/// when that is unusable (empty, or not valid UTF-8).
pub fn program_name() -> String {
    std::env::args_os()
        .next()
        .as_deref()
        .map(std::path::Path::new)
        .and_then(std::path::Path::file_name)
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty())
        .unwrap_or("vm-img")
        .to_string()
}

/// The error and its causes on one line (DESIGN.md's error contract).
pub fn one_line(e: &anyhow::Error) -> String {
    vm_spec::text::one_line(e.as_ref())
}
