//! ACPI tables for stock kernels: distribution kernels find virtio-mmio
//! devices only through ACPI (they are built without
//! `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`), and power off through it.
//!
//! A hardware-reduced machine, as QEMU's microvm with ACPI on: RSDP (in
//! the BIOS area, where Linux also scans for it, and handed over in the
//! boot structures), XSDT, FADT (sleep control and status registers and a
//! reset register on our own ports, 8042 present), MADT (a local APIC per
//! vCPU and the IOAPIC) and a DSDT with `_S5_`, the 16550 and each
//! virtio-mmio device (`LNRO0005`). Built with rust-vmm's `acpi_tables`.

use acpi_tables::aml;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress};

use crate::layout::{IOAPIC_ADDR, LAPIC_ADDR};
use crate::memory::GuestMemory;
use crate::{Error, Result};

/// Where the tables go: the RSDP first (16-byte aligned, inside the
/// 0xe0000-0xfffff range Linux scans), the other tables after it. The e820
/// map reports this area reserved.
pub const RSDP_ADDR: u64 = 0x000e_0000;
const TABLES_END: u64 = 0x0010_0000;

/// The sleep control register (write SLP_TYP << 2 | SLP_EN to sleep; `_S5_`
/// is type 5), the sleep status register and the reset register.
pub const SLEEP_CONTROL_PORT: u16 = 0x600;
pub const SLEEP_STATUS_PORT: u16 = 0x601;
pub const RESET_PORT: u16 = 0x604;
pub const RESET_VALUE: u8 = 1;
/// `_S5_`'s sleep type, and the enable bit of the sleep control register.
pub const S5_TYPE: u8 = 5;
pub const SLP_EN: u8 = 1 << 5;

const OEM_ID: [u8; 6] = *b"VMTOOL";
const OEM_TABLE: [u8; 8] = *b"VMTOOLS ";

/// A virtio-mmio device as the DSDT describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioDevice {
    pub base: u64,
    pub len: u32,
    pub gsi: u32,
}

/// The generic event device's interrupt (ISA IRQ 3, free here): raised,
/// its `_EVT` notifies the power button (`vm-run shutdown`'s press).
pub const GED_GSI: u32 = 3;

/// A guest NUMA node: proximity domain N is the Nth node given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaNode {
    /// vCPU numbers (APIC ids) in the node.
    pub cpus: Vec<u8>,
    /// Bytes of guest RAM, taken in address order after the nodes before.
    pub memory: u64,
    /// SLIT row: the distance to every node, this one included.
    pub distances: Vec<u8>,
}

/// The serial port the DSDT describes (COM1).
const COM1_PORT: u16 = 0x3f8;
const COM1_IRQ: u32 = 4;

fn bytes(t: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    t.to_aml_bytes(&mut v);
    v
}

