//! One module per subcommand.

pub mod create;
pub mod delete;
pub mod list;
pub mod restore;
pub mod revert;
pub mod save;
pub mod verify;

/// Prints a JSON record on one line.
pub(crate) fn print_json(v: &serde_json::Value) {
    println!("{v}");
}
