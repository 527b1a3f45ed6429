//! The control protocol: `{"cmd":"pause"}` in, `{"ok":true,...}` or
//! `{"ok":false,"error":"..."}` out, one line each.

use serde::{Deserialize, Serialize};
use vm_spec::VmState;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    Status,
    Pause,
    Resume,
    /// Ask the guest to power off.
    Shutdown {
        #[serde(default)]
        mode: ShutdownMode,
    },
    /// Stop the VM at once (virsh destroy).
    Kill,
    /// Reset the guest.
    Reboot,
    /// Device counters (virsh domblkstat).
    Stats,
    /// Save the VM into the empty file that comes with the request
    /// (SCM_RIGHTS): pause, write, and (unless `fsync` is false) make it
    /// durable. The reply comes once the file is written; the VM then
    /// waits, paused, on this connection: `save-commit` ends it, anything
    /// else (the connection closing) resumes it as it was.
    Save {
        #[serde(default = "yes")]
        fsync: bool,
    },
    /// The saved file is in place: end the VM (on a save's connection).
    SaveCommit,
    /// A live disk snapshot: each named disk switches to its new qcow2
    /// overlay, whose backing file is the disk's current top, all or none.
    /// Each overlay's descriptor comes with the request, in order
    /// (SCM_RIGHTS), so the VM checks that the path is that file.
    SnapshotDisks {
        disks: Vec<DiskSnapshot>,
    },
    /// Merge one overlay of a disk's chain into the layer right below it
    /// (a live blockcommit: deleting a disk snapshot). The base's
    /// descriptor, open for writing, comes with the request (SCM_RIGHTS).
    /// The reply comes when the overlay is out of the chain: the data is
    /// copied while the guest runs, then the chain changes in one pause.
    CommitDisk {
        id: String,
        overlay: std::path::PathBuf,
        base: std::path::PathBuf,
    },
    /// Live migration: send the VM into the connections that come with
    /// the request (SCM_RIGHTS; sockets, 1 to 16: the first carries the
    /// hello and is read for the destination's replies, the others only
    /// guest memory). The reply comes when it is over: the VM ends once the
    /// destination says it runs, and runs on here on any failure.
    MigrateSend {
        #[serde(default)]
        options: MigrateOptions,
    },
    /// How a migration in progress is doing (virsh domjobinfo).
    MigrateStatus,
    /// Abandon the migration in progress (virsh domjobabort); the VM runs
    /// on here.
    MigrateCancel,
    /// Change the knobs of the migration in progress (virsh
    /// migrate-setmaxdowntime and migrate-setspeed during a job); the
    /// reply carries the report with the knobs as they now are.
    MigrateSet {
        /// The new downtime budget (at least 1 ms).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_downtime_ms: Option<u64>,
        /// The new cap in MiB/s; 0 lifts the cap.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bandwidth_mib: Option<u64>,
    },
}

/// A migration's knobs, as virsh names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateOptions {
    /// The longest pause allowed for the last copy (migrate-setmaxdowntime).
    #[serde(default = "default_downtime")]
    pub max_downtime_ms: u64,
    /// A cap on the rate, in MiB/s (migrate-setspeed); none: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_mib: Option<u64>,
    /// Slow the vCPUs down while rounds do not shrink.
    #[serde(default)]
    pub auto_converge: bool,
    /// After this many seconds, pause and finish whatever is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    /// Disks whose contents go along (non-shared storage), by id
    /// (virsh migrate --migrate-disks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<String>,
    /// Every writable disk's contents go along (virsh migrate
    /// --copy-storage-all).
    #[serde(default)]
    pub copy_storage_all: bool,
}

fn default_downtime() -> u64 {
    300
}

impl Default for MigrateOptions {
    fn default() -> Self {
        Self {
            max_downtime_ms: default_downtime(),
            bandwidth_mib: None,
            auto_converge: false,
            timeout_s: None,
            disks: Vec::new(),
            copy_storage_all: false,
        }
    }
}