/// The DSDT's AML.
pub fn dsdt(devices: &[MmioDevice]) -> Vec<u8> {
    let mut table = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE, 1);
    let s5 = aml::Package::new(vec![&S5_TYPE]);
    table.append_slice(&bytes(&aml::Name::new("_S5_".into(), &s5)));
    let com_io = aml::IO::new(COM1_PORT, COM1_PORT, 1, 8);
    let com_irq = aml::Interrupt::new(true, true, false, false, COM1_IRQ);
    let com_crs = aml::ResourceTemplate::new(vec![&com_io, &com_irq]);
    let com_hid = aml::EISAName::new("PNP0501");
    let com_fields = [
        aml::Name::new("_HID".into(), &com_hid),
        aml::Name::new("_UID".into(), &aml::ZERO),
        aml::Name::new("_CRS".into(), &com_crs),
    ];
    let com = aml::Device::new(
        "_SB_.COM1".into(),
        com_fields.iter().map(|n| n as &dyn Aml).collect(),
    );
    table.append_slice(&bytes(&com));
    // The power button, pressed through a generic event device: Linux's
    // button driver turns the notification into KEY_POWER for acpid.
    let pwrb_hid = aml::EISAName::new("PNP0C0C");
    let pwrb_fields = [
        aml::Name::new("_HID".into(), &pwrb_hid),
        aml::Name::new("_UID".into(), &aml::ZERO),
    ];
    let pwrb = aml::Device::new(
        "_SB_.PWRB".into(),
        pwrb_fields.iter().map(|n| n as &dyn Aml).collect(),
    );
    table.append_slice(&bytes(&pwrb));
    let ged_hid: &'static str = "ACPI0013";
    let ged_irq = aml::Interrupt::new(true, true, false, false, GED_GSI);
    let ged_crs = aml::ResourceTemplate::new(vec![&ged_irq]);
    let pwrb_path = aml::Path::new("\\_SB_.PWRB");
    let notify_value: u8 = 0x80;
    let notify = aml::Notify::new(&pwrb_path, &notify_value);
    let evt = aml::Method::new("_EVT".into(), 1, true, vec![&notify]);
    let ged_name_hid = aml::Name::new("_HID".into(), &ged_hid);
    let ged_name_uid = aml::Name::new("_UID".into(), &aml::ZERO);
    let ged_name_crs = aml::Name::new("_CRS".into(), &ged_crs);
    let ged = aml::Device::new(
        "_SB_.GED_".into(),
        vec![&ged_name_hid, &ged_name_uid, &ged_name_crs, &evt],
    );
    table.append_slice(&bytes(&ged));
    for (i, d) in devices.iter().enumerate() {
        // Our windows sit below 4 GiB; Memory32Fixed takes a 32-bit base.
        let base = u32::try_from(d.base).expect("virtio-mmio windows are below 4 GiB");
        let mem = aml::Memory32Fixed::new(true, base, d.len);
        let irq = aml::Interrupt::new(true, true, false, false, d.gsi);
        let crs = aml::ResourceTemplate::new(vec![&mem, &irq]);
        let uid = i as u32;
        let hid: &'static str = "LNRO0005";
        let fields = [
            aml::Name::new("_HID".into(), &hid),
            aml::Name::new("_UID".into(), &uid),
            aml::Name::new("_CCA".into(), &aml::ONE),
            aml::Name::new("_CRS".into(), &crs),
        ];
        let name = format!("_SB_.V{i:03X}");
        let dev = aml::Device::new(
            name.as_str().into(),
            fields.iter().map(|n| n as &dyn Aml).collect(),
        );
        table.append_slice(&bytes(&dev));
    }
    table.update_checksum();
    table.as_slice().to_vec()
}

fn io_register(port: u16) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(port),
    )
}

/// The FADT of a hardware-reduced machine with our sleep and reset
/// registers, pointing at the DSDT at `dsdt_addr`.
pub fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let mut f = FADTBuilder::new(OEM_ID, OEM_TABLE, 1)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        .dsdt_64(dsdt_addr);
    // IAPC_BOOT_ARCH: an 8042 is there (without the bit Linux decides
    // there is none and Ctrl-Alt-Del stops working), no VGA, no MSI.
    f.iapc_boot_arch = (0x2u16 | 0x4 | 0x8).into();
    f.reset_reg = io_register(RESET_PORT);
    f.reset_value = RESET_VALUE;
    f.sleep_control_reg = io_register(SLEEP_CONTROL_PORT);
    f.sleep_status_reg = io_register(SLEEP_STATUS_PORT);
    bytes(&f.finalize())
}

/// A local APIC per vCPU and the IOAPIC.
pub fn madt(vcpus: u8) -> Vec<u8> {
    let mut m = MADT::new(
        OEM_ID,
        OEM_TABLE,
        1,
        LocalInterruptController::Address(LAPIC_ADDR),
    );
    for i in 0..vcpus {
        m.add_structure(ProcessorLocalApic::new(i, i, EnabledStatus::Enabled));
    }
    m.add_structure(IoApic::new(0, IOAPIC_ADDR, 0));
    bytes(&m)
}

