//! Where things go in guest physical memory (x86-64, no firmware).

/// The GDT and IDT the vCPUs start with.
pub const GDT_ADDR: u64 = 0x500;
pub const IDT_ADDR: u64 = 0x520;
/// PVH start info, then its memory map.
pub const PVH_INFO_ADDR: u64 = 0x6000;
pub const PVH_MEMMAP_ADDR: u64 = 0x6040;
/// Linux zero page (boot_params).
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Identity page tables for the 64-bit entry: PML4, PDPT, one PD.
pub const PML4_ADDR: u64 = 0x9000;
pub const PDPT_ADDR: u64 = 0xa000;
pub const PD_ADDR: u64 = 0xb000;
/// Kernel command line, up to its maximum size.
pub const CMDLINE_ADDR: u64 = 0x20000;
pub const CMDLINE_MAX: usize = 0x10000;
/// Top of the low RAM the e820 map reports; the MP table sits just below it.
pub const EBDA_START: u64 = 0x9fc00;
pub const MPTABLE_ADDR: u64 = EBDA_START;
/// Kernels load from 1 MiB up.
pub const HIMEM_START: u64 = 0x10_0000;
/// The 32-bit MMIO hole below 4 GiB (virtio-mmio devices, IOAPIC, LAPIC).
pub const MMIO_HOLE_START: u64 = 3 << 30;
pub const MMIO_HOLE_END: u64 = 4 << 30;
/// virtio-mmio windows, one page each, from here up.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// Their interrupt lines: IOAPIC pins 5..=23 (below are the ISA devices').
pub const VIRTIO_IRQ_FIRST: u32 = 5;
pub const VIRTIO_IRQ_LAST: u32 = 23;
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// KVM needs three pages for the TSS on Intel, below 4 GiB, outside RAM.
pub const KVM_TSS_ADDR: usize = 0xfffb_d000;

/// Guest RAM ranges for `size` bytes: below the MMIO hole, then above 4 GiB.
pub fn ram_ranges(size: u64) -> Vec<(u64, u64)> {
    if size <= MMIO_HOLE_START {
        vec![(0, size)]
    } else {
        vec![
            (0, MMIO_HOLE_START),
            (MMIO_HOLE_END, size - MMIO_HOLE_START),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_skips_the_mmio_hole() {
        assert_eq!(ram_ranges(64 << 20), [(0, 64 << 20)]);
        assert_eq!(ram_ranges(3 << 30), [(0, 3 << 30)]);
        assert_eq!(ram_ranges(5 << 30), [(0, 3 << 30), (4 << 30, 2 << 30)]);
    }
}
