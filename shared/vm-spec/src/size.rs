//! Sizes as qemu-img writes them: `4G`, `512MiB`, `+20G`, `-1G`.
//!
//! K, M, G, T, P and E are powers of 1024, as in qemu-img; the `iB` forms are
//! accepted as the same units. A bare number is bytes on vm-img's command
//! line (qemu-img's rule) but an error in a VmSpec, where libvirt reads KiB
//! and QEMU MiB and a guess would be wrong either way.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a size did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("empty size")]
    Empty,
    #[error("'{0}' is not a size (examples: 4G, 512MiB, 1.5T)")]
    Invalid(String),
    #[error("'{0}' has no unit: write it as e.g. {0}MiB or {0}GiB")]
    NoUnit(String),
    #[error("unknown unit '{unit}' in '{text}' (use K, M, G, T, P, E or KiB..EiB)")]
    Unit { text: String, unit: String },
    #[error("'{0}' is too large")]
    Overflow(String),
    #[error("'{0}': a relative size (+N / -N) is not allowed here")]
    Relative(String),
}

/// What a number without a unit means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareNumber {
    /// Bytes, as on qemu-img's command line.
    Bytes,
    /// Refused: the caller needs an explicit unit.
    Refuse,
}

/// A size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Size(pub u64);

impl Size {
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

/// A size that may be relative to a current one, as `qemu-img resize` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeChange {
    Absolute(u64),
    Grow(u64),
    Shrink(u64),
}

impl SizeChange {
    /// Parses `N`, `+N` or `-N` with units.
    pub fn parse(text: &str, bare: BareNumber) -> Result<Self, SizeError> {
        let t = text.trim();
        if let Some(rest) = t.strip_prefix('+') {
            Ok(Self::Grow(parse_size(rest, bare)?))
        } else if let Some(rest) = t.strip_prefix('-') {
            Ok(Self::Shrink(parse_size(rest, bare)?))
        } else {
            Ok(Self::Absolute(parse_size(t, bare)?))
        }
    }

    /// The new size given the current one; `None` when it under- or overflows.
    pub fn apply(self, current: u64) -> Option<u64> {
        match self {
            Self::Absolute(n) => Some(n),
            Self::Grow(n) => current.checked_add(n),
            Self::Shrink(n) => current.checked_sub(n),
        }
    }
}

fn unit_shift(unit: &str) -> Option<u32> {
    let u = unit.to_ascii_lowercase();
    let u = u
        .strip_suffix("ib")
        .or_else(|| u.strip_suffix('b').filter(|s| !s.is_empty()))
        .unwrap_or(&u);
    Some(match u {
        "" | "b" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        "e" => 60,
        _ => return None,
    })
}

/// Parses an absolute size such as `4G`, `8GiB`, `1.5T` or (with
/// [`BareNumber::Bytes`]) `1048576`.
pub fn parse_size(text: &str, bare: BareNumber) -> Result<u64, SizeError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(SizeError::Empty);
    }
    if t.starts_with('+') || t.starts_with('-') {
        return Err(SizeError::Relative(t.to_string()));
    }
    // A hexadecimal number of bytes, as qemu-img takes (`0x10000`).
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16).map_err(|e| match e.kind() {
            std::num::IntErrorKind::PosOverflow => SizeError::Overflow(t.to_string()),
            _ => SizeError::Invalid(t.to_string()),
        });
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.matches('.').count() > 1
    {
        return Err(SizeError::Invalid(t.to_string()));
    }
    if unit.is_empty() && bare == BareNumber::Refuse {
        return Err(SizeError::NoUnit(t.to_string()));
    }
    let shift = unit_shift(unit).ok_or_else(|| SizeError::Unit {
        text: t.to_string(),
        unit: unit.to_string(),
    })?;
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    // A fraction of a byte is no size; `1024.0` is (qemu-img takes it).
    if shift == 0 && frac.bytes().any(|b| b != b'0') {
        return Err(SizeError::Invalid(t.to_string()));
    }
    let overflow = || SizeError::Overflow(t.to_string());
    let int: u64 = int.parse().map_err(|_| overflow())?;
    let mut bytes = int.checked_mul(1u64 << shift).ok_or_else(overflow)?;
    if !frac.is_empty() {
        // Exact decimal fraction of the unit, rounded down to a byte, using
        // at most 18 digits so the arithmetic stays in u128.
        let digits = &frac[..frac.len().min(18)];
        let f: u128 = digits
            .parse()
            .map_err(|_| SizeError::Invalid(t.to_string()))?;
        let scale = 10u128.pow(digits.len() as u32);
        let extra = (f << shift) / scale;
        bytes = bytes
            .checked_add(u64::try_from(extra).map_err(|_| overflow())?)
            .ok_or_else(overflow)?;
    }
    Ok(bytes)
}

