//! vm-img: qemu-img's job, as a library the binary is a thin shell over
//! (and the man-page test reads the command line from).

pub mod cli;
pub mod cmd;
pub mod encryption;
pub mod hint;
pub mod input;
pub mod json;
pub mod prealloc;
pub mod progress;
pub mod secrets;
pub mod snapshot_copy;
pub mod sources;
pub mod util;

use clap::{CommandFactory, FromArgMatches};
use cli::{BitmapAction, Cli, Command};

/// Parses a command line. clap's derive keeps no order between different
/// options, so `bitmap`'s actions are put in command-line order here, as
/// qemu-img runs them.
pub fn parse<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = Cli::command().try_get_matches_from(args)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let Command::Convert(a) = &mut cli.command {
        // clap keeps one positional list; the last FILE is the output.
        let mut files = a.files.clone();
        if files.len() < 2 && !cmd::option_help::wanted(&a.options) {
            return Err(Cli::command().error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "convert needs a source and an output: SOURCE... OUTPUT",
            ));
        }
        a.output = files.pop().unwrap_or_default();
        a.sources = files;
    }
    if let (Command::Bitmap(a), Some(m)) = (&mut cli.command, matches.subcommand_matches("bitmap"))
    {
        let mut actions: Vec<(usize, BitmapAction)> = Vec::new();
        for (id, action) in [
            ("add", BitmapAction::Add),
            ("remove", BitmapAction::Remove),
            ("clear", BitmapAction::Clear),
            ("enable", BitmapAction::Enable),
            ("disable", BitmapAction::Disable),
        ] {
            if m.get_flag(id) {
                let at = m.indices_of(id).and_then(|mut i| i.next()).unwrap_or(0);
                actions.push((at, action));
            }
        }
        if let (Some(idx), Some(vals)) = (m.indices_of("merge"), m.get_many::<String>("merge")) {
            actions.extend(
                idx.zip(vals)
                    .map(|(at, v)| (at, BitmapAction::Merge(v.clone()))),
            );
        }
        actions.sort_by_key(|(at, _)| *at);
        a.actions = actions.into_iter().map(|(_, x)| x).collect();
    }
    Ok(cli)
}

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
        Command::Bitmap(a) => (cmd::bitmap::run(a), 1),
        Command::Bench(a) => (cmd::bench::run(a), 1),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            report(&e);
            error_code
        }
    }
}

/// qemu-img's own words for the usage errors it has words for (an option
/// the subcommand does not take, file names missing or too many), so
/// scripts matching them keep working; `None` leaves the error to clap.
/// `args` is the command line, for the subcommand's name.
pub fn usage_error(e: &clap::Error, args: &[std::ffi::OsString]) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let program = program_name();
    let sub = args
        .iter()
        .skip(1)
        .filter_map(|a| a.to_str())
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    // The message, and whether qemu-img adds where to read more.
    let (message, try_help) = match (e.kind(), e.get(ContextKind::InvalidArg)) {
        (ErrorKind::UnknownArgument, Some(ContextValue::String(arg))) if arg.starts_with('-') => {
            (format!("unrecognized option '{arg}'"), true)
        }
        (ErrorKind::UnknownArgument, _) => file_names_error(sub, false)?,
        (ErrorKind::InvalidValue, Some(ContextValue::String(arg)))
            if arg.starts_with("--output") =>
        {
            (
                "--output must be used with human or json as argument.".into(),
                false,
            )
        }
        (ErrorKind::MissingRequiredArgument, Some(ContextValue::Strings(missing))) => {
            if sub == "amend" && missing.iter().any(|m| m.starts_with("-o")) {
                ("Must specify options (-o)".into(), true)
            } else if missing.iter().any(|m| m.starts_with('<')) {
                file_names_error(sub, true)?
            } else {
                return None;
            }
        }
        _ => return None,
    };
    let mut text = format!("{program}: {message}\n");
    if try_help {
        text += &hint::try_help_line().text(&program);
        text.push('\n');
    }
    Some(text)
}

/// What qemu-img says when a subcommand gets too many file names, or
/// (`missing`) too few, and whether it adds where to read more.
fn file_names_error(sub: &str, missing: bool) -> Option<(String, bool)> {
    let (message, try_help) = match sub {
        "info" | "check" | "commit" | "map" | "snapshot" | "rebase" | "bench" => {
            ("Expecting one image file name", true)
        }
        "amend" => ("Expecting one image file name", false),
        "measure" => ("At most one filename argument is allowed.", false),
        "resize" if missing => ("Not enough arguments", true),
        "resize" => ("Expecting image file name and size", true),
        "compare" => ("Expecting two image file names", true),
        "bitmap" => ("Expecting filename and bitmap name", false),
        _ => return None,
    };
    Some((message.to_string(), try_help))
}

/// Writes an error as qemu-img does: its line, then any hint qemu-img
/// gives with it on the lines after.
pub fn report(e: &anyhow::Error) {
    let (line, hint) = hint::render(e, &program_name());
    error_line(line);
    for l in hint {
        eprintln!("{l}");
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
