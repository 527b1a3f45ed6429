//! Per-device changes to a spec's host-local parts, from the command line:
//! what a restored VM or a clone uses in place of the saved VM's disk
//! files and taps (virsh restore --xml, one device at a time).

use std::path::PathBuf;
use std::str::FromStr;

use crate::{check_ifname, DiskFormat, VmSpec};

/// `--disk ID=PATH[,format=raw|qcow2]`: disk ID reads and writes PATH. The
/// format stays the saved one unless given (it is never guessed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskOverride {
    pub id: String,
    pub path: PathBuf,
    pub format: Option<DiskFormat>,
}

impl FromStr for DiskOverride {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (id, rest) = s
            .split_once('=')
            .filter(|(id, _)| !id.is_empty())
            .ok_or("takes ID=PATH[,format=raw|qcow2]")?;
        let (path, opts) = match rest.split_once(',') {
            Some((p, o)) => (p, Some(o)),
            None => (rest, None),
        };
        if path.is_empty() {
            return Err(format!("{id}: an empty path"));
        }
        let format = match opts {
            None => None,
            Some("format=raw") => Some(DiskFormat::Raw),
            Some("format=qcow2") => Some(DiskFormat::Qcow2),
            Some(o) => return Err(format!("'{o}': takes format=raw or format=qcow2")),
        };
        // Absolute, as `define` stores paths: the VM's state and later
        // verbs (snapshots, a reboot) must not depend on this folder.
        let path = std::path::absolute(path).unwrap_or_else(|_| PathBuf::from(path));
        Ok(Self {
            id: id.to_string(),
            path,
            format,
        })
    }
}

/// `--nic ID,tap=NAME` or `--nic ID,bridge=NAME`: NIC ID runs on that
/// tap (or a new tap on that bridge). The MAC stays: the guest's driver
/// read it at boot and keeps sending from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicOverride {
    pub id: String,
    pub tap: Option<String>,
    pub bridge: Option<String>,
}

impl FromStr for NicOverride {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(',');
        let id = parts.next().unwrap_or_default();
        if id.is_empty() || id.contains('=') {
            return Err("takes ID,tap=NAME or ID,bridge=NAME".into());
        }
        let mut o = Self {
            id: id.to_string(),
            tap: None,
            bridge: None,
        };
        for p in parts {
            match p.split_once('=') {
                Some(("tap", v)) => o.tap = Some(v.to_string()),
                Some(("bridge", v)) => o.bridge = Some(v.to_string()),
                _ => return Err(format!("'{p}': takes tap=NAME or bridge=NAME")),
            }
        }
        for name in o.tap.iter().chain(&o.bridge) {
            check_ifname(name).map_err(|e| e.to_string())?;
        }
        if o.tap.is_some() == o.bridge.is_some() {
            return Err(format!("{id}: one of tap=NAME or bridge=NAME"));
        }
        Ok(o)
    }
}

/// Applies the overrides to `spec`; an id the spec lacks is an error.
pub fn apply(
    spec: &mut VmSpec,
    disks: &[DiskOverride],
    nics: &[NicOverride],
) -> Result<(), String> {
    for o in disks {
        let d = spec
            .disks
            .iter_mut()
            .find(|d| d.id == o.id)
            .ok_or_else(|| format!("--disk {}: the VM has no such disk", o.id))?;
        d.path.clone_from(&o.path);
        if let Some(f) = o.format {
            d.format = f;
        }
    }
    for o in nics {
        let n = spec
            .nets
            .iter_mut()
            .find(|n| n.id == o.id)
            .ok_or_else(|| format!("--nic {}: the VM has no such NIC", o.id))?;
        n.tap.clone_from(&o.tap);
        n.bridge.clone_from(&o.bridge);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_overrides_parse() {
        let d: DiskOverride = "vda=/x/c1.qcow2,format=qcow2".parse().unwrap();
        assert_eq!(d.id, "vda");
        assert_eq!(d.path, PathBuf::from("/x/c1.qcow2"));
        assert_eq!(d.format, Some(DiskFormat::Qcow2));
        // A relative path is made absolute against the current folder.
        assert_eq!(
            "vdb=a=b".parse::<DiskOverride>().unwrap().path,
            std::env::current_dir().unwrap().join("a=b")
        );
        for bad in ["vda", "=x", "vda=", "vda=x,format=vmdk", "vda=x,cache=none"] {
            assert!(bad.parse::<DiskOverride>().is_err(), "{bad}");
        }
    }

    #[test]
    fn nic_overrides_parse() {
        let n: NicOverride = "net0,tap=tap-c1".parse().unwrap();
        assert_eq!(n.tap.as_deref(), Some("tap-c1"));
        assert!("net0,bridge=br0"
            .parse::<NicOverride>()
            .unwrap()
            .bridge
            .is_some());
        for bad in [
            "net0",
            "net0,tap=a,bridge=b",
            "tap=x",
            "net0,mac=52:54:00:00:00:01",
            "net0,tap=a/b",
        ] {
            assert!(bad.parse::<NicOverride>().is_err(), "{bad}");
        }
    }

    #[test]
    fn overrides_apply_by_id() {
        let mut spec = VmSpec::from_json(
            r#"{"name":"a","vcpus":1,"memory":"64MiB","boot":{"kernel":"/k"},
                "disks":[{"id":"vda","path":"/a.raw","format":"raw"}],
                "nets":[{"id":"net0","tap":"t0"}]}"#,
        )
        .unwrap();
        let d = ["vda=/c.qcow2,format=qcow2".parse().unwrap()];
        let n = ["net0,bridge=br1".parse().unwrap()];
        apply(&mut spec, &d, &n).unwrap();
        assert_eq!(spec.disks[0].path, PathBuf::from("/c.qcow2"));
        assert_eq!(spec.disks[0].format, DiskFormat::Qcow2);
        assert_eq!(spec.nets[0].tap, None);
        assert_eq!(spec.nets[0].bridge.as_deref(), Some("br1"));
        let bad = ["net1,tap=x".parse().unwrap()];
        assert!(apply(&mut spec, &[], &bad)
            .unwrap_err()
            .contains("no such NIC"));
    }
}