impl FromStr for Size {
    type Err = SizeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_size(s, BareNumber::Refuse).map(Size)
    }
}

impl fmt::Display for Size {
    /// The largest binary unit that divides the size exactly: `512MiB`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u32, &str); 6] = [
            (60, "EiB"),
            (50, "PiB"),
            (40, "TiB"),
            (30, "GiB"),
            (20, "MiB"),
            (10, "KiB"),
        ];
        for (shift, unit) in UNITS {
            if self.0 != 0 && self.0 % (1u64 << shift) == 0 {
                return write!(f, "{}{unit}", self.0 >> shift);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size with a unit, such as \"512MiB\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Size, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Size, E> {
                Err(E::custom(SizeError::NoUnit(v.to_string())))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Size, E> {
                Err(E::custom(SizeError::NoUnit(v.to_string())))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_powers_of_1024() {
        let b = BareNumber::Refuse;
        assert_eq!(parse_size("4K", b), Ok(4096));
        assert_eq!(parse_size("4k", b), Ok(4096));
        assert_eq!(parse_size("4G", b), Ok(4 << 30));
        assert_eq!(parse_size("8GiB", b), Ok(8 << 30));
        assert_eq!(parse_size("8MiB", b), Ok(8 << 20));
        assert_eq!(parse_size("512MB", b), Ok(512 << 20));
        assert_eq!(parse_size("1T", b), Ok(1 << 40));
        assert_eq!(parse_size("2E", b), Ok(2 << 60));
        assert_eq!(parse_size("1.5K", b), Ok(1536));
        assert_eq!(parse_size("0.5G", b), Ok(512 << 20));
        assert_eq!(parse_size("100B", b), Ok(100));
    }

    #[test]
    fn bare_numbers() {
        assert_eq!(parse_size("1048576", BareNumber::Bytes), Ok(1_048_576));
        assert_eq!(
            parse_size("512", BareNumber::Refuse),
            Err(SizeError::NoUnit("512".into()))
        );
        assert!(matches!(
            parse_size("1.5", BareNumber::Bytes),
            Err(SizeError::Invalid(_))
        ));
        assert_eq!(parse_size("1024.0", BareNumber::Bytes), Ok(1024));
        assert_eq!(parse_size("1024.0b", BareNumber::Bytes), Ok(1024));
        assert_eq!(parse_size("0x10000", BareNumber::Bytes), Ok(65536));
        assert!(parse_size("0x", BareNumber::Bytes).is_err());
    }

    #[test]
    fn bad_forms() {
        let b = BareNumber::Bytes;
        assert_eq!(parse_size("", b), Err(SizeError::Empty));
        assert!(matches!(parse_size("G", b), Err(SizeError::Invalid(_))));
        assert!(matches!(parse_size("4X", b), Err(SizeError::Unit { .. })));
        assert!(matches!(parse_size("4GX", b), Err(SizeError::Unit { .. })));
        assert!(matches!(parse_size("1..2G", b), Err(SizeError::Invalid(_))));
        assert!(matches!(parse_size(".5G", b), Err(SizeError::Invalid(_))));
        assert!(matches!(parse_size("16E", b), Err(SizeError::Overflow(_))));
        assert!(matches!(
            parse_size("99999999999999999999", b),
            Err(SizeError::Overflow(_))
        ));
        assert!(matches!(parse_size("+4G", b), Err(SizeError::Relative(_))));
        assert!(matches!(parse_size("-4G", b), Err(SizeError::Relative(_))));
    }

    #[test]
    fn relative_changes() {
        let b = BareNumber::Bytes;
        assert_eq!(SizeChange::parse("+20G", b), Ok(SizeChange::Grow(20 << 30)));
        assert_eq!(SizeChange::parse("-1G", b), Ok(SizeChange::Shrink(1 << 30)));
        assert_eq!(
            SizeChange::parse("24G", b),
            Ok(SizeChange::Absolute(24 << 30))
        );
        assert_eq!(SizeChange::Grow(20 << 30).apply(4 << 30), Some(24 << 30));
        assert_eq!(SizeChange::Shrink(5 << 30).apply(4 << 30), None);
        assert_eq!(SizeChange::Grow(1).apply(u64::MAX), None);
    }

    #[test]
    fn display_round_trips() {
        for text in ["512MiB", "4GiB", "1KiB", "3B", "1536KiB"] {
            let s: Size = text.parse().unwrap();
            assert_eq!(s.to_string(), text);
        }
        assert_eq!(Size(0).to_string(), "0B");
    }

    #[test]
    fn serde_refuses_bare_numbers() {
        let e = serde_json::from_str::<Size>("512").unwrap_err().to_string();
        assert!(e.contains("no unit"), "{e}");
        let s: Size = serde_json::from_str("\"2G\"").unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"2GiB\"");
    }
}
