//! Initial vCPU state: CPUID with the spec's topology, registers and
//! segments for the boot entry, LAPIC wiring for the legacy PIC.

use kvm_bindings::{kvm_fpu, kvm_regs, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd};
use vm_memory::{Bytes, GuestAddress};

use crate::boot::{gdt, paging, Entry};
use crate::layout::{GDT_ADDR, IDT_ADDR};
use crate::memory::GuestMemory;
use crate::{Error, Result};

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Host-supported CPUID, adjusted once for the VM's topology; each vCPU
/// then gets its own APIC id.
pub fn base_cpuid(kvm: &Kvm) -> Result<CpuId> {
    kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(Error::kvm("KVM_GET_SUPPORTED_CPUID"))
}

/// CPUID for vCPU `id` of `count`, with `threads` per core and `cores`
/// per socket.
pub fn vcpu_cpuid(base: &CpuId, id: u8, count: u8, threads: u8, cores: u8) -> CpuId {
    let mut c = base.clone();
    let per_socket = u32::from(threads) * u32::from(cores);
    for e in c.as_mut_slice() {
        match e.function {
            1 => {
                // Initial APIC id, logical processors per package, HTT,
                // hypervisor present.
                e.ebx = (e.ebx & 0x0000_ffff) | (u32::from(id) << 24) | (per_socket.min(255) << 16);
                e.edx |= 1 << 28;
                e.ecx |= 1 << 31;
            }
            4 => {
                // Cores per package - 1 in bits 31..26.
                e.eax = (e.eax & 0x03ff_ffff) | ((u32::from(cores).saturating_sub(1)) << 26);
            }
            0xb => {
                // Extended topology: level 0 = SMT, level 1 = core.
                let thread_bits = u32::from(threads).next_power_of_two().trailing_zeros();
                let core_bits = thread_bits + u32::from(cores).next_power_of_two().trailing_zeros();
                match e.index {
                    0 => {
                        e.eax = thread_bits;
                        e.ebx = u32::from(threads);
                        e.ecx = 1 << 8;
                    }
                    1 => {
                        e.eax = core_bits;
                        e.ebx = per_socket;
                        e.ecx = (2 << 8) | 1;
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = e.index;
                    }
                }
                e.edx = u32::from(id);
            }
            _ => {}
        }
    }
    let _ = count;
    c
}

/// Registers, segments and FPU for the boot vCPU.
pub fn setup_boot_vcpu(vcpu: &VcpuFd, mem: &GuestMemory, entry: Entry) -> Result<()> {
    let long = matches!(entry, Entry::Linux64 { .. });
    let table = gdt::table(long);
    for (i, e) in table.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(GDT_ADDR + i as u64 * 8))
            .map_err(|e| Error::Boot(format!("GDT: {e}")))?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR))
        .map_err(|e| Error::Boot(format!("IDT: {e}")))?;
    let mut sregs = vcpu.get_sregs().map_err(Error::kvm("KVM_GET_SREGS"))?;
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (table.len() * 8 - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    let code = gdt::segment(table[1], 1);
    let data = gdt::segment(table[2], 2);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = gdt::segment(table[3], 3);
    sregs.cr0 = CR0_PE | CR0_ET;
    sregs.cr4 = 0;
    let mut regs = kvm_regs {
        rflags: 0x2,
        ..kvm_regs::default()
    };
    match entry {
        Entry::Pvh { rip, start_info } => {
            regs.rip = rip;
            regs.rbx = start_info;
        }
        Entry::Linux64 { rip, zero_page } => {
            sregs.cr3 = paging::write(mem)?;
            sregs.cr4 |= CR4_PAE;
            sregs.cr0 |= CR0_PG;
            sregs.efer |= EFER_LME | EFER_LMA;
            regs.rip = rip;
            regs.rsi = zero_page;
            regs.rsp = crate::layout::HIMEM_START - 0x10;
            regs.rbp = regs.rsp;
        }
    }
    vcpu.set_sregs(&sregs)
        .map_err(Error::kvm("KVM_SET_SREGS"))?;
    vcpu.set_regs(&regs).map_err(Error::kvm("KVM_SET_REGS"))?;
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..kvm_fpu::default()
    };
    vcpu.set_fpu(&fpu).map_err(Error::kvm("KVM_SET_FPU"))?;
    Ok(())
}

