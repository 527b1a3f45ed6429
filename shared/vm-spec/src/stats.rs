//! Device counters as the VMM keeps them and `vm-run stats` prints them,
//! named as `virsh domblkstat` and `domifstat` name them.

use serde::{Deserialize, Serialize};

/// One disk's counters; times are nanoseconds summed over requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockStats {
    pub rd_req: u64,
    pub rd_bytes: u64,
    pub wr_req: u64,
    pub wr_bytes: u64,
    pub flush_operations: u64,
    pub rd_total_times: u64,
    pub wr_total_times: u64,
    pub flush_total_times: u64,
    pub errs: u64,
    /// Time from each queue notification's first request to its last
    /// completion, summed (not a virsh counter: the basis of
    /// bench/vm-blk.sh).
    #[serde(default)]
    pub busy_ns: u64,
}

/// One NIC's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetStats {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errs: u64,
    pub rx_drop: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errs: u64,
    pub tx_drop: u64,
}
