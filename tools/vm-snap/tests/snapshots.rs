//! vm-snap's disk snapshots (create, list, delete; revert in revert.rs) against
//! real images, judged by qemu-img and qemu-io, and real VMs of the test
//! guest writing their disks throughout.

mod common;

use std::process::Command;

use common::{decode, json, ok, Env};
use test_guest::{have_kvm, kvm_lock};

/// Live disk snapshots: every writable disk gets an overlay on its top in
/// one pause, the guest's flushes go on into the overlays, qemu-img sees
/// the chain and finds it clean; a snapshot that cannot be made on every
/// disk changes none; a stopped, defined VM's definition follows.
#[test]
fn disk_snapshots_live_and_offline() {
    if !have_kvm() || !test_guest::have_tool("qemu-img", "qemu-img") {
        return;
    }
    let _lock = kvm_lock();
    let env = Env::new();
    let img = |args: &[&str]| {
        let o = Command::new("qemu-img").args(args).output().unwrap();
        let (code, out, err) = decode(&o);
        assert_eq!(code, 0, "qemu-img {args:?}: {out}{err}");
        out
    };
    let base = env.path("base.qcow2");
    let extra = env.path("extra.raw");
    img(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "16M"]);
    img(&["create", "-q", "-f", "raw", extra.to_str().unwrap(), "4M"]);
    let disks = serde_json::json!({"disks": [
        {"id": "vda", "path": base, "format": "qcow2"},
        {"id": "vdb", "path": extra, "format": "raw"}]});
    env.start(&env.spec("d", "blk-crash", &disks));
    env.wait_count("d", "flushed ", 3);

    let (code, out, err) = env.snap(&["create", "d", "--name", "s1", "--atomic"]);
    assert_eq!(code, 0, "{err}");
    let rec = json(&out);
    assert_eq!(rec["live"], true);
    assert!(rec["pause_us"].as_u64().is_some(), "{rec}");
    let ov = env.path("base.s1.qcow2");
    let ov_extra = env.path("extra.s1.qcow2");
    assert_eq!(rec["disks"][0]["overlay"], ov.to_str().unwrap());
    assert_eq!(rec["disks"][1]["overlay"], ov_extra.to_str().unwrap());
    let now = *env.counts("d", "flushed ").last().unwrap();
    env.wait_count("d", "flushed ", now + 3);
    assert!(
        !env.console("d").contains("blk: error"),
        "{}",
        env.console("d")
    );
    let (_, status, _) = env.vm_run(&["status", "--json", "d"]);
    let st = json(&status);
    assert_eq!(st["disks"][0]["top"], ov.to_str().unwrap(), "{st}");
    let info = json(&img(&["info", "-U", "--output=json", ov.to_str().unwrap()]));
    assert_eq!(info["backing-filename"], base.to_str().unwrap());
    assert_eq!(info["backing-filename-format"], "qcow2");
    let info = json(&img(&[
        "info",
        "-U",
        "--output=json",
        ov_extra.to_str().unwrap(),
    ]));
    assert_eq!(info["backing-filename-format"], "raw");

    // All or none: vdb's overlay path is taken, so vda gets none either.
    let taken = env.path("taken.qcow2");
    std::fs::write(&taken, b"mine").unwrap();
    let spec_b = format!("vdb,file={}", taken.display());
    let (code, _, err) = env.snap(&[
        "create",
        "d",
        "--name",
        "s2",
        "--disk",
        "vda",
        "--diskspec",
        &spec_b,
    ]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        !env.path("base.s1.s2.qcow2").exists(),
        "vda's overlay was removed"
    );
    assert_eq!(std::fs::read(&taken).unwrap(), b"mine");
    let (_, status, _) = env.vm_run(&["status", "--json", "d"]);
    assert_eq!(json(&status)["disks"][0]["top"], ov.to_str().unwrap());
    let (code, _, err) = env.snap(&["create", "d", "--disk", "vdz"]);
    assert_eq!(code, 1);
    assert!(err.contains("no disk vdz"), "{err}");

    let now = *env.counts("d", "flushed ").last().unwrap();
    env.wait_count("d", "flushed ", now + 2);
    env.vm_run(&["kill", "d"]);
    img(&["check", "-q", ov.to_str().unwrap()]);
    img(&["check", "-q", base.to_str().unwrap()]);
    let (code, out, _) = env.snap(&["list", "d"]);
    assert_eq!(code, 0);
    let names: Vec<_> = json(&out)["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["s1"]);

    // A stopped, defined VM: its definition moves to the new overlays.
    let spec = env.spec(
        "off",
        "blk-crash",
        &serde_json::json!({"disks": [
        {"id": "vda", "path": ov, "format": "qcow2"}]}),
    );
    let (code, _, err) = env.vm_run(&["define", &spec]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = env.snap(&["create", "off", "--name", "cold"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["live"], false);
    let cold = env.path("base.s1.cold.qcow2");
    let def: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.path("defs").join("off.json")).unwrap())
            .unwrap();
    assert_eq!(def["disks"][0]["path"], cold.to_str().unwrap());
    img(&["check", "-q", cold.to_str().unwrap()]);
    let info = json(&img(&["info", "--output=json", cold.to_str().unwrap()]));
    assert_eq!(info["backing-filename"], ov.to_str().unwrap());
    // Not running and not defined: one line.
    let (code, _, err) = env.snap(&["create", "ghost"]);
    assert_eq!(code, 1);
    assert!(err.contains("neither running nor defined"), "{err}");
}

