//! vm-run end to end on the real /dev/kvm with the test guest: foreground
//! exits, the detached lifecycle, stale state, bad input and security.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use test_guest::{have_kvm, kvm_lock};

mod common;

use common::{assert_confined, cpu_hierarchy, decode, error_line, json, wait_for, Env};
use vm_host::cgroup::Hierarchy;

#[test]
fn foreground_exit_codes_follow_the_spec() {
    if !have_kvm() {
        return;
    }
    let _l = kvm_lock();
    let e = Env::new();
    for vcpus in [1, 2] {
        let s = e.spec("hello", "hello", &serde_json::json!({"vcpus": vcpus}));
        let (code, out, err) = e.vm_run(&["start", &s]);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("vmtools test guest: hello"),
            "serial on stdout: {out}"
        );
    }
    let s = e.spec("crash", "crash", &serde_json::json!({}));
    let (code, out, _) = e.vm_run(&["start", &s]);
    assert_eq!(code, 3, "a crash under on_crash=destroy exits 3");
    assert!(out.contains("crashing"));
    // on_reboot=restart: the guest comes back; a signal then ends vm-run.
    let s = e.spec("rb", "reboot", &serde_json::json!({"on_reboot": "restart"}));
    let child = e
        .cmd()
        .args(["start", &s])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let (code, out, err) = decode(&child.wait_with_output().unwrap());
    assert_eq!(code, 0, "{err}");
    assert!(out.matches("rebooting").count() >= 2, "restarted: {out}");
    assert!(err.contains("restarting"), "{err}");
    assert!(!e.run_dir().join("rb").exists(), "runtime state removed");
}

