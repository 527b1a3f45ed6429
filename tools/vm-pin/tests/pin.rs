//! vm-pin against a running test guest: affinity lands on exactly the
//! thread asked for, bad lists change nothing, --config survives a restart,
//! shares and quotas land in the cgroup files, table and JSON agree.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use test_guest::{kvm_lock, GUEST_ELF};

mod common;

use common::*;

#[test]
fn affinity_lands_on_one_thread_and_bad_lists_change_nothing() {
    if !usable() {
        return;
    }
    let _l = kvm_lock();
    let e = Env(tempfile::tempdir().unwrap());
    let online = online();
    let (code, out, err) = e.vm_run(&["start", "--detach", &e.spec("pinned")]);
    assert_eq!(code, 0, "{err}");
    let st = json(&out);
    let pid = st["pid"].as_u64().unwrap();
    let t0 = st["vcpu_threads"][0].as_u64().unwrap();
    let t1 = st["vcpu_threads"][1].as_u64().unwrap();
    let (code, _, err) = e.pin(&["vcpu", "pinned", "1", "0"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(allowed(pid, t1), "0");
    assert_eq!(allowed(pid, t0), online, "only that thread changed");
    assert_eq!(allowed(pid, pid), online);
    for (bad, why) in [
        ("9999", "beyond the maximum"),
        ("3-1", "backwards"),
        ("^0", "selects no CPU"),
    ] {
        let (code, _, err) = e.pin(&["vcpu", "pinned", "0", bad]);
        assert_eq!(code, 1, "{bad}");
        assert!(
            err.starts_with("vm-pin: error: invalid CPU list") && err.contains(why),
            "{bad}: {err}"
        );
        assert_eq!(allowed(pid, t0), online, "{bad} changed nothing");
    }
    let (code, _, err) = e.pin(&["emulator", "pinned", "1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(allowed(pid, pid), "1");
    assert_eq!(allowed(pid, t1), "0");
    // JSON and the virsh-like table agree.
    let rows = json(&e.pin(&["vcpu", "pinned"]).1);
    assert_eq!(
        rows,
        serde_json::json!([{"vcpu": 0, "cpus": online}, {"vcpu": 1, "cpus": "0"}])
    );
    let table = Command::new("script")
        .args([
            "-qec",
            &format!("{} vcpu pinned", env!("CARGO_BIN_EXE_vm-pin")),
            "/dev/null",
        ])
        .env("VMTOOLS_RUN_DIR", e.0.path().join("run"))
        .output();
    if let Ok(t) = table {
        let text = String::from_utf8_lossy(&t.stdout).replace('\r', "");
        assert!(text.contains(" VCPU   CPU Affinity"), "{text}");
        assert!(
            text.contains(&format!(" 0      {online}\n")) && text.contains(" 1      0\n"),
            "{text}"
        );
    } else {
        eprintln!("SKIP (table check): no `script` to give vm-pin a terminal");
    }
    // Shares and bandwidth land in the cgroup files, in v1's or v2's terms.
    let (code, out, err) = e.pin(&[
        "sched",
        "pinned",
        "--set",
        "cpu_shares=512,vcpu_quota=50000,vcpu_period=100000",
    ]);
    assert_eq!(code, 0, "{err}");
    // As virsh schedinfo --set: the values now in force, read back.
    let set = json(&out);
    assert_eq!(set["cpu_shares"], 512, "{out}");
    assert_eq!(set["vcpu_quota"], 50000, "{out}");
    assert_eq!(set["emulator_quota"], -1, "{out}");
    match Group::of("cpu", "pinned", pid) {
        Some(g @ Group::V1(_)) => {
            assert_eq!(g.read("cpu.shares"), "512");
            assert_eq!(g.read("vcpu1/cpu.cfs_quota_us"), "50000");
            assert_eq!(
                g.read("emulator/cpu.cfs_quota_us"),
                "-1",
                "the emulator keeps its own"
            );
        }
        Some(g @ Group::V2(_)) => {
            assert_eq!(g.read("cpu.weight"), "50", "512 of 1024 is 50 of 100");
            assert_eq!(g.read("vcpu1/cpu.max"), "50000 100000");
            assert_eq!(
                g.read("emulator/cpu.max"),
                "max 100000",
                "the emulator keeps its own"
            );
        }
        None => {}
    }
    let sched = json(&e.pin(&["sched", "pinned"]).1);
    assert_eq!(sched["cpu_shares"], 512);
    assert_eq!(sched["vcpu_quota"], 50000);
    let (code, _, err) = e.pin(&["sched", "pinned", "--set", "cpu_shares=1"]);
    assert_eq!(code, 1);
    assert!(err.contains("shares"), "{err}");
    // A VM started from a file has no definition for --config.
    let (code, _, err) = e.pin(&["vcpu", "pinned", "0", "1", "--config"]);
    assert_eq!(code, 1);
    assert!(err.contains("never defined"), "{err}");
}

#[test]
fn config_changes_survive_a_restart() {
    if !usable() {
        return;
    }
    let _l = kvm_lock();
    let e = Env(tempfile::tempdir().unwrap());
    assert_eq!(e.vm_run(&["define", &e.spec("defd")]).0, 0);
    let (code, _, err) = e.pin(&["vcpu", "defd", "0", "1"]);
    assert_eq!(code, 0, "not running: the definition changes: {err}");
    assert_eq!(json(&e.pin(&["vcpu", "defd"]).1)[0]["cpus"], "1");
    // sched --set on a stopped VM changes its definition and prints it.
    let (code, out, err) = e.pin(&["sched", "defd", "--set", "cpu_shares=300"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["cpu_shares"], 300, "{out}");
    assert_eq!(json(&e.pin(&["sched", "defd"]).1)["cpu_shares"], 300);
    let st = json(&e.vm_run(&["start", "--detach", "defd"]).1);
    let pid = st["pid"].as_u64().unwrap();
    assert_eq!(
        allowed(pid, st["vcpu_threads"][0].as_u64().unwrap()),
        "1",
        "applied at start"
    );
    // --config while running: the live thread keeps its pin until restart.
    assert_eq!(e.pin(&["vcpu", "defd", "1", "1", "--config"]).0, 0);
    let t1 = st["vcpu_threads"][1].as_u64().unwrap();
    let online = online();
    assert_eq!(allowed(pid, t1), online);
    assert_eq!(e.vm_run(&["kill", "defd"]).0, 0);
    let st = json(&e.vm_run(&["start", "--detach", "defd"]).1);
    let pid = st["pid"].as_u64().unwrap();
    assert_eq!(allowed(pid, st["vcpu_threads"][1].as_u64().unwrap()), "1");
}

#[test]
fn iothreads_pin_at_start_and_live() {
    if !usable() {
        return;
    }
    let _l = kvm_lock();
    let e = Env(tempfile::tempdir().unwrap());
    let online = online();
    let v = serde_json::json!({"name": "pinned", "vcpus": 1, "memory": "64MiB",
        "boot": {"kernel": GUEST_ELF, "cmdline": "mode=heartbeat"},
        "iothreads": 2, "cputune": {"iothreadpin": {"2": "0"}}});
    let spec = e.0.path().join("io.json");
    std::fs::write(&spec, v.to_string()).unwrap();
    let (code, out, err) = e.vm_run(&["start", "--detach", spec.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let st = json(&out);
    let pid = st["pid"].as_u64().unwrap();
    let io: Vec<u64> = st["iothread_threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    assert_eq!(io.len(), 2, "{st}");
    let vcpu = st["vcpu_threads"][0].as_u64().unwrap();
    assert_eq!(allowed(pid, io[1]), "0", "iothreadpin applied at start");
    assert_eq!(allowed(pid, io[0]), online);
    let (code, _, err) = e.pin(&["iothread", "pinned", "1", "1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(allowed(pid, io[0]), "1");
    assert_eq!(allowed(pid, vcpu), online, "only the iothread changed");
    let rows = json(&e.pin(&["iothread", "pinned"]).1);
    assert_eq!(
        rows,
        serde_json::json!([{"iothread": 1, "cpus": "1"}, {"iothread": 2, "cpus": "0"}])
    );
    let (code, _, err) = e.pin(&["iothread", "pinned", "3", "0"]);
    assert_eq!(code, 1);
    assert!(err.contains("iothread 3 does not exist"), "{err}");
    let (code, _, err) = e.pin(&["iothread", "pinned", "0", "0"]);
    assert_eq!(code, 1, "iothreads count from 1: {err}");
    // Each iothread sits in its own cgroup under the VM's.
    if let Some(g) = Group::of("cpu", "pinned", pid) {
        let t0 = std::time::Instant::now();
        while !g.threads("iothread2").contains(&io[1]) {
            assert!(
                t0.elapsed().as_secs() < 10,
                "iothread2 not in {}",
                g.dir().display()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    assert_eq!(e.vm_run(&["kill", "pinned"]).0, 0);
    // A VM without iothreads says so.
    let (code, _, _) = e.vm_run(&["start", "--detach", &e.spec("pinned")]);
    assert_eq!(code, 0);
    let (code, _, err) = e.pin(&["iothread", "pinned"]);
    assert_eq!(code, 1);
    assert!(err.contains("has no iothreads"), "{err}");
}

#[test]
fn host_knobs_read_dry_run_and_write() {
    let e = Env(tempfile::tempdir().unwrap());
    let mask_path = "/sys/devices/virtual/workqueue/cpumask";
    let Ok(mask) = std::fs::read_to_string(mask_path) else {
        eprintln!("SKIP: no {mask_path} here");
        return;
    };
    let mask = mask.trim().to_string();
    assert_eq!(
        json(&e.pin(&["host", "kworker-mask"]).1)["kworker_cpumask"],
        mask
    );
    let online = online();
    let (code, out, _) = e.pin(&["host", "kworker-mask", &online, "--dry-run"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("would write"), "{out}");
    assert_eq!(
        std::fs::read_to_string(mask_path).unwrap().trim(),
        mask,
        "dry run changed nothing"
    );
    let (code, _, err) = e.pin(&["host", "kworker-mask", "9999"]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid CPU list"), "{err}");
    // Writing the mask the host already has exercises the write path
    // without changing the host.
    if mask == "3" {
        let (code, out, err) = e.pin(&["host", "kworker-mask", "0-1"]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(json(&out)["kworker_cpumask"], "3");
    }
    let hp = "/sys/module/kvm/parameters/halt_poll_ns";
    if let Ok(v) = std::fs::read_to_string(hp) {
        let v = v.trim().to_string();
        assert_eq!(json(&e.pin(&["host", "halt-poll"]).1)["halt_poll_ns"], v);
        let (code, _, err) = e.pin(&["host", "halt-poll", &v]);
        if code != 0 {
            // Read-only where the KVM module does not allow changes.
            assert_eq!(code, 1);
            assert!(
                err.starts_with("vm-pin: error: writing") && err.contains(hp),
                "{err}"
            );
            assert_eq!(err.lines().count(), 1);
        }
    }
}

#[test]
fn numa_policy_applies_at_start_and_moves_live() {
    if !usable() {
        return;
    }
    let _l = kvm_lock();
    let e = Env(tempfile::tempdir().unwrap());
    let spec = |name: &str, nodes: &str| {
        let v = serde_json::json!({"name": name, "vcpus": 1, "memory": "64MiB",
            "boot": {"kernel": GUEST_ELF, "cmdline": "mode=heartbeat"},
            "numatune": {"mode": "strict", "nodeset": nodes}});
        let p = e.0.path().join(format!("{name}.json"));
        std::fs::write(&p, v.to_string()).unwrap();
        p.to_str().unwrap().to_string()
    };
    let (code, _, err) = e.vm_run(&["start", "--detach", &spec("pinned", "3")]);
    assert_eq!(code, 1);
    assert!(
        err.contains("numatune.nodeset: NUMA node 3 is not online"),
        "{err}"
    );
    let (code, out, err) = e.vm_run(&["start", "--detach", &spec("pinned", "0")]);
    assert_eq!(code, 0, "{err}");
    let pid = json(&out)["pid"].as_u64().unwrap();
    // The policy was set on the guest memory mapping before its first touch.
    let maps = std::fs::read_to_string(format!("/proc/{pid}/numa_maps")).unwrap();
    let guest = maps
        .lines()
        .find(|l| l.contains("memfd:vmtools-pinned"))
        .expect("guest memory mapping");
    assert!(guest.contains(" bind:0 "), "{guest}");
    let shown = json(&e.pin(&["numa", "pinned"]).1);
    assert_eq!(shown["numa_mode"], "strict");
    let (code, _, err) = e.pin(&["numa", "pinned", "--nodeset", "0"]);
    assert_eq!(code, 0, "{err}");
    if let Some(g) = Group::of("cpuset", "pinned", pid) {
        assert_eq!(g.read("cpuset.mems"), "0");
        assert_eq!(g.read("vcpu0/cpuset.mems"), "0", "and in every child");
    }
    let (code, _, err) = e.pin(&["numa", "pinned", "--nodeset", "5"]);
    assert_eq!(code, 1);
    assert!(err.contains("not online"), "{err}");
    let (code, _, err) = e.pin(&["numa", "pinned", "--mode", "interleave"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot change while the VM runs"), "{err}");
}

/// Restores the hugepage pool size when the test ends.
struct Pool(String, String);

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, &self.1);
    }
}

#[test]
fn hugepages_back_guest_memory_or_fail_clearly() {
    if !usable() {
        return;
    }
    let _l = kvm_lock();
    let pool_file = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
    let Ok(before) = std::fs::read_to_string(pool_file) else {
        eprintln!("SKIP: no 2 MiB hugepage pool here");
        return;
    };
    let _restore = Pool(pool_file.into(), before.trim().into());
    if std::fs::write(pool_file, "0").is_err() {
        eprintln!("SKIP: cannot size the hugepage pool (needs root)");
        return;
    }
    let e = Env(tempfile::tempdir().unwrap());
    let v = serde_json::json!({"name": "pinned", "vcpus": 1, "memory": "64MiB", "hugepages": "2M",
        "boot": {"kernel": GUEST_ELF, "cmdline": "mode=heartbeat"}});
    let p = e.0.path().join("huge.json");
    std::fs::write(&p, v.to_string()).unwrap();
    let spec = p.to_str().unwrap();
    let (code, _, err) = e.vm_run(&["start", "--detach", spec]);
    assert_eq!(code, 1);
    assert!(
        err.contains("hugepages: 32 pages of 2048 KiB needed, the pool has 0 free"),
        "{err}"
    );
    std::fs::write(pool_file, "40").unwrap();
    if std::fs::read_to_string(pool_file).unwrap().trim() != "40" {
        eprintln!("SKIP: the host could not reserve 40 huge pages");
        return;
    }
    let (code, out, err) = e.vm_run(&["start", "--detach", spec]);
    assert_eq!(code, 0, "{err}");
    let pid = json(&out)["pid"].as_u64().unwrap();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let at = smaps
        .find("memfd:vmtools-pinned")
        .expect("guest memory mapping");
    let block: String = smaps[at..].lines().take(20).collect::<Vec<_>>().join("\n");
    assert!(block.contains("KernelPageSize:     2048 kB"), "{block}");
    let _ = e.vm_run(&["kill", "pinned"]);
}

#[test]
fn other_users_get_one_line_and_change_nothing() {
    if !usable() {
        return;
    }
    let ok = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIP: cannot run as another user here (needs root and setpriv)");
        return;
    }
    let _l = kvm_lock();
    let e = Env(tempfile::tempdir().unwrap());
    // The test's own folders must be reachable for the other user.
    std::fs::set_permissions(e.0.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, out, err) = e.vm_run(&["start", "--detach", &e.spec("pinned")]);
    assert_eq!(code, 0, "{err}");
    std::fs::set_permissions(
        e.0.path().join("run"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let st = json(&out);
    let (pid, t0) = (
        st["pid"].as_u64().unwrap(),
        st["vcpu_threads"][0].as_u64().unwrap(),
    );
    let before = allowed(pid, t0);
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_vm-pin"))
        .args(["vcpu", "pinned", "0", "0"])
        .env("VMTOOLS_RUN_DIR", e.0.path().join("run"))
        .env("VMTOOLS_CONFIG_DIR", e.0.path().join("defs"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("permission denied"), "{err}");
    assert_eq!(allowed(pid, t0), before, "nothing changed");
}

/// A VM that runs without a cgroup (here: vm-run started in a mount
/// namespace where /sys/fs/cgroup is an empty tmpfs, so it cannot make its
/// groups): what needs the cgroup fails with one line naming the VM, and
/// the placement it has stays.
#[test]
fn a_vm_without_a_cgroup_gets_one_line_and_keeps_its_placement() {
    if !usable() || !test_guest::have_tool("unshare", "unshare") {
        return;
    }
    let _l = kvm_lock();
    let e = Env(tempfile::tempdir().unwrap());
    let spec = e.spec("pinned");
    let o = e
        .cmd("unshare")
        .args(["-m", "sh", "-c"])
        .arg(r#"mount -t tmpfs none /sys/fs/cgroup && exec "$0" start --detach "$1""#)
        .args([vm_run_bin(), spec])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() && err.contains("unshare failed") {
        eprintln!("SKIP: no mount namespaces here: {err}");
        return;
    }
    assert!(o.status.success(), "{err}");
    let st = json(&String::from_utf8_lossy(&o.stdout));
    let (pid, t0) = (
        st["pid"].as_u64().unwrap(),
        st["vcpu_threads"][0].as_u64().unwrap(),
    );
    let log = std::fs::read_to_string(e.0.path().join("run/pinned/vm.log")).unwrap();
    assert!(log.contains("running without a cgroup"), "{log}");
    let before = allowed(pid, t0);
    for args in [
        &["sched", "pinned", "--set", "cpu_shares=512"][..],
        &["sched", "pinned"][..],
        &["numa", "pinned", "--nodeset", "0"][..],
    ] {
        let (code, _, err) = e.pin(args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("vm-pin: error: VM 'pinned' has no cgroup"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(allowed(pid, t0), before, "nothing changed");
    // Affinity needs no cgroup: it still works.
    let (code, _, err) = e.pin(&["vcpu", "pinned", "0", "0"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(allowed(pid, t0), "0");
}

/// state.json is a file in the VM's folder: a thread id forged into it
/// (here this test's own thread) is not pinned, nor shown as the vCPU's.
#[test]
fn thread_ids_from_state_json_are_checked_against_the_vm_process() {
    if !usable() {
        return;
    }
    let _l = kvm_lock();
    let e = Env(tempfile::tempdir().unwrap());
    let (code, out, err) = e.vm_run(&["start", "--detach", &e.spec("pinned")]);
    assert_eq!(code, 0, "{err}");
    let mut st = json(&out);
    let pid = st["pid"].as_u64().unwrap();
    let real = st["vcpu_threads"][1].as_u64().unwrap();
    let me = u64::from(std::process::id());
    let mine = allowed(me, me);
    // The VM's own vcpu1 named as vcpu0, and a thread of another process.
    st["vcpu_threads"] = serde_json::json!([real, me]);
    let path = e.0.path().join("run/pinned/state.json");
    std::fs::write(&path, st.to_string()).unwrap();
    for id in ["0", "1"] {
        let (code, _, err) = e.pin(&["vcpu", "pinned", id, "0"]);
        assert_eq!(code, 1, "vcpu {id}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&format!("no thread for vCPU {id}")), "{err}");
    }
    let (code, _, err) = e.pin(&["vcpu", "pinned"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(allowed(me, me), mine, "our own thread was not pinned");
    assert_eq!(allowed(pid, real), online(), "nor the misnamed vCPU thread");
}
