#![no_main]
//! Open, map, read and check arbitrary bytes as a qcow2 image.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vm_image::fuzzing::open_and_read(data);
});