#[test]
fn detached_lifecycle() {
    if !have_kvm() {
        return;
    }
    let _l = kvm_lock();
    let e = Env::new();
    let s = e.spec("hb", "heartbeat", &serde_json::json!({"vcpus": 2}));
    let (code, out, err) = e.vm_run(&["start", "--detach", &s]);
    assert_eq!(code, 0, "{err}");
    let st = json(&out);
    assert_eq!(st["state"], "running");
    assert_eq!(st["vcpu_threads"].as_array().unwrap().len(), 2);
    let pid = st["pid"].as_u64().unwrap();
    // Threads are named for ps/top.
    let tid = st["vcpu_threads"][1].as_u64().unwrap();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap();
    assert_eq!(comm.trim(), "vcpu1");
    // The process sits in its own cgroup: the main thread in emulator,
    // each vCPU thread in its vcpuN group.
    let cgroup_of =
        |t: u64| std::fs::read_to_string(format!("/proc/{pid}/task/{t}/cgroup")).unwrap();
    let mut group = format!("/vmtools/hb.{pid}");
    match cpu_hierarchy() {
        Some(Hierarchy::V2(root)) => {
            // One hierarchy: the VM's group with threaded children, named
            // for the launcher that started the VM process in it.
            let line = |t: u64| {
                cgroup_of(t)
                    .lines()
                    .find(|l| l.starts_with("0::"))
                    .unwrap_or_default()
                    .to_string()
            };
            let found = vm_host::cgroup::VmCgroup::find("hb", pid as u32).expect("found");
            let dir = found.thread_groups[0].strip_prefix(&root).unwrap();
            group = format!("/{}", dir.display());
            let launcher: u32 = group.rsplit_once('.').unwrap().1.parse().unwrap();
            assert_ne!(u64::from(launcher), pid, "born in the launcher's group");
            assert_eq!(line(pid), format!("0::{group}/emulator"));
            assert_eq!(line(tid), format!("0::{group}/vcpu1"));
        }
        Some(_) => {
            for (t, line) in [
                (pid, format!(":cpu:{group}/emulator")),
                (tid, format!(":cpu:{group}/vcpu1")),
                (tid, format!(":cpuset:{group}/vcpu1")),
                (pid, format!(":memory:{group}")),
            ] {
                assert!(cgroup_of(t).contains(&line), "{line}: {}", cgroup_of(t));
            }
        }
        None => {}
    }
    // Every thread runs without capabilities and under the seccomp filter.
    let mut tasks = vec![pid];
    tasks.extend(
        st["vcpu_threads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap()),
    );
    for t in tasks {
        let status = std::fs::read_to_string(format!("/proc/{pid}/task/{t}/status")).unwrap();
        assert!(
            status.contains("CapEff:\t0000000000000000"),
            "thread {t}: {status}"
        );
        assert!(
            status.contains("CapPrm:\t0000000000000000"),
            "thread {t}: {status}"
        );
        assert!(status.contains("Seccomp:\t2"), "thread {t}: {status}");
    }
    // The vCPU threads, which the guest drives, add a stricter filter.
    assert_confined(pid, "vcpu");
    let main = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(main.contains("Seccomp_filters:\t1"), "{main}");
    // State files and modes.
    let dir = e.run_dir().join("hb");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("control.sock")), 0o600);
    assert!(std::fs::read_to_string(dir.join("vm.log"))
        .unwrap()
        .contains("started VM hb"));
    // A second start of the same name is refused.
    let (code, _, err) = e.vm_run(&["start", "--detach", &s]);
    assert_eq!(code, 1);
    assert!(error_line(&err).contains("already running"));
    // list and status.
    let l = json(&e.vm_run(&["list"]).1);
    assert_eq!(l[0]["name"], "hb");
    assert_eq!(json(&e.vm_run(&["status", "hb"]).1)["reason"], "booted");
    // pause stops the heartbeat, resume starts it again.
    e.wait_ticks("hb", 2);
    assert_eq!(json(&e.vm_run(&["pause", "hb"]).1)["state"], "paused");
    let at = e.ticks("hb");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(e.ticks("hb"), at, "no heartbeat while paused");
    assert_eq!(
        e.vm_run(&["state", "--reason", "hb"]).1.trim(),
        r#"{"name":"hb","reason":"user","state":"paused"}"#
    );
    // The state record on stdin names the VM, as a pipeline passes it.
    let mut c = e.cmd();
    let mut child = c
        .args(["resume", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), out.as_bytes()).unwrap();
    let (code, rout, _) = decode(&child.wait_with_output().unwrap());
    assert_eq!(code, 0);
    assert_eq!(json(&rout)["state"], "running");
    e.wait_ticks("hb", at + 2);
    // shutdown: Ctrl-Alt-Del, the guest goes down, the process exits.
    let (code, _, err) = e.vm_run(&[
        "shutdown",
        "--mode",
        "ctrl-alt-del",
        "--timeout",
        "60",
        "hb",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(!dir.exists(), "runtime folder removed after shutdown");
    assert_eq!(json(&e.vm_run(&["list"]).1), serde_json::json!([]));

    // kill (destroy) a guest that never leaves KVM_RUN.
    let s = e.spec("spin", "cli-hlt", &serde_json::json!({}));
    let st = json(&e.vm_run(&["start", "--detach", &s]).1);
    let (code, _, err) = e.vm_run(&["kill", "spin"]);
    assert_eq!(code, 0, "{err}");
    let pid = st["pid"].as_u64().unwrap();
    assert!(vm_control::Liveness::of(pid as u32) == vm_control::Liveness::Dead);
    assert!(!e.run_dir().join("spin").exists());
}

#[test]
fn a_vm_whose_process_died_reads_as_crashed() {
    if !have_kvm() {
        return;
    }
    let _l = kvm_lock();
    let e = Env::new();
    let s = e.spec("doomed", "heartbeat", &serde_json::json!({}));
    let st = json(&e.vm_run(&["start", "--detach", &s]).1);
    let pid = st["pid"].as_i64().unwrap() as i32;
    // SAFETY: killing the VM process we started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let t0 = Instant::now();
    while vm_control::Liveness::of(pid as u32) == vm_control::Liveness::Alive {
        assert!(t0.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(json(&e.vm_run(&["list"]).1)[0]["state"], "crashed");
    let status = json(&e.vm_run(&["status", "doomed"]).1);
    assert_eq!(status["state"], "crashed");
    assert_eq!(status["reason"], "the VM process died");
    let (code, _, err) = e.vm_run(&["pause", "doomed"]);
    assert_eq!(code, 1);
    assert!(error_line(&err).contains("died"));
    // Starting again clears the stale state, and the dead VM's cgroup (once
    // the zombie is reaped: until then the kernel keeps the group busy, and
    // PID 1 here reaps late).
    wait_for("the zombie to be reaped", || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    let (code, out, err) = e.vm_run(&["start", "--detach", &s]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["state"], "running");
    if let Some(Hierarchy::V1 { cpu: Some(m), .. } | Hierarchy::V2(m)) = cpu_hierarchy() {
        assert!(!m.join(format!("vmtools/doomed.{pid}")).exists());
    }
    // Killed outright again, then destroyed (virsh destroy of a VM whose
    // process is gone): that clears its folder and its groups too.
    let pid = json(&e.vm_run(&["status", "doomed"]).1)["pid"]
        .as_i64()
        .unwrap() as i32;
    // SAFETY: killing the VM process we started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_for("the zombie to be reaped", || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    let (code, out, err) = e.vm_run(&["kill", "doomed"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["reason"], "destroyed");
    if let Some(Hierarchy::V1 { cpu: Some(m), .. } | Hierarchy::V2(m)) = cpu_hierarchy() {
        assert!(!m.join(format!("vmtools/doomed.{pid}")).exists());
    }
    assert!(!e.run_dir().join("doomed").exists());
    let (code, _, err) = e.vm_run(&["status", "doomed"]);
    assert_eq!(code, 1);
    assert!(error_line(&err).contains("no VM named 'doomed'"), "{err}");
}

#[test]
fn bad_input_leaves_nothing_behind() {
    let e = Env::new();
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            serde_json::json!({"colour": "red"}),
            "unknown field `colour`",
        ),
        (
            serde_json::json!({"boot": {"kernel": "/nonexistent/vmlinux"}}),
            "/nonexistent/vmlinux",
        ),
        (serde_json::json!({"memory": "64TiB"}), "more than the host"),
        (
            serde_json::json!({"cpu": {"numa": [{"id": 0, "cpus": "0", "memory": "32MiB"}]}}),
            "cell memory adds up to 32MiB, but memory is 64MiB",
        ),
        (
            serde_json::json!({"disks": [{"id": "vda", "path": "x.img", "format": "raw"}]}),
            "disk vda: image",
        ),
        (
            serde_json::json!({"disks": [{"id": "vda", "path": "x.img", "format": "qcow2", "io": "native"}]}),
            "io_uring (native) is for raw images",
        ),
    ];
    for (extra, want) in cases {
        let s = e.spec("bad", "hello", &extra);
        let (code, _, err) = e.vm_run(&["start", &s]);
        assert_eq!(code, 1, "{extra}: {err}");
        assert!(error_line(&err).contains(want), "{extra}: {err}");
        let left: Vec<_> = std::fs::read_dir(e.run_dir())
            .map(|d| d.flatten().collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{extra}: left behind {left:?}");
        let (code, _, err) = e.vm_run(&["start", "--detach", &s]);
        assert_eq!(code, 1, "detached {extra}: {err}");
        assert!(error_line(&err).contains(want), "detached {extra}: {err}");
        let left: Vec<_> = std::fs::read_dir(e.run_dir())
            .map(|d| d.flatten().collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "detached {extra}: left behind {left:?}");
        // Nor a cgroup: a start that fails after making the VM's groups
        // removes them.
        if let Some(Hierarchy::V1 { cpu: Some(m), .. } | Hierarchy::V2(m)) = cpu_hierarchy() {
            let groups: Vec<_> = std::fs::read_dir(m.join("vmtools"))
                .map(|d| {
                    d.flatten()
                        .map(|g| g.file_name().to_string_lossy().into_owned())
                        .filter(|g| g.starts_with("bad."))
                        .collect()
                })
                .unwrap_or_default();
            assert!(groups.is_empty(), "{extra}: cgroups left behind {groups:?}");
        }
    }
    let (code, _, _) = e.vm_run(&["start"]);
    assert_eq!(code, 2, "usage errors exit 2");
    let (code, _, err) = e.vm_run(&["pause", "nosuchvm"]);
    assert_eq!(code, 1);
    assert!(error_line(&err).contains("no VM named 'nosuchvm'"));
}

#[test]
fn reboot_wait_and_forced_shutdown() {
    if !have_kvm() {
        return;
    }
    let _l = kvm_lock();
    let e = Env::new();
    // reboot: the guest starts over (its banner twice), the VM stays up.
    let s = e.spec("rb2", "heartbeat", &serde_json::json!({}));
    let pid = json(&e.vm_run(&["start", "--detach", &s]).1)["pid"]
        .as_u64()
        .unwrap() as u32;
    e.wait_ticks("rb2", 1);
    let (code, out, err) = e.vm_run(&["reboot", "rb2"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["reason"], "rebooted by request");
    wait_for("the second boot", || {
        e.console("rb2").matches("test guest: heartbeat").count() == 2
    });
    // The new machine's vCPU threads confine themselves too.
    assert_confined(u64::from(pid), "vcpu");
    // wait: returns once the VM is gone.
    let waiter = e
        .cmd()
        .args(["wait", "rb2"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(e.vm_run(&["kill", "rb2"]).0, 0);
    let (code, _, _) = decode(&waiter.wait_with_output().unwrap());
    assert_eq!(code, 0);
    assert_eq!(vm_control::Liveness::of(pid), vm_control::Liveness::Dead);

    // A guest that ignores Ctrl-Alt-Del: shutdown times out (exit 1, the VM
    // still runs), --force then kills it.
    let s = e.spec("deaf", "cli-hlt", &serde_json::json!({}));
    let pid = json(&e.vm_run(&["start", "--detach", &s]).1)["pid"]
        .as_u64()
        .unwrap() as u32;
    let (code, _, err) = e.vm_run(&[
        "shutdown",
        "--mode",
        "ctrl-alt-del",
        "--timeout",
        "1",
        "deaf",
    ]);
    assert_eq!(code, 1);
    assert!(
        error_line(&err).contains("did not shut down within 1 s"),
        "{err}"
    );
    assert_eq!(vm_control::Liveness::of(pid), vm_control::Liveness::Alive);
    let (code, _, err) = e.vm_run(&[
        "shutdown",
        "--mode",
        "ctrl-alt-del",
        "--timeout",
        "1",
        "--force",
        "deaf",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(vm_control::Liveness::of(pid), vm_control::Liveness::Dead);
}

/// Every `vmtools/<name>.<pid>` group of `name` in any cgroup hierarchy
/// mounted here (v1 cpu, cpuset, memory and the v2 mount).
fn groups_of(name: &str) -> Vec<std::path::PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter(|l| l.contains(" - cgroup ") || l.contains(" - cgroup2 "))
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter_map(|m| std::fs::read_dir(Path::new(m).join("vmtools")).ok())
        .flat_map(|d| d.flatten().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{name}.")))
        })
        .collect()
}

/// A VM's cgroups go when it ends, in every hierarchy it used: after a
/// guest's own exit in the foreground and after `kill` of a detached VM.
#[test]
fn a_vms_cgroups_go_with_it() {
    if !have_kvm() || cpu_hierarchy().is_none() {
        return;
    }
    let _l = kvm_lock();
    let e = Env::new();
    let gone = |name: &str| {
        let t0 = Instant::now();
        loop {
            let left = groups_of(name);
            if left.is_empty() {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{name}: groups left behind: {left:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let s = e.spec(
        "cgfg",
        "hello",
        &serde_json::json!({"vcpus": 2, "iothreads": 1}),
    );
    let (code, _, err) = e.vm_run(&["start", &s]);
    assert_eq!(code, 0, "{err}");
    gone("cgfg");
    let s = e.spec("cgbg", "heartbeat", &serde_json::json!({}));
    let (code, out, err) = e.vm_run(&["start", "--detach", &s]);
    assert_eq!(code, 0, "{err}");
    let pid = json(&out)["pid"].as_u64().unwrap();
    assert!(
        !groups_of("cgbg").is_empty(),
        "the running VM has its groups"
    );
    // v1: named for the VM process; v2: for the launcher that started
    // the VM process in its group, which vm-pin finds from the process.
    let named = vm_host::cgroup::VmCgroup::find("cgbg", pid as u32).expect("found");
    assert!(groups_of("cgbg")
        .iter()
        .all(|g| named.thread_groups[0].ends_with(g.file_name().unwrap())));
    assert_eq!(e.vm_run(&["kill", "cgbg"]).0, 0);
    gone("cgbg");
}

/// On cgroup v2 a foreground vm-run starts the VM process inside the VM's
/// group (a move into a v2 group waits for an RCU grace period) and stays
/// the process users signal: TERM is passed on, the VM's exit code is its
/// own, and a launcher killed outright takes its VM with it. Runs where
/// vm-run places VMs on v2: a v2 host, or `VMTOOLS_CGROUP_LAYOUT=v2` on a
/// hybrid one (scripts/cgroup-v2 runs it so).
#[test]
fn a_foreground_vm_on_cgroup_v2_is_born_in_its_group() {
    let Some(Hierarchy::V2(root)) = Hierarchy::detect() else {
        eprintln!("SKIP (v2 launcher): vm-run does not place VMs on cgroup v2 here");
        return;
    };
    if !have_kvm() {
        return;
    }
    let _l = kvm_lock();
    let e = Env::new();
    let s = e.spec("born", "heartbeat", &serde_json::json!({"vcpus": 2}));
    let start = || {
        e.cmd()
            .args(["start", &s])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // The VM process's pid, once its state says it runs.
    let vm_pid = || {
        let t0 = Instant::now();
        loop {
            let (code, out, _) = e.vm_run(&["state", "born"]);
            if code == 0 && out.contains("running") {
                let st = json(&e.vm_run(&["status", "born"]).1);
                return st["pid"].as_u64().unwrap();
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "never ran: {out}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let line = |pid: u64| {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("0::").map(str::to_string))
            .unwrap_or_default()
    };
    let gone = |group: &Path| {
        let t0 = Instant::now();
        while group.exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{group:?} left behind"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let launcher = start();
    let l = launcher.id();
    let pid = vm_pid();
    assert_ne!(pid, u64::from(l), "the VM runs in a child of the launcher");
    assert!(root.join(format!("vmtools/born.{l}/vcpu1")).is_dir());
    assert_eq!(line(pid), format!("/vmtools/born.{l}/emulator"));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ppid: u32 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(ppid, l, "{stat}");
    // A second start of the name fails as before: one line, exit 1, and
    // its launcher leaves no group of its own.
    let (code, _, err) = e.vm_run(&["start", &s]);
    assert_eq!(code, 1, "{err}");
    assert!(error_line(&err).contains("already running"), "{err}");
    assert_eq!(groups_of("born").len(), 1, "{:?}", groups_of("born"));
    // TERM, INT and HUP sent to the launcher reach the VM, which stops;
    // the launcher exits with the VM's code (0), and the groups go.
    let mut launcher = Some(launcher);
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        let child = launcher.take().unwrap_or_else(start);
        let pid = vm_pid();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let group = root.join(format!("vmtools/born.{}", child.id()));
        let (code, _, err) = decode(&child.wait_with_output().unwrap());
        assert_eq!(code, 0, "signal {sig}: {err}");
        assert_eq!(
            vm_control::Liveness::of(pid as u32),
            vm_control::Liveness::Dead
        );
        gone(&group);
    }
    // A launcher killed outright takes its VM with it.
    let mut launcher = start();
    let pid = vm_pid();
    launcher.kill().unwrap();
    let _ = launcher.wait();
    let t0 = Instant::now();
    while vm_control::Liveness::of(pid as u32) == vm_control::Liveness::Alive {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the VM outlived its launcher"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    gone(&root.join(format!("vmtools/born.{}", launcher.id())));
    // The guest's own exit code comes through the launcher.
    let s = e.spec("borncrash", "crash", &serde_json::json!({}));
    let (code, out, _) = e.vm_run(&["start", &s]);
    assert_eq!(code, 3, "a crash under on_crash=destroy exits 3: {out}");
}
