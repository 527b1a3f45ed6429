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
    /// Ask the guest to power off (Ctrl-Alt-Del).
    Shutdown,
    /// Stop the VM at once (virsh destroy).
    Kill,
    /// Reset the guest.
    Reboot,
    /// Device counters (virsh domblkstat).
    Stats,
}

/// One disk's counters, named as `virsh domblkstat` names them; times are
/// nanoseconds summed over requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStats {
    pub id: String,
    pub rd_req: u64,
    pub rd_bytes: u64,
    pub wr_req: u64,
    pub wr_bytes: u64,
    pub flush_operations: u64,
    pub rd_total_times: u64,
    pub wr_total_times: u64,
    pub flush_total_times: u64,
    pub errs: u64,
    /// Time from each notification's first request to its last completion,
    /// summed (not a virsh counter: the basis of bench/vm-blk.sh).
    #[serde(default)]
    pub busy_ns: u64,
}

/// One NIC's counters, named as `virsh domifstat` names them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetStats {
    pub id: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errs: u64,
    pub rx_drop: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errs: u64,
    pub tx_drop: u64,
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
}

impl Reply {
    pub fn ok(state: Option<VmState>) -> Self {
        Self {
            ok: true,
            error: None,
            state: state.map(Box::new),
            stats: None,
        }
    }
    pub fn err(msg: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(msg.into()),
            state: None,
            stats: None,
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
        assert_eq!(r, Request::Shutdown);
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"explode"}"#).is_err());
        assert_eq!(
            serde_json::to_string(&Reply::err("no")).unwrap(),
            r#"{"ok":false,"error":"no"}"#
        );
    }
}
