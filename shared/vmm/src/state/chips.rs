//! The VM's in-kernel devices: both 8259 PICs, the IOAPIC, the PIT and
//! the KVM clock.

use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_pit_state2, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChipsState {
    pub pic_master: kvm_irqchip,
    pub pic_slave: kvm_irqchip,
    pub ioapic: kvm_irqchip,
    pub pit: kvm_pit_state2,
    pub clock: kvm_clock_data,
}

fn chip(vm: &VmFd, id: u32) -> Result<kvm_irqchip> {
    let mut c = kvm_irqchip {
        chip_id: id,
        ..kvm_irqchip::default()
    };
    vm.get_irqchip(&mut c)
        .map_err(Error::kvm("KVM_GET_IRQCHIP"))?;
    Ok(c)
}

impl ChipsState {
    /// Reads them with every vCPU stopped.
    pub fn save(vm: &VmFd) -> Result<Self> {
        Ok(Self {
            pic_master: chip(vm, KVM_IRQCHIP_PIC_MASTER)?,
            pic_slave: chip(vm, KVM_IRQCHIP_PIC_SLAVE)?,
            ioapic: chip(vm, KVM_IRQCHIP_IOAPIC)?,
            pit: vm.get_pit2().map_err(Error::kvm("KVM_GET_PIT2"))?,
            clock: vm.get_clock().map_err(Error::kvm("KVM_GET_CLOCK"))?,
        })
    }

    /// Writes them into a VM whose vCPUs have not run.
    pub fn restore(&self, vm: &VmFd) -> Result<()> {
        for (c, id) in [
            (&self.pic_master, KVM_IRQCHIP_PIC_MASTER),
            (&self.pic_slave, KVM_IRQCHIP_PIC_SLAVE),
            (&self.ioapic, KVM_IRQCHIP_IOAPIC),
        ] {
            if c.chip_id != id {
                return Err(Error::State(format!(
                    "irqchip {id} is saved as chip {}",
                    c.chip_id
                )));
            }
            vm.set_irqchip(c).map_err(Error::kvm("KVM_SET_IRQCHIP"))?;
        }
        vm.set_pit2(&self.pit).map_err(Error::kvm("KVM_SET_PIT2"))?;
        // The guest's clock goes on from where it stopped: no flags (with
        // KVM_CLOCK_REALTIME KVM would add the time the VM spent saved).
        let clock = kvm_clock_data {
            clock: self.clock.clock,
            ..kvm_clock_data::default()
        };
        vm.set_clock(&clock).map_err(Error::kvm("KVM_SET_CLOCK"))
    }
}
