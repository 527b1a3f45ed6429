//! Ethernet MAC addresses, `52:54:00:12:34:56`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    #[error("'{0}' is not a MAC address (six hex pairs separated by ':')")]
    Invalid(String),
    #[error("{0} is a multicast address; a NIC needs a unicast one")]
    Multicast(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = MacError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || MacError::Invalid(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        if out[0] & 1 != 0 {
            return Err(MacError::Multicast(s.to_string()));
        }
        Ok(Self(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        let m: MacAddr = "52:54:00:12:34:AB".parse().unwrap();
        assert_eq!(m.to_string(), "52:54:00:12:34:ab");
        assert!(matches!(
            "52:54:00:12:34".parse::<MacAddr>(),
            Err(MacError::Invalid(_))
        ));
        assert!(matches!(
            "52:54:00:12:34:56:78".parse::<MacAddr>(),
            Err(MacError::Invalid(_))
        ));
        assert!(matches!(
            "52:54:00:12:34:5".parse::<MacAddr>(),
            Err(MacError::Invalid(_))
        ));
        assert!(matches!(
            "zz:54:00:12:34:56".parse::<MacAddr>(),
            Err(MacError::Invalid(_))
        ));
        assert!(matches!(
            "01:00:5e:00:00:01".parse::<MacAddr>(),
            Err(MacError::Multicast(_))
        ));
    }
}
