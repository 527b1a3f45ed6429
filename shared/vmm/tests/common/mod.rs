//! What the machine tests share: a VM config for the test guest.

use std::path::PathBuf;

use vmm::boot::BootConfig;
use vmm::VmConfig;

/// The test guest with `cmdline` on `vcpus` vCPUs and 64 MiB, nothing else.
pub fn config(name: &str, cmdline: &str, vcpus: u8) -> VmConfig {
    VmConfig {
        name: name.into(),
        vcpus,
        threads_per_core: 1,
        cores_per_socket: vcpus,
        memory: 64 << 20,
        boot: BootConfig {
            kernel: PathBuf::from(test_guest::GUEST_ELF),
            initrd: None,
            cmdline: cmdline.into(),
            vcpus,
            ..BootConfig::default()
        },
        drop_capabilities: false,
        numa: None,
        hugepages: None,
        disks: Vec::new(),
        nets: Vec::new(),
        rng: false,
        iothreads: 0,
        thread_hook: None,
    }
}