/// The SRAT: each vCPU's local APIC and each node's share of guest RAM
/// (in address order, split around the MMIO hole) with its domain.
/// acpi_tables has no x86 processor-affinity entry, so the entries are
/// written here, as the ACPI spec (5.2.16) lays them out.
pub fn srat(nodes: &[NumaNode], mem_size: u64) -> Vec<u8> {
    let mut t = Sdt::new(*b"SRAT", 36, 3, OEM_ID, OEM_TABLE, 1);
    // Reserved (1 for compatibility), then 8 reserved bytes.
    t.append_slice(&1u32.to_le_bytes());
    t.append_slice(&[0u8; 8]);
    for (domain, n) in nodes.iter().enumerate() {
        let d = domain as u32;
        for &apic in &n.cpus {
            // Type 0, length 16: domain bits 7:0, APIC id, flags (enabled),
            // SAPIC EID, domain bits 31:8, clock domain.
            let mut e = vec![0u8, 16, d as u8, apic];
            e.extend_from_slice(&1u32.to_le_bytes());
            e.push(0);
            e.extend_from_slice(&d.to_le_bytes()[1..4]);
            e.extend_from_slice(&0u32.to_le_bytes());
            t.append_slice(&e);
        }
    }
    let ranges = crate::layout::ram_ranges(mem_size);
    let (mut r, mut used) = (0usize, 0u64);
    for (domain, n) in nodes.iter().enumerate() {
        let mut left = n.memory;
        while left > 0 && r < ranges.len() {
            let (base, len) = ranges[r];
            let take = left.min(len - used);
            // Type 1, length 40: domain, reserved, base, length, reserved,
            // flags (enabled), reserved.
            let mut e = vec![1u8, 40];
            e.extend_from_slice(&(domain as u32).to_le_bytes());
            e.extend_from_slice(&[0u8; 2]);
            e.extend_from_slice(&(base + used).to_le_bytes());
            e.extend_from_slice(&take.to_le_bytes());
            e.extend_from_slice(&[0u8; 4]);
            e.extend_from_slice(&1u32.to_le_bytes());
            e.extend_from_slice(&[0u8; 8]);
            t.append_slice(&e);
            left -= take;
            used += take;
            if used == len {
                (r, used) = (r + 1, 0);
            }
        }
    }
    t.update_checksum();
    t.as_slice().to_vec()
}

/// The SLIT: the distance matrix of the nodes.
pub fn slit(nodes: &[NumaNode]) -> Vec<u8> {
    let mut t = Sdt::new(*b"SLIT", 36, 1, OEM_ID, OEM_TABLE, 1);
    t.append_slice(&(nodes.len() as u64).to_le_bytes());
    for n in nodes {
        t.append_slice(&n.distances);
    }
    t.update_checksum();
    t.as_slice().to_vec()
}

