//! The GDT the vCPUs start with, and its entries as KVM segments.

use kvm_bindings::kvm_segment;

/// A GDT entry from flags (the 0xF0FF bits of the high word, as Linux's
/// GDT_ENTRY), base and limit.
pub const fn entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

fn base(e: u64) -> u64 {
    ((e & 0xff00_0000_0000_0000) >> 32)
        | ((e & 0x0000_00ff_0000_0000) >> 16)
        | ((e & 0x0000_0000_ffff_0000) >> 16)
}

fn limit(e: u64) -> u32 {
    (((e & 0x000f_0000_0000_0000) >> 32) | (e & 0x0000_0000_0000_ffff)) as u32
}

/// The KVM segment for GDT entry `e` at index `index`.
pub fn segment(e: u64, index: u8) -> kvm_segment {
    let bit = |n: u32| ((e >> n) & 1) as u8;
    let g = bit(55);
    let raw_limit = limit(e);
    kvm_segment {
        base: base(e),
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: u16::from(index) * 8,
        type_: ((e >> 40) & 0xf) as u8,
        present: bit(47),
        dpl: ((e >> 45) & 3) as u8,
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g,
        avl: bit(52),
        unusable: u8::from(bit(47) == 0),
        padding: 0,
    }
}

/// The boot GDT: null, code, data, TSS. `long` picks a 64-bit code segment.
pub fn table(long: bool) -> [u64; 4] {
    [
        0,
        entry(if long { 0xa09b } else { 0xc09b }, 0, 0xfffff),
        entry(0xc093, 0, 0xfffff),
        entry(0x808b, 0, 0xfffff),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_segments() {
        let t = table(false);
        let cs = segment(t[1], 1);
        assert_eq!((cs.base, cs.limit, cs.selector), (0, 0xffff_ffff, 8));
        assert_eq!(
            (cs.type_, cs.present, cs.db, cs.l, cs.g, cs.s),
            (0xb, 1, 1, 0, 1, 1)
        );
        let ds = segment(t[2], 2);
        assert_eq!((ds.type_, ds.selector, ds.db), (3, 0x10, 1));
        let long = segment(table(true)[1], 1);
        assert_eq!((long.l, long.db), (1, 0));
        let tss = segment(t[3], 3);
        assert_eq!((tss.type_, tss.s, tss.present), (0xb, 0, 1));
        assert_eq!(segment(0, 0).unusable, 1);
        let odd = entry(0xc093, 0x1234_5678, 0xabcde);
        assert_eq!(base(odd), 0x1234_5678);
        assert_eq!(limit(odd), 0xabcde);
    }
}