fn names(env: &Env, vm: &str) -> Vec<String> {
    let (code, out, err) = env.snap(&["list", vm]);
    assert_eq!(code, 0, "{err}");
    json(&out)["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

/// delete of a stopped, defined VM's snapshots, an inner one and then the
/// newest: each overlay's data lands in its base, the layer above is
/// rebased onto it (the definition, for the newest), the disk reads the
/// same throughout, qemu-img finds every image clean, and the records
/// follow; unknown snapshots and a chain the records do not match are
/// refused with one line, changing nothing.
#[test]
fn delete_merges_down_offline() {
    if !test_guest::have_tool("qemu-img", "qemu-img")
        || !test_guest::have_tool("qemu-io", "qemu-io")
    {
        return;
    }
    let env = Env::new();
    let base = env.path("d.raw");
    let p = |x: &std::path::Path| x.to_str().unwrap().to_string();
    ok("qemu-img", &["create", "-q", "-f", "raw", &p(&base), "1M"]);
    ok(
        "qemu-io",
        &["-f", "raw", "-c", "write -q -P 0x41 0 128k", &p(&base)],
    );
    let spec = env.spec(
        "d",
        "hello",
        &serde_json::json!({"disks": [{"id": "vda", "path": base, "format": "raw"}]}),
    );
    assert_eq!(env.vm_run(&["define", &spec]).0, 0);
    assert_eq!(env.snap(&["create", "d", "--name", "s1"]).0, 0);
    let s1 = env.path("d.s1.qcow2");
    ok(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -q -P 0x42 0 64k", &p(&s1)],
    );
    assert_eq!(env.snap(&["create", "d", "--name", "s2"]).0, 0);
    let s2 = env.path("d.s1.s2.qcow2");
    ok(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -q -P 0x43 64k 64k", &p(&s2)],
    );
    let reads = |top: &std::path::Path, fmt: &str| {
        for (pat, at) in [("0x42", "0"), ("0x43", "64k")] {
            ok(
                "qemu-io",
                &[
                    "-f",
                    fmt,
                    "-r",
                    "-c",
                    &format!("read -q -P {pat} {at} 64k"),
                    &p(top),
                ],
            );
        }
    };
    reads(&s2, "qcow2");

    let (code, _, err) = env.snap(&["delete", "d", "nope"]);
    assert_eq!(code, 1);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("no snapshot named 'nope'"), "{err}");

    // The inner snapshot: s1's data goes into the base, s2 reads from it.
    let (code, out, err) = env.snap(&["delete", "d", "s1"]);
    assert_eq!(code, 0, "{err}");
    let rec = json(&out);
    assert_eq!(rec["deleted"], "s1");
    assert_eq!(rec["live"], false);
    assert_eq!(rec["disks"][0]["copied_bytes"], 65536, "{rec}");
    assert!(!s1.exists(), "the merged overlay is gone");
    let info = json(&ok("qemu-img", &["info", "--output=json", &p(&s2)]));
    assert_eq!(info["backing-filename"], p(&base.canonicalize().unwrap()));
    assert_eq!(info["backing-filename-format"], "raw");
    ok("qemu-img", &["check", "-q", &p(&s2)]);
    reads(&s2, "qcow2");
    // The base is the disk as it was at s2: s1's write, not s2's.
    ok(
        "qemu-io",
        &["-f", "raw", "-r", "-c", "read -q -P 0x42 0 64k", &p(&base)],
    );
    ok(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-r",
            "-c",
            "read -q -P 0x41 64k 64k",
            &p(&base),
        ],
    );
    assert_eq!(names(&env, "d"), ["s2"]);
    let (_, out, _) = env.snap(&["list", "d"]);
    assert_eq!(json(&out)["snapshots"][0]["disks"][0]["base"], p(&base));

    // A definition that no longer ends in the records' overlay: refused.
    let def_path = env.path("defs").join("d.json");
    let def = std::fs::read_to_string(&def_path).unwrap();
    let stray = env.path("stray.qcow2");
    ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            &p(&s2),
            "-F",
            "qcow2",
            &p(&stray),
        ],
    );
    std::fs::write(&def_path, def.replace(&p(&s2), &p(&stray))).unwrap();
    let (code, _, err) = env.snap(&["delete", "d", "s2"]);
    assert_eq!(code, 1);
    assert!(err.contains("deleting would lose"), "{err}");
    assert!(s2.exists());
    assert_eq!(names(&env, "d"), ["s2"]);
    std::fs::write(&def_path, def).unwrap();

    // The newest: the base becomes the disk, as the definition says.
    let (code, out, err) = env.snap(&["delete", "d", "s2"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["disks"][0]["copied_bytes"], 65536);
    assert!(!s2.exists());
    let def: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&def_path).unwrap()).unwrap();
    assert_eq!(def["disks"][0]["path"], p(&base));
    assert_eq!(def["disks"][0]["format"], "raw");
    reads(&base, "raw");
    assert!(names(&env, "d").is_empty());
}

