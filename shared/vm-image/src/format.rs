//! Image formats and probing.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Raw,
    Qcow2,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
        }
    }

    /// Guesses the format from the first bytes, as qemu-img does when no
    /// format is given. Never used for a VM's disks (see DESIGN.md).
    pub fn probe(first_bytes: &[u8]) -> Self {
        if first_bytes.len() >= 4 && first_bytes[..4] == super::qcow2::header::MAGIC.to_be_bytes() {
            Self::Qcow2
        } else {
            Self::Raw
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "raw" => Ok(Self::Raw),
            "qcow2" => Ok(Self::Qcow2),
            _ => Err(format!("Unknown file format '{s}' (supported: raw, qcow2)")),
        }
    }
}
