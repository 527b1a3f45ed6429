use super::*;

const FULL: &str = r#"{
  "name": "demo",
  "uuid": "ab472210-db8c-4018-9b3e-fc5319a769f7",
  "vcpus": 2,
  "cpu": { "topology": { "sockets": 1, "cores": 2, "threads": 1 },
           "numa": [ { "id": 0, "cpus": "0-1", "memory": "512MiB" } ] },
  "memory": "512MiB",
  "hugepages": "2M",
  "boot": { "kernel": "vmlinux", "initrd": "initrd.img", "cmdline": "console=ttyS0" },
  "disks": [
    { "id": "vda", "path": "disk.qcow2", "format": "qcow2", "readonly": false,
      "cache": "none", "io": "threads", "iothread": 1, "serial": "vda-0001",
      "boot_order": 1 }
  ],
  "nets": [ { "id": "net0", "tap": "vnet0", "bridge": null,
              "mac": "52:54:00:12:34:56", "queues": 1 } ],
  "serial": { "mode": "file", "path": "console.log" },
  "iothreads": 1,
  "on_poweroff": "destroy",
  "on_reboot": "restart",
  "on_crash": "destroy",
  "cputune": { "vcpupin": { "0": "2-3" }, "emulatorpin": "0-1",
               "iothreadpin": { "1": "1" }, "shares": 1024,
               "vcpu_period": 100000, "vcpu_quota": -1 },
  "numatune": { "mode": "strict", "nodeset": "0" }
}"#;

fn minimal() -> serde_json::Value {
    serde_json::json!({"name": "t", "vcpus": 1, "memory": "64MiB",
                       "boot": {"kernel": "guest.elf"}})
}

fn err_of(v: &serde_json::Value) -> String {
    VmSpec::from_json(&v.to_string()).unwrap_err().to_string()
}

fn with(mut base: serde_json::Value, key: &str, val: serde_json::Value) -> serde_json::Value {
    base[key] = val;
    base
}

#[test]
fn design_example_parses_and_round_trips() {
    let spec = VmSpec::from_json(FULL).unwrap();
    assert_eq!(spec.vcpus, 2);
    assert_eq!(spec.memory, Size(512 << 20));
    assert_eq!(spec.hugepages, Some(Size(2 << 20)));
    assert_eq!(spec.disks[0].cache, CacheMode::None);
    assert_eq!(
        spec.cputune.as_ref().unwrap().vcpupin[&0].to_string(),
        "2-3"
    );
    let again = VmSpec::from_json(&spec.to_json_pretty()).unwrap();
    assert_eq!(spec, again);
    assert_eq!(spec.features().len(), 12);
}

#[test]
fn minimal_spec_takes_libvirt_defaults() {
    let spec = VmSpec::from_json(&minimal().to_string()).unwrap();
    assert_eq!(spec.on_poweroff, Action::Destroy);
    assert_eq!(spec.on_reboot, Action::Restart);
    assert_eq!(spec.on_crash, Action::Destroy);
    assert!(spec.features().is_empty());
    assert!(spec.require_supported("vm-run", &[]).is_ok());
}

#[test]
fn required_fields() {
    for key in ["name", "vcpus", "memory", "boot"] {
        let mut v = minimal();
        v.as_object_mut().unwrap().remove(key);
        let e = err_of(&v);
        assert!(e.contains(&format!("missing field `{key}`")), "{e}");
    }
    let e = err_of(&with(minimal(), "boot", serde_json::json!({})));
    assert!(e.contains("boot") && e.contains("kernel"), "{e}");
}

#[test]
fn unknown_fields_name_their_path() {
    let e = err_of(&with(minimal(), "colour", serde_json::json!(1)));
    assert!(e.contains("unknown field `colour`"), "{e}");
    let e = err_of(&with(
        minimal(),
        "disks",
        serde_json::json!([{"id": "a", "path": "p", "format": "raw", "cahce": "none"}]),
    ));
    assert!(e.starts_with("disks[0]") && e.contains("cahce"), "{e}");
}

#[test]
fn memory_has_a_floor_and_nothing_follows_the_spec() {
    let e = err_of(&with(minimal(), "memory", serde_json::json!("512KiB")));
    assert!(e.starts_with("memory: 512KiB is too little"), "{e}");
    let mut text = minimal().to_string();
    text.push_str(" {}");
    let e = VmSpec::from_json(&text).unwrap_err().to_string();
    assert!(e.contains("trailing characters"), "{e}");
    let e = err_of(&with(minimal(), "name", serde_json::json!("-")));
    assert!(e.contains("must start with a letter or a digit"), "{e}");
}

#[test]
fn memory_needs_a_unit() {
    let e = err_of(&with(minimal(), "memory", serde_json::json!(512)));
    assert!(e.starts_with("memory: ") && e.contains("no unit"), "{e}");
    let e = err_of(&with(minimal(), "memory", serde_json::json!("512")));
    assert!(e.contains("no unit"), "{e}");
    let e = err_of(&with(minimal(), "memory", serde_json::json!("1000B")));
    assert!(e.contains("multiple of 4KiB"), "{e}");
    let e = err_of(&with(minimal(), "memory", serde_json::json!("0MiB")));
    assert!(e.starts_with("memory"), "{e}");
}