/// A migration's progress, and at the end its summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationReport {
    /// `setup`, `active`, `stopping`, `completed`, `failed` or `cancelled`.
    pub status: String,
    pub total_ms: u64,
    /// From pausing the guest here to the destination's word that it runs.
    pub downtime_ms: u64,
    /// Bytes sent so far.
    pub bytes: u64,
    pub rounds: u32,
    /// Pages the guest dirtied per second in the last round.
    pub dirty_rate: u64,
    /// Bytes left to send, as the last round counted them.
    pub remaining: u64,
    /// Percent of time the vCPUs are held back (auto-converge).
    pub throttle: u32,
    /// Of `bytes`, those of disk contents (storage migration).
    #[serde(default)]
    pub disk_bytes: u64,
    /// The downtime budget in force (migrate-setmaxdowntime).
    #[serde(default)]
    pub max_downtime_ms: u64,
    /// The cap on the rate in force, in MiB/s; none: unlimited
    /// (migrate-getspeed).
    #[serde(default)]
    pub bandwidth_mib: Option<u64>,
}

/// What a live commit copied and what it cost the guest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitReport {
    /// Bytes written into the base (data and zeroes).
    pub copied_bytes: u64,
    /// Copy rounds while the guest ran (the first, then its writes since).
    pub rounds: u32,
    /// The final pause: the last writes copied and the chain changed.
    pub pause_us: u64,
    pub total_ms: u64,
}

/// One disk of a live snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSnapshot {
    pub id: String,
    pub overlay: std::path::PathBuf,
}

/// What a live disk snapshot cost the guest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotReport {
    /// From pausing the vCPUs to running them again, in microseconds.
    pub pause_us: u64,
}

fn yes() -> bool {
    true
}

/// What a save wrote and how long it took.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaveReport {
    /// Bytes of guest memory, and of those written (the rest are zero).
    pub memory_bytes: u64,
    pub written_bytes: u64,
    pub state_bytes: u64,
    pub file_bytes: u64,
    /// Stopping the vCPUs and device queues and reading their state.
    pub pause_ms: u64,
    /// Writing the file, and then fsync (0 without it).
    pub write_ms: u64,
    pub sync_ms: u64,
}

/// How `shutdown` asks the guest (virsh shutdown's `--mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShutdownMode {
    /// Press the ACPI power button (virsh's default).
    #[default]
    Acpi,
    /// Ctrl-Alt-Del on the i8042; the reset that answers it counts as a
    /// power-off (guests without ACPI, such as the test guest).
    CtrlAltDel,
}

impl Request {
    /// Reads one request line. serde ignores `deny_unknown_fields` on the
    /// unit variants of an internally tagged enum (it checks the others),
    /// so a unit request's extra fields are refused here: a request
    /// carrying a field its command does not take is refused, not half
    /// understood. Bytes that are not UTF-8 or not JSON get an error too
    /// (the caller replies with it).
    pub fn parse(line: &[u8]) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_slice(line).map_err(|e| format!("bad request: {e}"))?;
        let obj = v
            .as_object()
            .ok_or_else(|| "bad request: not a JSON object".to_string())?;
        let extra = obj.keys().find(|k| k.as_str() != "cmd").cloned();
        let r: Self = serde_json::from_value(v).map_err(|e| format!("bad request: {e}"))?;
        match extra {
            Some(k) if !r.takes_fields() => Err(format!("bad request: unknown field `{k}`")),
            _ => Ok(r),
        }
    }

    /// Whether the request has fields besides `cmd`. Exhaustive on
    /// purpose: a new request must say.
    fn takes_fields(&self) -> bool {
        match self {
            Self::Status
            | Self::Pause
            | Self::Resume
            | Self::Kill
            | Self::Reboot
            | Self::Stats
            | Self::SaveCommit
            | Self::MigrateStatus
            | Self::MigrateCancel => false,
            Self::Shutdown { .. }
            | Self::Save { .. }
            | Self::SnapshotDisks { .. }
            | Self::CommitDisk { .. }
            | Self::MigrateSend { .. }
            | Self::MigrateSet { .. } => true,
        }
    }
}