/// delete while the guest writes its disk (a flush after every sector):
/// an inner snapshot, then the newest (the active commit, whose guest
/// writes during the copy are copied again). The guest never sees an
/// error, the VM ends on its base, which qemu-img finds clean and which
/// holds every sector the guest had flushed. Requests with the wrong
/// base, a base open read-only or an overlay not in the chain change
/// nothing.
#[test]
fn delete_live_while_the_guest_writes() {
    if !have_kvm() || !test_guest::have_tool("qemu-img", "qemu-img") {
        return;
    }
    let _lock = kvm_lock();
    let env = Env::new();
    let p = |x: &std::path::Path| x.to_str().unwrap().to_string();
    let base = env.path("w.qcow2");
    ok(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", &p(&base), "16M"],
    );
    env.start(&env.spec(
        "w",
        "blk-crash",
        &serde_json::json!({"disks": [{"id": "vda", "path": base, "format": "qcow2"}]}),
    ));
    let more = |n: u32| {
        let now = env.counts("w", "flushed ").last().copied().unwrap_or(0);
        env.wait_count("w", "flushed ", now + n);
    };
    more(3);
    assert_eq!(env.snap(&["create", "w", "--name", "s1"]).0, 0);
    more(20);
    assert_eq!(env.snap(&["create", "w", "--name", "s2"]).0, 0);
    more(20);
    let s1 = env.path("w.s1.qcow2");
    let s2 = env.path("w.s1.s2.qcow2");

    // Hostile requests first: each refused, the VM on its chain.
    let sock = env.run_dir().join("w/control.sock");
    let call = |req: &vm_control::Request, f: &std::fs::File| {
        vm_control::Session::connect(&sock)
            .unwrap()
            .call(req, &[std::os::fd::AsRawFd::as_raw_fd(f)], None)
            .unwrap()
    };
    let commit = |overlay: &std::path::Path, b: &std::path::Path| vm_control::Request::CommitDisk {
        id: "vda".into(),
        overlay: overlay.to_path_buf(),
        base: b.to_path_buf(),
    };
    let rw = |x: &std::path::Path| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(x)
            .unwrap()
    };
    for (what, req, f, expect) in [
        (
            "read-only base",
            commit(&s1, &base),
            std::fs::File::open(&base).unwrap(),
            "not open for writing",
        ),
        (
            "not the base",
            commit(&s2, &base),
            rw(&base),
            "is not the backing file",
        ),
        ("other file", commit(&s1, &base), rw(&s1), "not the file"),
        (
            "not in chain",
            commit(&env.path("x.qcow2"), &base),
            rw(&base),
            "not in disk vda's chain",
        ),
    ] {
        let r = call(&req, &f);
        assert!(!r.ok, "{what}: accepted");
        assert!(
            r.error.as_deref().unwrap_or("").contains(expect),
            "{what}: {r:?}"
        );
    }
    let (_, status, _) = env.vm_run(&["status", "--json", "w"]);
    assert_eq!(json(&status)["disks"][0]["top"], p(&s2));

    // Another reader of the base (a clone would be one): its data must
    // not change under it, so the delete is refused and can be run again.
    if test_guest::have_tool("qemu-io", "qemu-io") {
        let mut reader = Command::new("qemu-io")
            .args(["-r", "-f", "qcow2", &p(&base)])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let (code, _, err) = env.snap(&["delete", "w", "s1"]);
        let _ = reader.kill();
        let _ = reader.wait();
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("in use by another process"), "{err}");
        assert!(err.contains("run the delete again"), "{err}");
        let (_, out, _) = env.snap(&["list", "w"]);
        assert_eq!(json(&out)["snapshots"][0]["deleting"], true, "{out}");
        let (_, status, _) = env.vm_run(&["status", "--json", "w"]);
        assert_eq!(json(&status)["disks"][0]["top"], p(&s2));
    }
    let (code, out, err) = env.snap(&["delete", "w", "s1"]);
    assert_eq!(code, 0, "{err}");
    let rec = json(&out);
    assert_eq!(rec["live"], true);
    assert!(
        rec["disks"][0]["copied_bytes"].as_u64().unwrap() > 0,
        "{rec}"
    );
    assert!(!s1.exists());
    let info = json(&ok("qemu-img", &["info", "-U", "--output=json", &p(&s2)]));
    assert_eq!(info["backing-filename"], p(&base.canonicalize().unwrap()));
    more(10);
    let (_, status, _) = env.vm_run(&["status", "--json", "w"]);
    assert_eq!(json(&status)["disks"][0]["top"], p(&s2));

    let (code, out, err) = env.snap(&["delete", "w", "s2"]);
    assert_eq!(code, 0, "{err}");
    let rec = json(&out);
    assert!(rec["disks"][0]["pause_us"].as_u64().is_some(), "{rec}");
    assert!(!s2.exists());
    let (_, status, _) = env.vm_run(&["status", "--json", "w"]);
    let st = json(&status);
    assert_eq!(st["disks"][0]["top"], p(&base), "{st}");
    more(10);
    assert!(
        !env.console("w").contains("blk: error"),
        "{}",
        env.console("w")
    );
    assert!(names(&env, "w").is_empty());
    env.vm_run(&["kill", "w"]);
    ok("qemu-img", &["check", "-q", &p(&base)]);
    let raw = env.path("w.raw");
    ok("qemu-img", &["convert", "-O", "raw", &p(&base), &p(&raw)]);
    let data = std::fs::read(&raw).unwrap();
    let last = *env.counts("w", "flushed ").last().unwrap();
    for i in 0..=last {
        let at = i as usize * 512;
        assert_eq!(
            &data[at..at + 512],
            &test_guest::pattern(0xc0de_0000 + i, 512)[..],
            "sector {i} of {last} flushed"
        );
    }
}