#[test]
fn bad_names_and_values() {
    let e = err_of(&with(minimal(), "name", serde_json::json!("123")));
    assert!(e.starts_with("name: ") && e.contains("all digits"), "{e}");
    let e = err_of(&with(minimal(), "vcpus", serde_json::json!(0)));
    assert!(e.starts_with("vcpus"), "{e}");
    let e = err_of(&with(minimal(), "vcpus", serde_json::json!(-1)));
    assert!(e.starts_with("vcpus"), "{e}");
    let e = err_of(&with(minimal(), "uuid", serde_json::json!("nope")));
    assert!(e.starts_with("uuid"), "{e}");
    let e = err_of(&with(minimal(), "on_crash", serde_json::json!("explode")));
    assert!(e.starts_with("on_crash") && e.contains("destroy"), "{e}");
    let e = err_of(&with(minimal(), "hugepages", serde_json::json!("4K")));
    assert!(e.starts_with("hugepages"), "{e}");
    assert!(VmSpec::from_json("{")
        .unwrap_err()
        .to_string()
        .starts_with("not valid JSON"));
}

#[test]
fn topology_must_multiply_to_vcpus() {
    let mut v = with(minimal(), "vcpus", serde_json::json!(4));
    v["cpu"] = serde_json::json!({"topology": {"sockets": 1, "cores": 2, "threads": 1}});
    let e = err_of(&v);
    assert!(e.contains("= 2, but vcpus is 4"), "{e}");
    v["cpu"]["topology"]["cores"] = serde_json::json!(4);
    assert!(VmSpec::from_json(&v.to_string()).is_ok());
    // A product past u64 neither panics nor wraps.
    v["cpu"]["topology"] = serde_json::json!({"sockets": 4_294_967_295_u32, "cores": 4_294_967_295_u32, "threads": 4_294_967_295_u32});
    assert!(err_of(&v).contains("but vcpus is 4"));
}

#[test]
fn iothreads_are_bounded() {
    let e = err_of(&with(
        minimal(),
        "iothreads",
        serde_json::json!(4_294_967_295_u32),
    ));
    assert!(e.contains("iothreads: must be 0 to 64"), "{e}");
    assert!(
        VmSpec::from_json(&with(minimal(), "iothreads", serde_json::json!(64)).to_string()).is_ok()
    );
}

#[test]
fn numa_distances_follow_acpis_rules() {
    let mut v = minimal();
    v["vcpus"] = serde_json::json!(2);
    v["memory"] = serde_json::json!("128MiB");
    v["cpu"] = serde_json::json!({"numa": [
        {"id": 0, "cpus": "0", "memory": "64MiB", "distances": {"0": 10, "1": 21}},
        {"id": 1, "cpus": "1", "memory": "64MiB"}]});
    let spec = VmSpec::from_json(&v.to_string()).unwrap();
    let cells = &spec.cpu.as_ref().unwrap().numa;
    assert_eq!(cells[0].distance_to(1), 21);
    assert_eq!(cells[1].distance_to(0), 20);
    assert_eq!(cells[1].distance_to(1), 10);
    for (bad, want) in [
        (serde_json::json!({"0": 11}), "10 to the cell itself"),
        (serde_json::json!({"1": 255}), "11 to 254"),
        (serde_json::json!({"7": 20}), "names no cell"),
    ] {
        let mut w = v.clone();
        w["cpu"]["numa"][0]["distances"] = bad;
        let e = err_of(&w);
        assert!(e.contains(want), "{e}");
    }
    let mut w = v.clone();
    w["cpu"]["numa"][1]["id"] = serde_json::json!(2);
    assert!(err_of(&w).contains("0 to N-1"));
}

#[test]
fn numa_cells_cover_cpus_and_memory() {
    let mut v = with(minimal(), "vcpus", serde_json::json!(2));
    v["memory"] = serde_json::json!("128MiB");
    v["cpu"] = serde_json::json!({"numa": [
        {"id": 0, "cpus": "0", "memory": "64MiB"},
        {"id": 1, "cpus": "1", "memory": "64MiB"}]});
    assert!(VmSpec::from_json(&v.to_string()).is_ok());
    let mut w = v.clone();
    w["cpu"]["numa"][1]["memory"] = serde_json::json!("32MiB");
    assert!(err_of(&w).contains("adds up to 96MiB"));
    let mut w = v.clone();
    w["cpu"]["numa"][1]["cpus"] = serde_json::json!("0");
    assert!(err_of(&w).contains("overlaps"));
    let mut w = v.clone();
    w["cpu"]["numa"][1]["cpus"] = serde_json::json!("5");
    assert!(err_of(&w).contains("beyond vcpus"));
    let mut w = v.clone();
    w["cpu"]["numa"][1]["id"] = serde_json::json!(0);
    assert!(err_of(&w).contains("repeats"));
    let mut w = v;
    w["cpu"]["numa"].as_array_mut().unwrap().pop();
    w["memory"] = serde_json::json!("64MiB");
    assert!(err_of(&w).contains("cover every vCPU"));
}

