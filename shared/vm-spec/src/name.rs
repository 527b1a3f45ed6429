//! VM names (the guide's rules) and host interface names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a VM name must not be empty")]
    Empty,
    #[error("VM name '{0}' is longer than 64 characters")]
    TooLong(String),
    #[error("VM name '{name}' has '{bad}': use letters, digits, '_', '-' and ':'")]
    BadChar { name: String, bad: char },
    #[error("VM name '{0}' is all digits, which reads as an id")]
    AllDigits(String),
    /// `-` stands for stdin to every verb, and a leading `-` reads as an
    /// option, so a name starts with a letter or a digit.
    #[error("VM name '{0}' must start with a letter or a digit")]
    BadStart(String),
}

/// A VM name: 1-64 letters, digits, `_`, `-` or `:`, starting with a
/// letter or a digit, not all digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VmName(String);

impl VmName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for VmName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.chars().count() > 64 {
            return Err(NameError::TooLong(s.to_string()));
        }
        if let Some(bad) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':')))
        {
            return Err(NameError::BadChar {
                name: s.to_string(),
                bad,
            });
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NameError::AllDigits(s.to_string()));
        }
        if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(NameError::BadStart(s.to_string()));
        }
        Ok(Self(s.to_string()))
    }
}

impl fmt::Display for VmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for VmName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for VmName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IfNameError {
    #[error("interface name must not be empty")]
    Empty,
    #[error("interface name '{0}' is longer than 15 bytes")]
    TooLong(String),
    #[error(
        "interface name '{0}' may not contain '/', ':', white space or NUL, nor be '.' or '..'"
    )]
    BadChar(String),
    /// The kernel reads `%d` as "pick a number" and makes another name
    /// than the one asked for; control characters would reach terminals.
    #[error(
        "interface name '{}' may not contain '%' (the kernel would pick a name of its own) \
         nor control characters",
        crate::text::escape(.0)
    )]
    Template(String),
}

/// Checks a Linux interface name (IFNAMSIZ 16 including the NUL).
pub fn check_ifname(name: &str) -> Result<(), IfNameError> {
    if name.is_empty() {
        return Err(IfNameError::Empty);
    }
    if name.len() > 15 {
        return Err(IfNameError::TooLong(name.to_string()));
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        return Err(IfNameError::BadChar(name.to_string()));
    }
    if name.chars().any(|c| c == '%' || c.is_control()) {
        return Err(IfNameError::Template(name.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guide_rules() {
        for good in ["demo", "vm-1", "a_b:c", "1vm", "x", &"a".repeat(64)] {
            assert!(good.parse::<VmName>().is_ok(), "{good}");
        }
        assert_eq!("".parse::<VmName>(), Err(NameError::Empty));
        for bad in ["-", "-vm", "_x", ":a"] {
            assert_eq!(
                bad.parse::<VmName>(),
                Err(NameError::BadStart(bad.into())),
                "{bad}"
            );
        }
        assert!(matches!(
            "a".repeat(65).parse::<VmName>(),
            Err(NameError::TooLong(_))
        ));
        assert!(matches!(
            "a b".parse::<VmName>(),
            Err(NameError::BadChar { bad: ' ', .. })
        ));
        assert!(matches!(
            "a/b".parse::<VmName>(),
            Err(NameError::BadChar { bad: '/', .. })
        ));
        assert!(matches!(
            "vé".parse::<VmName>(),
            Err(NameError::BadChar { .. })
        ));
        assert!(matches!(
            "1234".parse::<VmName>(),
            Err(NameError::AllDigits(_))
        ));
    }

    #[test]
    fn interface_names() {
        assert!(check_ifname("vnet0").is_ok());
        assert!(check_ifname("abcdefghijklmno").is_ok());
        assert!(matches!(
            check_ifname("abcdefghijklmnop"),
            Err(IfNameError::TooLong(_))
        ));
        assert!(matches!(check_ifname(""), Err(IfNameError::Empty)));
        assert!(matches!(check_ifname("a/b"), Err(IfNameError::BadChar(_))));
        assert!(matches!(check_ifname(".."), Err(IfNameError::BadChar(_))));
    }
}
