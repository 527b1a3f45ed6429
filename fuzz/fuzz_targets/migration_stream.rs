#![no_main]
//! A hostile source's migration stream, read as the destination reads
//! it, with pages placed straight into guest memory.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vmm::fuzzing::stream::read(data);
});
