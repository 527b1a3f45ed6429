//! The machine's state saved to a file and a new machine restored from
//! it, on the real /dev/kvm: the guest goes on from where it was.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vmm::boot::BootConfig;
use vmm::devices::SerialOut;
use vmm::state::file::{self, Saved};
use vmm::vcpu::VcpuEvent;
use vmm::{memory, Error, Restore, Vm, VmConfig};

use test_guest::{have_kvm, kvm_lock};

fn config(cmdline: &str, vcpus: u8) -> VmConfig {
    VmConfig {
        name: "save-test".into(),
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
        iothreads: 0,
        thread_hook: None,
    }
}

fn spec(cmdline: &str, vcpus: u8) -> vm_spec::VmSpec {
    let v = serde_json::json!({"name": "save-test", "vcpus": vcpus, "memory": "64MiB",
        "boot": {"kernel": test_guest::GUEST_ELF, "cmdline": cmdline}});
    vm_spec::VmSpec::from_json(&v.to_string()).unwrap()
}

fn wait_for(log: &Path, what: &str) -> String {
    let t0 = Instant::now();
    loop {
        let out = std::fs::read_to_string(log).unwrap();
        if out.contains(what) {
            return out;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no {what:?} in: {out}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `cmdline` until `ready` shows, pauses, saves into `path`, ends it.
fn run_and_save(cmdline: &str, vcpus: u8, ready: &str, log: &Path, path: &Path) -> String {
    let vm = Vm::start(
        &config(cmdline, vcpus),
        SerialOut::File(File::create(log).unwrap()),
    )
    .unwrap();
    wait_for(log, ready);
    vm.pause().unwrap();
    let before = std::fs::read_to_string(log).unwrap();
    let machine = vm.save_state().unwrap();
    let saved = Saved {
        spec: spec(cmdline, vcpus),
        machine,
    };
    let out = File::create(path).unwrap();
    let (mem, memfd) = vm.memory();
    let stats = file::write(&out, &saved, mem, memfd, true).unwrap();
    assert_eq!(stats.memory_bytes, 64 << 20);
    assert!(
        stats.written_bytes < stats.memory_bytes / 2,
        "zero pages are holes: {stats:?}"
    );
    vm.destroy();
    before
}

fn restore(path: &Path, cmdline: &str, vcpus: u8, log: &Path, paused: bool) -> Vm {
    let opened = file::open(File::open(path).unwrap()).unwrap();
    file::verify_memory(&opened).unwrap();
    let from = Restore {
        state: &opened.saved.machine,
        memory: memory::Saved {
            file: opened.file.try_clone().unwrap(),
            runs: opened.runs.clone(),
        },
        paused,
    };
    Vm::restore(
        &config(cmdline, vcpus),
        SerialOut::File(File::create(log).unwrap()),
        from,
    )
    .unwrap()
}

/// The numbers after `word` in the console, in order.
fn counts(out: &str, word: &str) -> Vec<u32> {
    out.lines()
        .filter_map(|l| l.strip_prefix(word))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect()
}

/// The console before the save followed by the one after reads as one
/// run (a line cut by the save is finished after it): counts go up one
/// by one from the first.
fn assert_goes_on(before: &str, after: &str, word: &str) {
    let all = format!("{before}{after}");
    let c = counts(&all, word);
    for w in c.windows(2) {
        assert_eq!(w[1], w[0] + 1, "{all}");
    }
}

/// A guest that rewrites and checks 4 MiB every round goes on with the
/// next round after a restore, with no memory error, on 1 and 2 vCPUs.
#[test]
fn a_restored_guest_goes_on_with_its_memory_intact() {
    if !have_kvm() {
        return;
    }
    let _lock = kvm_lock();
    let dir = tempfile::tempdir().unwrap();
    let (log, path) = (dir.path().join("a.log"), dir.path().join("vm.save"));
    for vcpus in [1, 2] {
        let before = run_and_save("mode=memcount pages=64", vcpus, "round 3 ok", &log, &path);
        let last = *counts(&before, "round ").last().unwrap();
        let log2 = dir.path().join("b.log");
        let vm = restore(&path, "mode=memcount pages=64", vcpus, &log2, false);
        let after = wait_for(&log2, &format!("round {} ok", last + 3));
        assert!(!after.contains("MEMORY ERROR"), "{after}");
        assert!(!after.contains("memcount"), "the guest did not boot again");
        assert_goes_on(&before, &after, "round ");
        vm.destroy();
    }
}

/// The timer (PIT, PIC, the guest's IDT) works after a restore; a restore
/// paused stays paused until resumed.
#[test]
fn a_heartbeat_goes_on_and_a_paused_restore_waits() {
    if !have_kvm() {
        return;
    }
    let _lock = kvm_lock();
    let dir = tempfile::tempdir().unwrap();
    let (log, path) = (dir.path().join("a.log"), dir.path().join("vm.save"));
    let before = run_and_save("mode=heartbeat", 1, "tick 2\n", &log, &path);
    let last = *counts(&before, "tick ").last().unwrap();
    let log2 = dir.path().join("b.log");
    let vm = restore(&path, "mode=heartbeat", 1, &log2, true);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(std::fs::read_to_string(&log2).unwrap(), "", "paused");
    vm.resume();
    let after = wait_for(&log2, &format!("tick {}\n", last + 2));
    assert_goes_on(&before, &after, "tick ");
    // The keyboard's interrupt still reaches the guest.
    vm.ctrl_alt_del();
    assert_eq!(
        vm.wait_event(Some(Duration::from_secs(30))),
        Some(VcpuEvent::Reset)
    );
    vm.destroy();
}

/// A file system that may not take O_DIRECT (tmpfs) still gets the whole
/// file: the writer falls back to buffered writes.
#[test]
fn a_save_to_tmpfs_is_whole() {
    if !have_kvm() {
        return;
    }
    let shm = Path::new("/dev/shm");
    if !test_guest::available("tmpfs", shm.is_dir()) {
        return;
    }
    let _lock = kvm_lock();
    let dir = tempfile::tempdir().unwrap();
    let save_dir = tempfile::tempdir_in(shm).unwrap();
    let path = save_dir.path().join("vm.save");
    run_and_save(
        "mode=cli-hlt",
        1,
        "halting",
        &dir.path().join("a.log"),
        &path,
    );
    let opened = file::open(File::open(&path).unwrap()).unwrap();
    assert!(file::verify_memory(&opened).unwrap() > 0);
}

/// A vCPU in `cli; hlt` never leaves KVM_RUN: its state is still saved.
#[test]
fn a_vcpu_in_cli_hlt_is_saved() {
    if !have_kvm() {
        return;
    }
    let _lock = kvm_lock();
    let dir = tempfile::tempdir().unwrap();
    let (log, path) = (dir.path().join("a.log"), dir.path().join("vm.save"));
    run_and_save("mode=cli-hlt", 1, "halting", &log, &path);
    let vm = restore(&path, "mode=cli-hlt", 1, &dir.path().join("b.log"), false);
    assert_eq!(vm.wait_event(Some(Duration::from_millis(300))), None);
    vm.destroy();
}

/// Damaged, truncated and future files are refused before anything runs,
/// each with its own reason.
#[test]
fn damaged_files_are_refused() {
    if !have_kvm() {
        return;
    }
    let _lock = kvm_lock();
    let dir = tempfile::tempdir().unwrap();
    let (log, path) = (dir.path().join("a.log"), dir.path().join("vm.save"));
    run_and_save("mode=cli-hlt", 1, "halting", &log, &path);
    let good = std::fs::read(&path).unwrap();
    let try_open = |bytes: &[u8]| {
        let p = dir.path().join("bad.save");
        std::fs::write(&p, bytes).unwrap();
        file::open(File::open(&p).unwrap()).map(|o| {
            file::verify_memory(&o).unwrap_err();
        })
    };
    let msg = |r: Result<(), Error>| r.unwrap_err().to_string();

    let mut b = good.clone();
    b[5000] ^= 0x20;
    assert!(msg(try_open(&b)).contains("state's checksum"));
    let mut b = good.clone();
    b[60] ^= 1;
    assert!(msg(try_open(&b)).contains("header's checksum"));
    let m = msg(try_open(&good[..good.len() - 4096]));
    assert!(m.contains("truncated"), "{m}");
    let m = msg(try_open(&good[..100]));
    assert!(m.contains("too short"), "{m}");
    let mut b = good.clone();
    b[8..12].copy_from_slice(&7u32.to_le_bytes());
    let crc = crc32(&b[..4092]);
    b[4092..4096].copy_from_slice(&crc.to_le_bytes());
    let m = msg(try_open(&b));
    assert!(m.contains("newer vmtools (format version 7"), "{m}");
    assert!(msg(try_open(b"QFI\xfb not ours at all, padded......")).contains("too short"));
    let mut b = good.clone();
    b[..8].copy_from_slice(b"QFI\xfb\0\0\0\x03");
    assert!(msg(try_open(&b)).contains("not a saved VM"));

    // A page of guest memory changed: the header and state still pass,
    // verify finds it.
    let opened = file::open(File::open(&path).unwrap()).unwrap();
    let run = opened.runs[0];
    let mut b = good.clone();
    let at = (run.file_offset + 0x0010_0000) as usize;
    b[at] ^= 0x55;
    assert!(try_open(&b).is_ok(), "verify_memory saw the change");
}

fn crc32(b: &[u8]) -> u32 {
    // The file's CRC-32 (IEEE), bit by bit, independent of the writer's.
    let mut c = !0u32;
    for &x in b {
        c ^= u32::from(x);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}
