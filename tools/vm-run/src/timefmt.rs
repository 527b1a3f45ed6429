//! UTC timestamps for logs and records.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub use vm_spec::text::rfc3339;

/// One log line: timestamp and message, to stderr (vm.log when detached).
pub fn log(msg: &str) {
    eprintln!("{} {msg}", rfc3339(now_secs()));
}
