//! Errors qemu-img follows with a hint: a line or two saying what to do
//! about them (`Is another process using the image [FILE]?`, `You can use
//! 'qemu-img rebase' instead.`). The error stays the one line DESIGN.md
//! asks for, and the hint goes on the lines after it, as qemu-img prints
//! it, so scripts and QEMU's iotests that read qemu-img's stderr read
//! ours alike (docs/vm-img.md, "Choices").

use std::fmt;

/// One line of a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// Printed as it is (QEMU's `error_append_hint`).
    Plain(String),
    /// Printed after the program's name, like the error line (where
    /// qemu-img reports a sentence over two `error_report` calls).
    Prefixed(String),
}

impl Line {
    /// The line as printed: `program: ` first where it is prefixed.
    pub fn text(&self, program: &str) -> String {
        match self {
            Self::Plain(s) => s.clone(),
            Self::Prefixed(s) => format!("{program}: {s}"),
        }
    }
}

/// An error and its hint. Its `Display` is the error alone, so the usual
/// one-line rendering (with any context in front) is unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hinted {
    message: String,
    hint: Vec<Line>,
}

impl Hinted {
    pub fn new(message: impl Into<String>, hint: Vec<Line>) -> Self {
        Self {
            message: message.into(),
            hint,
        }
    }

    /// An error followed by one plain hint line.
    pub fn plain(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::new(message, vec![Line::Plain(hint.into())])
    }

    /// The hint's lines as printed.
    pub fn lines(&self, program: &str) -> Vec<String> {
        self.hint.iter().map(|l| l.text(program)).collect()
    }
}

impl fmt::Display for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Hinted {}

/// The error line and the hint lines qemu-img gives for `e`: a hint the
/// error carries, and those qemu-img adds to image errors (a lock held
/// elsewhere names the image in place of vm-image's question; a snapshot
/// table says how check repairs it).
pub fn render(e: &anyhow::Error, program: &str) -> (String, Vec<String>) {
    let mut line = crate::one_line(e);
    let mut hint: Vec<Line> = e
        .chain()
        .find_map(|c| c.downcast_ref::<Hinted>())
        .map(|h| h.hint.clone())
        .unwrap_or_default();
    match e.chain().find_map(|c| c.downcast_ref::<vm_image::Error>()) {
        Some(vm_image::Error::Locked { path, .. }) => {
            line = line.replacen(&format!(": {}", vm_image::LOCK_QUESTION), "", 1);
            hint.push(Line::Plain(format!(
                "Is another process using the image [{}]?",
                path.display()
            )));
        }
        Some(vm_image::Error::SnapshotTable { fault, .. }) if fault.remedy_on_open() => {
            hint.push(table_remedy(fault));
        }
        _ => {}
    }
    (line, hint.iter().map(|l| l.text(program)).collect())
}

/// A usage error, with qemu-img's pointer to `--help` after it.
pub fn try_help(message: impl Into<String>) -> Hinted {
    Hinted::new(message, vec![try_help_line()])
}

/// qemu-img's pointer to `--help` after a usage error.
pub fn try_help_line() -> Line {
    Line::Plain(format!(
        "Try '{} --help' for more information",
        crate::program_name()
    ))
}

/// qemu-img's pointer to the repair of a snapshot table it will not open.
pub fn table_remedy(fault: &vm_image::TableFault) -> Line {
    Line::Plain(format!(
        "You can {} with {} check -r all",
        fault.remedy(),
        crate::program_name()
    ))
}

/// qemu-img's error for a size it cannot read (create's and measure's
/// size argument): one sentence over two error lines.
pub fn invalid_size() -> Hinted {
    Hinted::new(
        "Invalid image size specified. You may use k, M, G, T, P or E suffixes for",
        vec![Line::Prefixed(
            "kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.".into(),
        )],
    )
}

/// qemu-img's error for a `size` option it cannot read.
pub fn invalid_size_option() -> Hinted {
    Hinted::new(
        "Parameter 'size' expects a non-negative number below 2^64",
        vec![
            Line::Plain(
                "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-".into(),
            ),
            Line::Plain("and exabytes, respectively.".into()),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn hint_is_found_under_context_and_kept_off_the_error_line() {
        let e = Err::<(), _>(Hinted::plain(
            "Cannot amend the backing file",
            "Use rebase.",
        ))
        .context("t.qcow2")
        .unwrap_err();
        assert_eq!(
            render(&e, "qemu-img"),
            (
                "t.qcow2: Cannot amend the backing file".to_string(),
                vec!["Use rebase.".to_string()]
            )
        );
        assert_eq!(
            invalid_size().lines("vm-img")[0],
            "vm-img: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes."
        );
        assert!(render(&anyhow::anyhow!("plain"), "p").1.is_empty());
    }
}
