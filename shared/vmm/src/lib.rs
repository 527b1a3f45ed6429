//! The vmtools machine monitor: KVM with the in-kernel irqchip and PIT,
//! memfd-backed guest memory, firmware-less boot (PVH, 64-bit ELF,
//! bzImage), legacy devices and one thread per vCPU.

pub mod acpi;
pub mod boot;
pub mod cpu;
pub mod devices;
pub mod dirty;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod io_loop;
pub mod layout;
pub mod memory;
pub mod seccomp;
pub mod state;
pub mod teardown;
pub mod threads;
pub mod vcpu;
mod vm;

pub use error::{Error, Result};
pub use vm::{DirtyTracker, DiskConfig, NetConfig, Restore, RestoreMemory, Vm, VmConfig};
