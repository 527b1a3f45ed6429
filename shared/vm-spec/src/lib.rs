//! The JSON contracts between the vmtools.
//!
//! Everything a tool reads from a user or from another tool is parsed here,
//! once, with errors that name the bad field: the machine description
//! ([`VmSpec`]), the runtime record of a VM ([`VmState`]), sizes, CPU lists
//! and names.

mod cpulist;
mod document;
mod mac;
mod name;
pub mod overrides;
mod size;
mod spec;
mod state;
mod stats;
pub mod text;

pub use cpulist::{CpuList, CpuListError, MAX_CPUS};
pub use document::{read_document, read_document_from, MAX_DOCUMENT};
pub use mac::{MacAddr, MacError, GENERATED_PREFIX};
pub use name::{check_ifname, IfNameError, NameError, VmName};
pub use size::{parse_size, BareNumber, Size, SizeChange, SizeError};
pub use spec::{
    Action, Boot, CacheMode, CpuConfig, CpuTune, Disk, DiskFormat, Feature, IoMode, Net, NumaCell,
    NumaMode, NumaTune, Serial, SerialMode, SpecError, Topology, VmSpec,
};
pub use state::{DiskState, NetState, RunState, VmState};
pub use stats::{BlockStats, NetStats};
