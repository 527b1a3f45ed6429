#![no_main]
//! A hostile guest's virtio-blk queue: ring places, descriptor chains and
//! request headers from the fuzzer, served by the real device.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vmm::fuzzing::run(data);
});
