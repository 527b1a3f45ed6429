//! A hostile migration stream read the way the destination reads it,
//! pages placed straight into a small guest memory, for the fuzz target
//! (fuzz/fuzz_targets/migration_stream.rs) and the replay test
//! (tests/stream_fuzz.rs).
//!
//! Every record carries a checksum, so bytes from a fuzzer rarely get
//! past the first one. The first input byte can ask for the records'
//! checksums to be made right (bit 0) and for each page's own sum to be
//! made right too (bit 1), so that what comes after them is reached: the
//! lengths, addresses and kinds the checksums would otherwise guard.

use crate::state::stream::{record_crc, Reader, Record, PAGE_AND_SUM};

/// Guest memory of the harness.
pub const MEM_SIZE: usize = 0x10000;
const PAGE: usize = 4096;

/// Reads `data` (a mode byte, then a stream) to its end or its first
/// error. Panics only where the reader broke its word: a page placed
/// outside memory, or a torn page outside its record.
pub fn read(data: &[u8]) {
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    let mut stream = stream.to_vec();
    if mode & 1 != 0 {
        seal(&mut stream, mode & 2 != 0);
    }
    let mut mem = vec![0u8; MEM_SIZE];
    let base = mem.as_mut_ptr();
    let Ok(mut r) = Reader::new(&stream[..]) else {
        return;
    };
    loop {
        let rec = r.next_record_into(&mut |gpa, len| {
            let end = gpa
                .checked_add(len as u64)
                .filter(|&e| e <= MEM_SIZE as u64);
            if end.is_none() {
                return Err(crate::Error::Stream("outside memory".into()));
            }
            // SAFETY: `[gpa, gpa + len)` lies in `mem` (checked above),
            // which outlives the reader; one slice lives at a time.
            Ok(Some(unsafe {
                std::slice::from_raw_parts_mut(base.add(gpa as usize), len)
            }))
        });
        match rec {
            Ok(Record::PagesTorn { gpa, len, torn }) => {
                assert!(!torn.is_empty(), "a torn record with no torn page");
                for t in torn {
                    assert!(
                        t >= gpa && t + PAGE as u64 <= gpa + len,
                        "torn page {t:#x} outside its record"
                    );
                    assert_eq!(t % PAGE as u64, 0);
                }
            }
            Ok(Record::PagesPlaced { gpa, len }) => {
                assert!(gpa + len <= MEM_SIZE as u64 && len > 0);
            }
            Ok(Record::Pages { .. }) => panic!("a placed page record read into a vector"),
            Ok(Record::End(_) | Record::Commit) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Makes each record's checksum right (and with `sums`, each page's).
fn seal(s: &mut [u8], sums: bool) {
    let mut at = 16;
    while at + 16 <= s.len() {
        let mut head: [u8; 16] = s[at..at + 16].try_into().expect("16 bytes");
        let kind = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes"));
        let len = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
        let Some(end) = usize::try_from(len)
            .ok()
            .and_then(|l| (at + 16).checked_add(l))
            .filter(|&e| e <= s.len())
        else {
            return;
        };
        let payload = at + 16..end;
        let covered = if kind == 2 && len >= 8 {
            let pages = ((len - 8) / PAGE_AND_SUM) as usize;
            let data = at + 16 + 8 + 4 * pages;
            if sums {
                for p in 0..pages {
                    let page = data + p * PAGE;
                    if page + PAGE <= end {
                        let sum = crc32fast::hash(&s[page..page + PAGE]).to_le_bytes();
                        let slot = at + 16 + 8 + 4 * p;
                        s[slot..slot + 4].copy_from_slice(&sum);
                    }
                }
            }
            at + 16..data.min(end)
        } else {
            payload
        };
        let crc = record_crc(&head, &[&s[covered]]);
        head[4..8].copy_from_slice(&crc.to_le_bytes());
        s[at..at + 16].copy_from_slice(&head);
        at = end;
    }
}
