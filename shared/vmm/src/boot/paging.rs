//! Identity-mapped page tables for the 64-bit entry: the first 1 GiB in
//! 2 MiB pages, as a Linux 64-bit boot expects.

use vm_memory::{Bytes, GuestAddress};

use crate::layout::{PDPT_ADDR, PD_ADDR, PML4_ADDR};
use crate::memory::GuestMemory;
use crate::{Error, Result};

/// Present | writable.
const PRESENT_RW: u64 = 0x3;
/// Present | writable | 2 MiB page.
const LARGE_PAGE: u64 = 0x83;

pub fn write(mem: &GuestMemory) -> Result<u64> {
    let w = |v: u64, at: u64| {
        mem.write_obj(v, GuestAddress(at))
            .map_err(|e| Error::Boot(format!("page tables: {e}")))
    };
    w(PDPT_ADDR | PRESENT_RW, PML4_ADDR)?;
    w(PD_ADDR | PRESENT_RW, PDPT_ADDR)?;
    for i in 0..512u64 {
        w((i << 21) | LARGE_PAGE, PD_ADDR + i * 8)?;
    }
    Ok(PML4_ADDR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_maps_the_first_gib() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        assert_eq!(write(&mem).unwrap(), PML4_ADDR);
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_ADDR)).unwrap();
        assert_eq!(pml4, PDPT_ADDR | 3);
        let pd5: u64 = mem.read_obj(GuestAddress(PD_ADDR + 5 * 8)).unwrap();
        assert_eq!(pd5, (5 << 21) | 0x83);
    }
}
