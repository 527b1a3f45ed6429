//! The Intel MultiProcessor table (spec 1.4): how a guest without ACPI
//! finds its CPUs, the IOAPIC and the ISA interrupt routing.

use vm_memory::{Bytes, GuestAddress};

use crate::layout::{IOAPIC_ADDR, LAPIC_ADDR};
use crate::memory::GuestMemory;
use crate::{Error, Result};

const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BSP: u8 = 2;
/// Family 6, with FPU and APIC in the feature flags.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = 0x201;
const IRQS: u8 = 24;

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)))
}

/// Builds the floating pointer and configuration table for `cpus` CPUs, to
/// live at `addr`.
pub fn build(cpus: u8, addr: u64) -> Vec<u8> {
    let ioapic_id = cpus;
    let mut entries = Vec::new();
    let mut count = 0u16;
    for id in 0..cpus {
        let mut e = vec![
            0u8,
            id,
            APIC_VERSION,
            CPU_ENABLED | if id == 0 { CPU_BSP } else { 0 },
        ];
        e.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        e.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        e.extend_from_slice(&[0; 8]);
        entries.extend(e);
        count += 1;
    }
    entries.extend([1u8, 0, b'I', b'S', b'A', b' ', b' ', b' ']);
    count += 1;
    entries.extend([2u8, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    count += 1;
    for irq in 0..IRQS {
        // I/O interrupt: INT, conforming polarity and trigger, ISA bus.
        entries.extend([3u8, 0, 0, 0, 0, irq, ioapic_id, irq]);
        count += 1;
    }
    // Local interrupts: the PIC on LINT0 (ExtINT), NMI on LINT1.
    entries.extend([4u8, 3, 0, 0, 0, 0, 0xff, 0]);
    entries.extend([4u8, 1, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let table_addr = addr + 16;
    let mut header = Vec::with_capacity(44);
    header.extend_from_slice(b"PCMP");
    header.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    header.push(4); // spec revision 1.4
    header.push(0); // checksum, below
    header.extend_from_slice(b"VMTOOLS ");
    header.extend_from_slice(b"vmtools-vm  ");
    header.extend_from_slice(&0u32.to_le_bytes()); // OEM table
    header.extend_from_slice(&0u16.to_le_bytes());
    header.extend_from_slice(&count.to_le_bytes());
    header.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    header.extend_from_slice(&[0, 0, 0, 0]); // extended table length, checksum, reserved
    let mut table = header;
    table.extend(entries);
    table[7] = checksum(&table);

    let mut fp = Vec::with_capacity(16);
    fp.extend_from_slice(b"_MP_");
    fp.extend_from_slice(&(table_addr as u32).to_le_bytes());
    fp.push(1); // length in 16-byte units
    fp.push(4);
    fp.push(0); // checksum, below
    fp.extend_from_slice(&[0; 5]);
    fp[10] = checksum(&fp);
    fp.extend(table);
    fp
}

pub fn write(mem: &GuestMemory, cpus: u8, addr: u64) -> Result<()> {
    mem.write_slice(&build(cpus, addr), GuestAddress(addr))
        .map_err(|e| Error::Boot(format!("MP table: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_and_counts_follow_the_spec() {
        for cpus in [1u8, 2, 16] {
            let t = build(cpus, 0x9fc00);
            let sum = |b: &[u8]| b.iter().fold(0u8, |a, &x| a.wrapping_add(x));
            assert_eq!(&t[..4], b"_MP_");
            assert_eq!(sum(&t[..16]), 0, "floating pointer checksum");
            assert_eq!(u32::from_le_bytes(t[4..8].try_into().unwrap()), 0x9fc10);
            let table = &t[16..];
            assert_eq!(&table[..4], b"PCMP");
            let len = u16::from_le_bytes([table[4], table[5]]) as usize;
            assert_eq!(len, table.len());
            assert_eq!(sum(table), 0, "table checksum");
            let count = u16::from_le_bytes([table[34], table[35]]);
            assert_eq!(count, u16::from(cpus) + 2 + 24 + 2);
            // The first processor entry is the enabled BSP, the others not BSP.
            assert_eq!(&table[44..48], &[0, 0, 0x14, 3]);
            if cpus > 1 {
                assert_eq!(&table[64..68], &[0, 1, 0x14, 1]);
            }
        }
    }
}
