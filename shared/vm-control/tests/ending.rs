//! A VM that ends cleanly removes its folder, then lets go of its lock. A
//! lookup racing that must see the VM running or gone, never dead: "its
//! process died" is for VMs that crashed, and read after a save or a
//! migration it misleads.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_control::{lookup, write_state, Lookup, VmLock};
use vm_spec::{RunState, VmSpec, VmState};

#[test]
fn a_vm_that_ends_is_never_taken_for_dead() {
    let d = tempfile::tempdir().unwrap();
    // The only test in this process: no other reads the variable.
    std::env::set_var("VMTOOLS_RUN_DIR", d.path());
    let spec =
        VmSpec::from_json(r#"{"name":"ending","vcpus":1,"memory":"64MiB","boot":{"kernel":"/k"}}"#)
            .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let running = Arc::new(AtomicU32::new(0));
    let looker = {
        let (done, running) = (done.clone(), running.clone());
        std::thread::spawn(move || {
            let mut absent = 0u32;
            while !done.load(Ordering::Relaxed) {
                match lookup("ending") {
                    Ok(Lookup::Running { .. }) => {
                        running.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Lookup::Absent { .. }) => absent += 1,
                    Ok(Lookup::Dead { dir, state }) => panic!(
                        "a VM that ended was taken for dead: {} {:?} exists {}",
                        state.pid,
                        vm_control::holder(&dir),
                        dir.exists()
                    ),
                    // Busy: a claim between making the folder and writing
                    // state.json.
                    Err(_) => {}
                }
            }
            absent
        })
    };
    for _ in 0..3000 {
        let lock = VmLock::claim("ending").unwrap();
        let st = VmState {
            name: "ending".into(),
            uuid: uuid::Uuid::nil(),
            pid: std::process::id(),
            state: RunState::Running,
            reason: "booted".into(),
            control_socket: lock.dir().join("control.sock"),
            spec: spec.clone(),
            vcpu_threads: vec![],
            iothread_threads: vec![],
            console: None,
            disks: vec![],
            nets: vec![],
            started: 0,
        };
        write_state(lock.dir(), &st).unwrap();
        // Long enough, mostly, for the looker to see it run.
        let (seen, t0) = (running.load(Ordering::Relaxed), Instant::now());
        while running.load(Ordering::Relaxed) == seen && t0.elapsed() < Duration::from_millis(1) {
            std::hint::spin_loop();
        }
        // The order a VM ends in (vm-run's DirGuard): the folder, then the
        // lock.
        vm_control::remove_runtime(lock.dir());
        drop(lock);
    }
    done.store(true, Ordering::Relaxed);
    let absent = looker.join().unwrap();
    let running = running.load(Ordering::Relaxed);
    assert!(
        running > 0 && absent > 0,
        "the looker saw both: {running} running, {absent} gone"
    );
}
