//! Text the tools print the same way: UTC times and one-line errors.

use std::error::Error;

/// (year, month, day, hour, minute, second) in UTC for a Unix time
/// (Howard Hinnant's civil-from-days).
fn civil(secs: u64) -> (i64, i64, i64, u64, u64, u64) {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, (rem / 60) % 60, rem % 60)
}

/// `YYYY-MM-DD HH:MM:SS` (qemu-img's snapshot dates).
pub fn date_time(secs: u64) -> String {
    let (year, month, day, hour, min, sec) = civil(secs);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{min:02}:{sec:02}")
}

/// `YYYY-MM-DDTHH:MM:SSZ` (logs and records).
pub fn rfc3339(secs: u64) -> String {
    let (year, month, day, hour, min, sec) = civil(secs);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{min:02}:{sec:02}Z")
}

/// Text for a terminal: control characters (ESC, BEL... a VM folder's
/// name, an interface or a path can hold any of them) are shown escaped,
/// as `ls -b` does, so printing a name cannot retitle or clear the
/// terminal of whoever reads it.
pub fn escape(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// An error and its causes on one line, as DESIGN.md's contract wants:
/// causes joined with ": ", a cause the text before it already quotes left
/// out (also when only its "PATH: " prefix is new), and std's
/// "(os error N)" dropped.
pub fn one_line(e: &(dyn Error + 'static)) -> String {
    let mut out = String::new();
    let mut cause: Option<&(dyn Error + 'static)> = Some(e);
    while let Some(c) = cause {
        cause = c.source();
        let mut text = c.to_string();
        if let Some((head, rest)) = text.split_once(": ") {
            if !head.is_empty() && out.contains(head) {
                text = rest.to_string();
            }
        }
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
    escape(&out.replace('\n', " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(date_time(0), "1970-01-01 00:00:00");
        assert_eq!(rfc3339(1_764_000_000), "2025-11-24T16:00:00Z");
        assert_eq!(date_time(951_782_400), "2000-02-29 00:00:00");
    }

    #[derive(Debug)]
    struct Wrap(String, Option<Box<dyn Error + 'static>>);
    impl std::fmt::Display for Wrap {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl Error for Wrap {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref()
        }
    }

    #[test]
    fn errors_read_as_one_line_without_repeats() {
        let io = std::io::Error::from_raw_os_error(2);
        let mid = Wrap(
            "x.img: No such file or directory (os error 2)".into(),
            Some(Box::new(io)),
        );
        let top = Wrap("Could not open 'x.img'".into(), Some(Box::new(mid)));
        assert_eq!(
            one_line(&top),
            "Could not open 'x.img': No such file or directory"
        );
        let two = Wrap(
            "outer".into(),
            Some(Box::new(Wrap("first\nsecond".into(), None))),
        );
        assert_eq!(one_line(&two), "outer: first second");
    }
}
