//! The machine's state saved to a file and a new machine restored from
//! it, on the real /dev/kvm: the guest goes on from where it was.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use vmm::devices::SerialOut;
use vmm::state::file::{self, Saved};
use vmm::vcpu::VcpuEvent;
use vmm::{memory, Error, Restore, Vm, VmConfig};

mod common;

use test_guest::rundir::{contiguous, counts_in};
use test_guest::{have_kvm, kvm_lock};

fn config(cmdline: &str, vcpus: u8) -> VmConfig {
    common::config("save-test", cmdline, vcpus)
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
    try_restore(path, cmdline, vcpus, log, paused).unwrap()
}

/// Opens, verifies and restores the file: the first refusal, in words.
fn try_restore(
    path: &Path,
    cmdline: &str,
    vcpus: u8,
    log: &Path,
    paused: bool,
) -> Result<Vm, String> {
    let opened = file::open(File::open(path).unwrap()).map_err(|e| e.to_string())?;
    file::verify_memory(&opened).map_err(|e| e.to_string())?;
    let from = Restore {
        state: &opened.saved.machine,
        memory: vmm::RestoreMemory::File(memory::Saved {
            file: opened.file.try_clone().unwrap(),
            runs: opened.runs.clone(),
        }),
        paused,
    };
    Vm::restore(
        &config(cmdline, vcpus),
        SerialOut::File(File::create(log).unwrap()),
        from,
    )
    .map_err(|e| e.to_string())
}

/// The console before the save followed by the one after reads as one
/// run (a line cut by the save is finished after it).
fn assert_goes_on(before: &str, after: &str, word: &str) {
    contiguous(&format!("{before}{after}"), word);
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
        let last = *counts_in(&before, "round ").last().unwrap();
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
    let last = *counts_in(&before, "tick ").last().unwrap();
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
    let crc = test_guest::crc32(&b[..4092]);
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

/// A saved file rebuilt around a changed state, with every checksum made
/// good again: what a forger who knows the format could plant. The memory
/// runs keep their bytes and move to the new page-aligned places.
fn forge(good: &[u8], change: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let get32 = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let get64 = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let state_len = get64(good, 24) as usize;
    let mut state: serde_json::Value =
        serde_json::from_slice(&good[4096..4096 + state_len]).unwrap();
    change(&mut state);
    let state = serde_json::to_vec(&state).unwrap();
    let page = |v: usize| v.div_ceil(4096) * 4096;
    let mut out = vec![0u8; page(4096 + state.len())];
    out[4096..4096 + state.len()].copy_from_slice(&state);
    let count = get32(good, 36) as usize;
    let mut header = good[..4096].to_vec();
    for i in 0..count {
        let at = 48 + i * 24;
        let (len, from) = (get64(good, at + 8) as usize, get64(good, at + 16) as usize);
        header[at + 16..at + 24].copy_from_slice(&(out.len() as u64).to_le_bytes());
        out.extend_from_slice(&good[from..from + len]);
        out.resize(page(out.len()), 0);
    }
    header[24..32].copy_from_slice(&(state.len() as u64).to_le_bytes());
    header[32..36].copy_from_slice(&test_guest::crc32(&state).to_le_bytes());
    header[40..48].copy_from_slice(&(out.len() as u64).to_le_bytes());
    let crc = test_guest::crc32(&header[..4092]);
    header[4092..].copy_from_slice(&crc.to_le_bytes());
    out[..4096].copy_from_slice(&header);
    let trailer_at = get64(good, 40) as usize;
    out.extend_from_slice(&good[trailer_at..]);
    out
}

/// One change a forger makes to the state.
type Change = Box<dyn FnOnce(&mut serde_json::Value)>;

/// Sets bytes `at..` of a kvm-bindings struct that serde wrote as a JSON
/// array of bytes.
fn poke(bytes: &mut serde_json::Value, at: usize, new: &[u8]) {
    for (i, b) in new.iter().enumerate() {
        bytes[at + i] = serde_json::json!(b);
    }
}

/// A state whose checksums are good but whose contents are hostile is
/// refused with its own reason before any vCPU runs: a wrong irqchip id,
/// an MSR KVM does not have, an i8042 or serial FIFO past its size, a
/// field the format does not have. The unchanged file, forged the same
/// way, restores (so each refusal is the change's doing).
#[test]
fn forged_states_are_refused() {
    if !have_kvm() {
        return;
    }
    let _lock = kvm_lock();
    let dir = tempfile::tempdir().unwrap();
    let (log, path) = (dir.path().join("a.log"), dir.path().join("vm.save"));
    run_and_save("mode=cli-hlt", 1, "halting", &log, &path);
    let good = std::fs::read(&path).unwrap();
    let try_forged = |bytes: Vec<u8>| {
        let p = dir.path().join("forged.save");
        std::fs::write(&p, bytes).unwrap();
        try_restore(&p, "mode=cli-hlt", 1, &dir.path().join("b.log"), true).map(Vm::destroy)
    };
    try_forged(forge(&good, |_| {})).unwrap();
    let cases: Vec<(&str, Change)> = vec![
        (
            "is saved as chip 5",
            Box::new(|s| poke(&mut s["machine"]["chips"]["pic_master"], 0, &[5, 0, 0, 0])),
        ),
        (
            "KVM refused MSR 0xdeadbeef",
            Box::new(|s| {
                poke(
                    &mut s["machine"]["vcpus"][0]["msrs"][0],
                    0,
                    &0xdead_beef_u32.to_le_bytes(),
                );
            }),
        ),
        (
            "i8042: 100 bytes queued",
            Box::new(|s| s["machine"]["i8042"]["queue"] = serde_json::json!(vec![0x1c; 100])),
        ),
        (
            "serial port",
            Box::new(|s| s["machine"]["serial"]["in_buffer"] = serde_json::json!(vec![b'x'; 100])),
        ),
        (
            "unknown field",
            Box::new(|s| s["machine"]["extra"] = serde_json::json!(1)),
        ),
    ];
    for (expect, change) in cases {
        let e = try_forged(forge(&good, change)).unwrap_err();
        assert!(e.contains(expect), "{expect}: {e}");
    }
}