/// One disk's counters with its id (the counters' names at the top level
/// of the JSON object, as before).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStats {
    pub id: String,
    #[serde(flatten)]
    pub stats: vm_spec::BlockStats,
}

/// One NIC's counters with its id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetStats {
    pub id: String,
    #[serde(flatten)]
    pub stats: vm_spec::NetStats,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub disks: Vec<DiskStats>,
    #[serde(default)]
    pub nets: Vec<NetStats>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Box<VmState>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Stats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved: Option<SaveReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<CommitReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationReport>,
}

impl Reply {
    pub fn ok(state: Option<VmState>) -> Self {
        Self {
            ok: true,
            error: None,
            state: state.map(Box::new),
            stats: None,
            saved: None,
            snapshot: None,
            commit: None,
            migration: None,
        }
    }
    pub fn err(msg: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(msg.into()),
            state: None,
            stats: None,
            saved: None,
            snapshot: None,
            commit: None,
            migration: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        assert_eq!(
            serde_json::to_string(&Request::Pause).unwrap(),
            r#"{"cmd":"pause"}"#
        );
        let r: Request = serde_json::from_str(r#"{"cmd":"shutdown"}"#).unwrap();
        assert_eq!(
            r,
            Request::Shutdown {
                mode: ShutdownMode::Acpi
            }
        );
        assert_eq!(
            Request::parse(br#"{"cmd":"shutdown","mode":"ctrl-alt-del"}"#),
            Ok(Request::Shutdown {
                mode: ShutdownMode::CtrlAltDel
            })
        );
        assert!(Request::parse(br#"{"cmd":"shutdown","mode":"lever"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"explode"}"#).is_err());
        assert_eq!(Request::parse(br#"{"cmd":"kill"}"#), Ok(Request::Kill));
        let e = Request::parse(br#"{"cmd":"kill","force":true}"#).unwrap_err();
        assert!(e.contains("unknown field `force`"), "{e}");
        assert!(Request::parse(b"\xff\xfe")
            .unwrap_err()
            .starts_with("bad request"));
        assert!(Request::parse(b"[1]")
            .unwrap_err()
            .contains("not a JSON object"));
        assert_eq!(
            serde_json::to_string(&Reply::err("no")).unwrap(),
            r#"{"ok":false,"error":"no"}"#
        );
    }

    /// Every request with fields, written whole, reads back the same
    /// through `parse`, and refuses a field it does not take.
    #[test]
    fn requests_with_fields_read_back() {
        let all = [
            Request::Shutdown {
                mode: ShutdownMode::CtrlAltDel,
            },
            Request::Save { fsync: false },
            Request::SnapshotDisks {
                disks: vec![DiskSnapshot {
                    id: "vda".into(),
                    overlay: "/o.qcow2".into(),
                }],
            },
            Request::CommitDisk {
                id: "vda".into(),
                overlay: "/o.qcow2".into(),
                base: "/b.qcow2".into(),
            },
            Request::MigrateSend {
                options: MigrateOptions {
                    bandwidth_mib: Some(5),
                    timeout_s: Some(9),
                    ..MigrateOptions::default()
                },
            },
            Request::MigrateSet {
                max_downtime_ms: Some(40),
                bandwidth_mib: Some(0),
            },
        ];
        for r in all {
            let line = serde_json::to_vec(&r).unwrap();
            assert_eq!(Request::parse(&line), Ok(r.clone()), "{r:?}");
            let mut v: serde_json::Value = serde_json::from_slice(&line).unwrap();
            v["lever"] = true.into();
            let e = Request::parse(v.to_string().as_bytes()).unwrap_err();
            assert!(e.contains("unknown field `lever`"), "{r:?}: {e}");
        }
        let e = Request::parse(br#"{"cmd":"migrate-set","options":{}}"#).unwrap_err();
        assert!(e.contains("unknown field `options`"), "{e}");
    }
}
