#![no_main]
//! A hostile guest's virtio-net queue: which queue, ring places,
//! descriptor chains and frames waiting on the tap from the fuzzer,
//! served by the real device.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vmm::fuzzing::net::run(data);
});
