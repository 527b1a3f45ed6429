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

/// QEMU's and libvirt's prefix for generated addresses (locally
/// administered, unicast).
pub const GENERATED_PREFIX: [u8; 3] = [0x52, 0x54, 0x00];

impl MacAddr {
    /// The same address every time for NIC `index` of VM `vm`: the prefix
    /// and three bytes of an FNV-1a hash (stable across releases, unlike
    /// std's hasher).
    pub fn for_nic(vm: &str, index: u32) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in vm.bytes().chain([0]).chain(index.to_le_bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        let t = h.to_le_bytes();
        let p = GENERATED_PREFIX;
        Self([p[0], p[1], p[2], t[0], t[1], t[2]])
    }

    /// A fresh random address with the generated prefix.
    pub fn random() -> std::io::Result<Self> {
        let mut t = [0u8; 3];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut t)?;
        let p = GENERATED_PREFIX;
        Ok(Self([p[0], p[1], p[2], t[0], t[1], t[2]]))
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
    fn generated_addresses() {
        let a = MacAddr::for_nic("web", 0);
        assert_eq!(a, MacAddr::for_nic("web", 0), "stable");
        assert_ne!(a, MacAddr::for_nic("web", 1));
        assert_ne!(a, MacAddr::for_nic("db", 0));
        assert_eq!(a.0[..3], GENERATED_PREFIX);
        let r = MacAddr::random().unwrap();
        assert_eq!(r.0[..3], GENERATED_PREFIX);
        assert!(r.to_string().parse::<MacAddr>().is_ok(), "unicast");
    }

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
