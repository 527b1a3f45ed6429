//! CPU and NUMA node lists in the syntax of libvirt and the guide: `0-3,^1`.
//!
//! A list is a union of numbers and ranges, minus the `^N` exclusions. Whether
//! the CPUs exist is a question for the host at apply time, not here, so a
//! spec written for a bigger host still parses.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The largest CPU number accepted (the kernel's NR_CPUS ceiling).
pub const MAX_CPUS: u32 = 8192;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpuListError {
    #[error("empty CPU list")]
    Empty,
    #[error("'{0}' is not a number or a range N-M")]
    Invalid(String),
    #[error("range '{0}' runs backwards")]
    Backwards(String),
    /// The number as written (it may not fit any integer type).
    #[error("CPU {0} is beyond the maximum of {max}", max = MAX_CPUS - 1)]
    TooLarge(String),
    #[error("'{0}' selects no CPU")]
    NothingLeft(String),
}

/// A set of CPU (or NUMA node) numbers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct CpuList(BTreeSet<u32>);

impl CpuList {
    pub fn from_cpus(cpus: impl IntoIterator<Item = u32>) -> Self {
        Self(cpus.into_iter().collect())
    }
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }
    pub fn contains(&self, cpu: u32) -> bool {
        self.0.contains(&cpu)
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn max(&self) -> Option<u32> {
        self.0.last().copied()
    }
    /// True when every member of `self` is in `other`.
    pub fn is_subset(&self, other: &CpuList) -> bool {
        self.0.is_subset(&other.0)
    }
    pub fn is_disjoint(&self, other: &CpuList) -> bool {
        self.0.is_disjoint(&other.0)
    }
}

fn parse_number(s: &str) -> Result<u32, CpuListError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CpuListError::Invalid(s.to_string()));
    }
    let n: u32 = s
        .parse()
        .map_err(|_| CpuListError::TooLarge(s.to_string()))?;
    if n >= MAX_CPUS {
        return Err(CpuListError::TooLarge(s.to_string()));
    }
    Ok(n)
}

fn parse_item(item: &str) -> Result<(u32, u32), CpuListError> {
    if let Some((a, b)) = item.split_once('-') {
        let (a, b) = (parse_number(a.trim())?, parse_number(b.trim())?);
        if a > b {
            return Err(CpuListError::Backwards(item.to_string()));
        }
        Ok((a, b))
    } else {
        let n = parse_number(item)?;
        Ok((n, n))
    }
}

impl FromStr for CpuList {
    type Err = CpuListError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.is_empty() {
            return Err(CpuListError::Empty);
        }
        let mut set = BTreeSet::new();
        let mut excluded = BTreeSet::new();
        for item in text.split(',') {
            let item = item.trim();
            let (target, item) = match item.strip_prefix('^') {
                Some(rest) => (&mut excluded, rest),
                None => (&mut set, item),
            };
            let (a, b) = parse_item(item)?;
            target.extend(a..=b);
        }
        let set: BTreeSet<u32> = set.difference(&excluded).copied().collect();
        if set.is_empty() {
            return Err(CpuListError::NothingLeft(text.to_string()));
        }
        Ok(Self(set))
    }
}

impl fmt::Display for CpuList {
    /// The shortest form: runs collapsed to ranges, `0-2,5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut it = self.0.iter().copied().peekable();
        let mut first = true;
        while let Some(start) = it.next() {
            let mut end = start;
            while it.peek() == Some(&(end + 1)) {
                end += 1;
                it.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for CpuList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CpuList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = CpuList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a CPU list such as \"0-3,^1\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CpuList, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<CpuList, E> {
                v.to_string().parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(s: &str) -> Vec<u32> {
        s.parse::<CpuList>().unwrap().iter().collect()
    }

    #[test]
    fn guide_syntax() {
        assert_eq!(cpus("0-3,^1"), [0, 2, 3]);
        assert_eq!(cpus("2"), [2]);
        assert_eq!(cpus("0,2-3"), [0, 2, 3]);
        assert_eq!(cpus(" 1 , 3 "), [1, 3]);
        assert_eq!(cpus("0-7,^2-5"), [0, 1, 6, 7]);
        assert_eq!(cpus("8191").len(), 1);
        assert_eq!(
            "9999".parse::<CpuList>(),
            Err(CpuListError::TooLarge("9999".into()))
        );
        // Past u32 too: the number as written, not a clamped one.
        let e = "99999999999".parse::<CpuList>().unwrap_err().to_string();
        assert!(e.starts_with("CPU 99999999999 is beyond"), "{e}");
    }

    #[test]
    fn bad_lists() {
        assert_eq!("".parse::<CpuList>(), Err(CpuListError::Empty));
        assert_eq!(
            "3-1".parse::<CpuList>(),
            Err(CpuListError::Backwards("3-1".into()))
        );
        assert_eq!(
            "^0".parse::<CpuList>(),
            Err(CpuListError::NothingLeft("^0".into()))
        );
        assert!(matches!(
            "a".parse::<CpuList>(),
            Err(CpuListError::Invalid(_))
        ));
        assert!(matches!(
            "1-".parse::<CpuList>(),
            Err(CpuListError::Invalid(_))
        ));
        assert!(matches!(
            "-1".parse::<CpuList>(),
            Err(CpuListError::Invalid(_))
        ));
        assert!(matches!(
            "1,,2".parse::<CpuList>(),
            Err(CpuListError::Invalid(_))
        ));
        assert!(matches!(
            "0-99999".parse::<CpuList>(),
            Err(CpuListError::TooLarge(_))
        ));
        assert!(matches!(
            "99999999999".parse::<CpuList>(),
            Err(CpuListError::TooLarge(_))
        ));
    }

    #[test]
    fn display_is_canonical() {
        let l: CpuList = "3,0-1,2,7,^1".parse().unwrap();
        assert_eq!(l.to_string(), "0,2-3,7");
        assert_eq!(serde_json::to_string(&l).unwrap(), "\"0,2-3,7\"");
        let n: CpuList = serde_json::from_str("4").unwrap();
        assert_eq!(n.to_string(), "4");
    }
}
