//! VmState: what a running (or stopped) VM looks like to other tools.
//! vm-run rewrites it atomically on every change; vm-pin, vm-snap and
//! vm-migrate read it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{DiskFormat, MacAddr, VmSpec};

/// virsh's domain states that vmtools can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    Paused,
    Shutoff,
    Crashed,
    Migrating,
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Shutoff => "shut off",
            Self::Crashed => "crashed",
            Self::Migrating => "migrating",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskState {
    pub id: String,
    /// The image the guest writes to now (changes with snapshots).
    pub top: PathBuf,
    pub format: DiskFormat,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetState {
    pub id: String,
    pub tap: String,
    pub mac: MacAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmState {
    pub name: String,
    pub uuid: uuid::Uuid,
    pub pid: u32,
    pub state: RunState,
    pub reason: String,
    pub control_socket: PathBuf,
    pub spec: VmSpec,
    #[serde(default)]
    pub vcpu_threads: Vec<u32>,
    #[serde(default)]
    pub iothread_threads: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<PathBuf>,
    #[serde(default)]
    pub disks: Vec<DiskState>,
    #[serde(default)]
    pub nets: Vec<NetState>,
    /// Seconds since the Unix epoch.
    pub started: u64,
}

impl VmState {
    pub fn from_json(text: &str) -> Result<Self, crate::SpecError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| crate::SpecError::Field {
            path: e.path().to_string(),
            message: e.into_inner().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_with_plain_strings() {
        let spec =
            VmSpec::from_json(r#"{"name":"t","vcpus":1,"memory":"64MiB","boot":{"kernel":"/k"}}"#)
                .unwrap();
        let st = VmState {
            name: "t".into(),
            uuid: uuid::Uuid::nil(),
            pid: 42,
            state: RunState::Paused,
            reason: "user".into(),
            control_socket: "/run/vmtools/t/control.sock".into(),
            spec,
            vcpu_threads: vec![43],
            iothread_threads: vec![],
            console: None,
            disks: vec![],
            nets: vec![NetState {
                id: "net0".into(),
                tap: "vnet0".into(),
                mac: "52:54:00:00:00:01".parse().unwrap(),
            }],
            started: 1,
        };
        let text = serde_json::to_string(&st).unwrap();
        assert!(text.contains(r#""state":"paused""#), "{text}");
        assert!(text.contains(r#""reason":"user""#), "{text}");
        assert_eq!(VmState::from_json(&text).unwrap(), st);
        let e = VmState::from_json(&text.replace("paused", "asleep")).unwrap_err();
        assert!(e.to_string().starts_with("state"), "{e}");
    }
}