/// LINT0 = ExtINT (the 8259 reaches the CPU in virtual-wire mode), LINT1 =
/// NMI, as firmware would leave them.
pub fn set_lint(vcpu: &VcpuFd) -> Result<()> {
    const LVT0: usize = 0x350;
    const LVT1: usize = 0x360;
    const EXTINT: u32 = 0x7;
    const NMI: u32 = 0x4;
    let mut lapic = vcpu.get_lapic().map_err(Error::kvm("KVM_GET_LAPIC"))?;
    let get = |regs: &[std::os::raw::c_char], at: usize| -> u32 {
        let b: [u8; 4] = std::array::from_fn(|i| regs[at + i] as u8);
        u32::from_le_bytes(b)
    };
    let set = |regs: &mut [std::os::raw::c_char], at: usize, v: u32| {
        for (i, b) in v.to_le_bytes().iter().enumerate() {
            regs[at + i] = *b as std::os::raw::c_char;
        }
    };
    let delivery = |v: u32, mode: u32| (v & !0x700) | (mode << 8);
    let v0 = get(&lapic.regs, LVT0);
    set(&mut lapic.regs, LVT0, delivery(v0, EXTINT));
    let v1 = get(&lapic.regs, LVT1);
    set(&mut lapic.regs, LVT1, delivery(v1, NMI));
    vcpu.set_lapic(&lapic).map_err(Error::kvm("KVM_SET_LAPIC"))
}

/// The CPU features a guest was given (`leaves`, as a migration's hello
/// carries them) that this host's KVM cannot give: one line each, as
/// "leaf 0x7 ebx bit 5". Only feature words are compared: leaf 1 ECX and
/// EDX (less the bits vm-run sets itself, HTT and the hypervisor bit,
/// and OSXSAVE, which follows the guest's CR4), leaf 7 subleaf 0 EBX, ECX
/// (less OSPKE, which follows CR4 too) and EDX, and leaf 0x80000001 ECX
/// and EDX.
pub fn missing_features(leaves: &[crate::state::stream::CpuidLeaf]) -> Result<Vec<String>> {
    let kvm = Kvm::new().map_err(Error::Kvm)?;
    // What a vCPU here ends up with, read back from one: some hosts (a
    // nested KVM among them) report fewer features as supported than
    // their vCPUs then have, and the guest's CPUID was read back too.
    let vm = crate::vm::create_vm(&kvm)?;
    let probe = vm.create_vcpu(0).map_err(Error::kvm("KVM_CREATE_VCPU"))?;
    probe
        .set_cpuid2(&base_cpuid(&kvm)?)
        .map_err(Error::kvm("KVM_SET_CPUID2"))?;
    let host = probe
        .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
        .map_err(Error::kvm("KVM_GET_CPUID2"))?;
    let find = |f: u32, i: u32| {
        host.as_slice()
            .iter()
            .find(|e| e.function == f && (e.index == i || f != 7))
            .copied()
    };
    let mut out = Vec::new();
    for g in leaves {
        let h = find(g.function, g.index).unwrap_or_default();
        let checked: Vec<(&str, u32, u32)> = match (g.function, g.index) {
            (1, _) => vec![
                ("ecx", g.ecx & !(1 << 31 | 1 << 27), h.ecx),
                ("edx", g.edx & !(1 << 28), h.edx),
            ],
            (7, 0) => vec![
                ("ebx", g.ebx, h.ebx),
                ("ecx", g.ecx & !(1 << 4), h.ecx),
                ("edx", g.edx, h.edx),
            ],
            (0x8000_0001, _) => vec![("ecx", g.ecx, h.ecx), ("edx", g.edx, h.edx)],
            _ => Vec::new(),
        };
        for (reg, want, have) in checked {
            let missing = want & !have;
            for bit in (0..32).filter(|b| missing & (1 << b) != 0) {
                out.push(format!("leaf {:#x} {reg} bit {bit}", g.function));
            }
        }
    }
    Ok(out)
}