#[test]
fn disks_and_nets() {
    let d = |extra: serde_json::Value| {
        let mut disk = serde_json::json!({"id": "vda", "path": "a.img", "format": "raw"});
        for (k, v) in extra.as_object().unwrap() {
            disk[k] = v.clone();
        }
        with(minimal(), "disks", serde_json::json!([disk]))
    };
    let e = err_of(&with(
        minimal(),
        "disks",
        serde_json::json!([{"id": "vda", "path": "a.img"}]),
    ));
    assert!(e.contains("missing field `format`"), "{e}");
    assert!(err_of(&d(serde_json::json!({"format": "vmdk"}))).contains("unknown variant"));
    assert!(err_of(&d(serde_json::json!({"cache": "fast"}))).starts_with("disks[0].cache"));
    assert!(err_of(&d(serde_json::json!({"iothread": 1}))).contains("iothreads = 0"));
    assert!(err_of(&d(serde_json::json!({"serial": "x".repeat(21)}))).contains("20"));
    let native = VmSpec::from_json(&d(serde_json::json!({"io": "native"})).to_string());
    assert_eq!(native.unwrap().disks[0].io, IoMode::IoUring);
    let e = err_of(&d(serde_json::json!({"format": "qcow2", "io": "io_uring"})));
    assert!(e.contains("for raw images"), "{e}");
    let two = serde_json::json!([{"id": "a", "path": "x", "format": "raw"},
                                 {"id": "a", "path": "y", "format": "raw"}]);
    assert!(err_of(&with(minimal(), "disks", two)).contains("repeats"));

    let n = |net: serde_json::Value| with(minimal(), "nets", serde_json::json!([net]));
    assert!(err_of(&n(serde_json::json!({"id": "n"}))).contains("exactly one"));
    assert!(err_of(&n(
        serde_json::json!({"id": "n", "tap": "t", "bridge": "b"})
    ))
    .contains("exactly one"));
    assert!(err_of(&n(
        serde_json::json!({"id": "n", "tap": "a-very-long-tap-name"})
    ))
    .contains("15 bytes"));
    assert!(err_of(&n(
        serde_json::json!({"id": "n", "tap": "t", "mac": "01:00:00:00:00:00"})
    ))
    .contains("multicast"));
    assert!(err_of(&n(serde_json::json!({"id": "n", "tap": "t", "queues": 0}))).contains("queues"));
}

#[test]
fn serial_modes() {
    let e = err_of(&with(
        minimal(),
        "serial",
        serde_json::json!({"mode": "file"}),
    ));
    assert!(e.contains("required"), "{e}");
    let e = err_of(&with(
        minimal(),
        "serial",
        serde_json::json!({"mode": "tty"}),
    ));
    assert!(e.starts_with("serial.mode"), "{e}");
    let e = err_of(&with(
        minimal(),
        "serial",
        serde_json::json!({"mode": "null", "path": "x"}),
    ));
    assert!(e.contains("only for"), "{e}");
}

#[test]
fn cputune_rules() {
    let t = |tune: serde_json::Value| with(minimal(), "cputune", tune);
    assert!(err_of(&t(serde_json::json!({"vcpupin": {"1": "0"}}))).contains("no such vCPU"));
    assert!(err_of(&t(serde_json::json!({"vcpupin": {"0": "3-1"}}))).contains("backwards"));
    assert!(err_of(&t(serde_json::json!({"iothreadpin": {"1": "0"}}))).contains("iothread"));
    assert!(err_of(&t(serde_json::json!({"shares": 1}))).contains("shares"));
    assert!(err_of(&t(serde_json::json!({"vcpu_period": 10}))).contains("vcpu_period"));
    assert!(err_of(&t(serde_json::json!({"vcpu_quota": 5}))).contains("vcpu_quota"));
    assert!(VmSpec::from_json(&t(serde_json::json!({"vcpu_quota": -1})).to_string()).is_ok());
}

#[test]
fn unsupported_features_are_named() {
    let v = with(minimal(), "hugepages", serde_json::json!("2M"));
    let spec = VmSpec::from_json(&v.to_string()).unwrap();
    let e = spec
        .require_supported("vm-run", &[Feature::Disks])
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "hugepages: hugepage-backed memory is not supported yet by vm-run"
    );
    assert!(spec
        .require_supported("vm-run", &[Feature::Hugepages])
        .is_ok());
}

#[test]
fn relative_paths_resolve_against_the_spec_folder() {
    let mut spec = VmSpec::from_json(FULL).unwrap();
    spec.resolve_paths(Path::new("/vms/demo"));
    assert_eq!(spec.boot.kernel, Path::new("/vms/demo/vmlinux"));
    assert_eq!(spec.disks[0].path, Path::new("/vms/demo/disk.qcow2"));
    assert_eq!(
        spec.serial.unwrap().path.unwrap(),
        Path::new("/vms/demo/console.log")
    );
}