/// Writes every table into guest memory; returns the RSDP's address.
pub fn write(
    mem: &GuestMemory,
    vcpus: u8,
    devices: &[MmioDevice],
    nodes: &[NumaNode],
    mem_size: u64,
) -> Result<u64> {
    let err = |what: &str| Error::Boot(format!("ACPI tables: {what}"));
    let mut at = RSDP_ADDR + Rsdp::len() as u64;
    let mut place = |data: &[u8]| -> Result<u64> {
        at = at.next_multiple_of(8);
        let addr = at;
        if addr + data.len() as u64 > TABLES_END {
            return Err(err("they do not fit below 1 MiB"));
        }
        mem.write_slice(data, GuestAddress(addr))
            .map_err(|e| err(&e.to_string()))?;
        at += data.len() as u64;
        Ok(addr)
    };
    let dsdt_addr = place(&dsdt(devices))?;
    let fadt_addr = place(&fadt(dsdt_addr))?;
    let madt_addr = place(&madt(vcpus))?;
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE, 1);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    if !nodes.is_empty() {
        xsdt.add_entry(place(&srat(nodes, mem_size))?);
        xsdt.add_entry(place(&slit(nodes))?);
    }
    let xsdt_addr = place(&bytes(&xsdt))?;
    mem.write_slice(
        &bytes(&Rsdp::new(OEM_ID, xsdt_addr)),
        GuestAddress(RSDP_ADDR),
    )
    .map_err(|e| err(&e.to_string()))?;
    Ok(RSDP_ADDR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    fn check_sdt(t: &[u8], sig: [u8; 4]) {
        assert_eq!(t[..4], sig);
        let len = u32::from_le_bytes(t[4..8].try_into().unwrap()) as usize;
        assert_eq!(len, t.len(), "{sig:?}: length field");
        assert_eq!(sum(t), 0, "{sig:?}: checksum");
    }

    #[test]
    fn tables_have_their_lengths_and_checksums() {
        let devs = [
            MmioDevice {
                base: 0xd000_0000,
                len: 0x1000,
                gsi: 5,
            },
            MmioDevice {
                base: 0xd000_1000,
                len: 0x1000,
                gsi: 6,
            },
        ];
        let d = dsdt(&devs);
        check_sdt(&d, *b"DSDT");
        for needle in [
            &b"_S5_"[..],
            b"LNRO0005",
            b"V000",
            b"V001",
            b"COM1",
            b"ACPI0013",
            b"PWRB",
            b"_EVT",
        ] {
            assert!(d.windows(needle.len()).any(|w| w == needle), "{needle:?}");
        }
        let f = fadt(0x1234);
        check_sdt(&f, *b"FACP");
        // Flags at 112: hardware-reduced and the reset register.
        let flags = u32::from_le_bytes(f[112..116].try_into().unwrap());
        assert_ne!(flags & (1 << 20), 0);
        assert_ne!(flags & (1 << 10), 0);
        // X_DSDT at 140.
        assert_eq!(u64::from_le_bytes(f[140..148].try_into().unwrap()), 0x1234);
        let m = madt(3);
        check_sdt(&m, *b"APIC");
        // 44-byte header, 3 local APICs of 8 bytes, one IOAPIC of 12.
        assert_eq!(m.len(), 44 + 3 * 8 + 12);
    }

    #[test]
    fn srat_and_slit_describe_the_nodes() {
        let nodes = [
            NumaNode {
                cpus: vec![0],
                memory: 2 << 30,
                distances: vec![10, 21],
            },
            NumaNode {
                cpus: vec![1, 2],
                memory: 2 << 30,
                distances: vec![21, 10],
            },
        ];
        let s = srat(&nodes, 4 << 30);
        check_sdt(&s, *b"SRAT");
        // 48-byte header, 3 processor entries of 16, and node 1's memory
        // split around the MMIO hole: 3 memory entries of 40.
        assert_eq!(s.len(), 48 + 3 * 16 + 3 * 40);
        let mem_entry = |i: usize| {
            let e = &s[48 + 48 + i * 40..][..40];
            (
                u32::from_le_bytes(e[2..6].try_into().unwrap()),
                u64::from_le_bytes(e[8..16].try_into().unwrap()),
                u64::from_le_bytes(e[16..24].try_into().unwrap()),
            )
        };
        assert_eq!(mem_entry(0), (0, 0, 2 << 30));
        assert_eq!(mem_entry(1), (1, 2 << 30, 1 << 30));
        assert_eq!(mem_entry(2), (1, 4 << 30, 1 << 30));
        let l = slit(&nodes);
        check_sdt(&l, *b"SLIT");
        assert_eq!(&l[36..], &[2, 0, 0, 0, 0, 0, 0, 0, 10, 21, 21, 10]);
    }

    /// ACPICA's disassembler reads every table without an error.
    #[test]
    fn iasl_disassembles_the_tables() {
        let ok = std::process::Command::new("iasl")
            .arg("-v")
            .output()
            .is_ok();
        if !ok {
            eprintln!("SKIP: iasl (acpica-tools) is not installed");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let devs = [MmioDevice {
            base: 0xd000_0000,
            len: 0x1000,
            gsi: 5,
        }];
        let nodes = [
            NumaNode {
                cpus: vec![0],
                memory: 32 << 20,
                distances: vec![10, 20],
            },
            NumaNode {
                cpus: vec![1],
                memory: 32 << 20,
                distances: vec![20, 10],
            },
        ];
        for (name, t) in [
            ("dsdt", dsdt(&devs)),
            ("facp", fadt(0x1000)),
            ("apic", madt(2)),
            ("srat", srat(&nodes, 64 << 20)),
            ("slit", slit(&nodes)),
        ] {
            let p = d.path().join(format!("{name}.dat"));
            std::fs::write(&p, &t).unwrap();
            let out = std::process::Command::new("iasl")
                .arg("-d")
                .arg(&p)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{name}: {text}");
            let dsl = std::fs::read_to_string(d.path().join(format!("{name}.dsl"))).unwrap();
            if name == "dsdt" {
                for want in [
                    "LNRO0005",
                    "_S5_",
                    "PNP0501",
                    "0xD0000000",
                    "ACPI0013",
                    "PNP0C0C",
                    "Notify (\\_SB.PWRB, 0x80)",
                ] {
                    assert!(dsl.contains(want), "{want} in {dsl}");
                }
            }
        }
    }
}
