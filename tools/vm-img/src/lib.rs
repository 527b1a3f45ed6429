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

/// The error and its causes on one line, without repeating a cause that
/// the message above it already quotes.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let mut text = cause.to_string();
        // "PATH: why" where the message above already names PATH.
        if let Some((head, rest)) = text.split_once(": ") {
            if !head.is_empty() && out.contains(head) {
                text = rest.to_string();
            }
        }
        // std's "(os error N)" adds nothing for a user.
        if let Some(i) = text.find(" (os error ") {
            text.truncate(i);
        }
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn errors_read_as_one_line_without_repeats() {
        let io = std::io::Error::from_raw_os_error(2);
        let e = anyhow::Error::new(io).context("x.img: No such file or directory (os error 2)");
        let e = e.context("Could not open 'x.img'");
        assert_eq!(
            one_line(&e),
            "Could not open 'x.img': No such file or directory"
        );
        let e = anyhow::anyhow!("first\nsecond").context("outer");
        assert_eq!(one_line(&e), "outer: first second");
    }
}
