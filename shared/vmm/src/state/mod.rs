//! The machine's state as data: every vCPU, the in-kernel chips and clock,
//! each device with its identity. One path serves save, restore, clones
//! and migration; `file` lays it out as a saved-VM file.

pub mod chips;
pub mod devices;
pub mod file;
pub mod stream;
pub mod vcpu;

use serde::{Deserialize, Serialize};

use chips::ChipsState;
use devices::{I8042State, SerialState, VirtioState};
use vcpu::VcpuState;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineState {
    pub vcpus: Vec<VcpuState>,
    pub chips: ChipsState,
    pub serial: SerialState,
    pub i8042: I8042State,
    /// The virtio devices in bus order.
    pub devices: Vec<VirtioState>,
}
