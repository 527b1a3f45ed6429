//! A machine started from a saved state: where its memory comes from,
//! and the state read back from a running one (save, migration).

use std::fs::File;
use std::sync::Arc;

use super::{migrate, Vm, VmConfig};
use crate::memory::{self, GuestMemory};
use crate::state::chips::ChipsState;
use crate::state::devices::VirtioState;
use crate::state::MachineState;
use crate::{Error, Result};

/// What a restored machine starts from: its saved state, and guest
/// memory from a saved file or already received (a migration).
#[derive(Debug)]
pub struct Restore<'a> {
    pub state: &'a MachineState,
    pub memory: RestoreMemory,
    /// The vCPUs stay paused until [`Vm::resume`].
    pub paused: bool,
}

/// Where a restored machine's memory comes from.
#[derive(Debug)]
pub enum RestoreMemory {
    /// Mapped privately from a saved file.
    File(memory::Saved),
    /// Filled by a migration's stream: the memory, made by
    /// [`memory::create_anonymous`] for this spec (or by
    /// [`memory::create_with`], with its memfd, for huge pages), and bound
    /// to its NUMA nodes before the first page arrived.
    Received(GuestMemory, Option<File>),
}

/// Guest memory for a machine: new, mapped from a saved file, or the
/// memory a migration filled, with the file behind it (none for
/// anonymous memory). Also says whether that file is a memfd holding all
/// of guest memory.
pub(super) fn guest_memory(
    cfg: &VmConfig,
    from: Option<&RestoreMemory>,
) -> Result<(GuestMemory, Option<File>, bool)> {
    Ok(match from {
        Some(RestoreMemory::File(from)) => {
            let (m, f) = memory::restore(&cfg.name, cfg.memory, cfg.hugepages, from)?;
            (m, Some(f), cfg.hugepages.is_some())
        }
        Some(RestoreMemory::Received(m, f)) => {
            migrate::check_layout(m, cfg.memory)?;
            let f = f
                .as_ref()
                .map(File::try_clone)
                .transpose()
                .map_err(Error::io("guest memory"))?;
            let memfd = f.is_some();
            (m.clone(), f, memfd)
        }
        None => {
            let (m, f) = memory::create_with(&cfg.name, cfg.memory, cfg.hugepages)?;
            (m, Some(f), true)
        }
    })
}

impl Vm {
    /// The machine's whole state, for save and migration. Call it with
    /// the VM paused ([`Vm::pause`]); each vCPU reads its own on its
    /// thread, at a clean point.
    pub fn save_state(&self) -> Result<MachineState> {
        let msrs: Arc<[u32]> = self
            .kvm
            .get_msr_index_list()
            .map_err(Error::kvm("KVM_GET_MSR_INDEX_LIST"))?
            .as_slice()
            .into();
        let mut vcpus = Vec::with_capacity(self.vcpus.len());
        for v in &self.vcpus {
            vcpus.push(v.save_state(Arc::clone(&msrs)).map_err(Error::State)?);
        }
        let (serial, i8042) = {
            let bus = crate::devices::lock(&self.bus);
            (bus.serial.state(), bus.i8042.state())
        };
        Ok(MachineState {
            vcpus,
            chips: ChipsState::save(&self.machine)?,
            serial,
            i8042,
            devices: self
                .registry
                .iter()
                .map(|(identity, t)| VirtioState {
                    identity: identity.clone(),
                    transport: crate::devices::lock(t).state(),
                })
                .collect(),
        })
    }
}
