//! VM definitions (virsh define, undefine, edit): a defined VM starts by
//! name and its definition outlives it.

use test_guest::{have_kvm, kvm_lock, GUEST_ELF};

mod common;

use common::{decode, error_line, json, Env};

#[test]
fn definitions() {
    if !have_kvm() {
        return;
    }
    let _l = kvm_lock();
    let e = Env::new();
    let s = e.spec("def", "hello", &serde_json::json!({}));
    assert_eq!(e.vm_run(&["define", &s]).0, 0);
    let stored = json(&std::fs::read_to_string(e.dir.path().join("defs/def.json")).unwrap());
    assert_eq!(
        stored["boot"]["kernel"], GUEST_ELF,
        "stored with absolute paths"
    );
    assert_eq!(
        json(&e.vm_run(&["list", "--all"]).1)[0]["state"],
        "shut off"
    );
    // status answers for a defined VM that is not running, as virsh
    // dominfo does for a shut-off domain: from its definition.
    let (code, out, err) = e.vm_run(&["status", "--json", "def"]);
    assert_eq!(code, 0, "{err}");
    let st = json(&out);
    assert_eq!(st["state"], "shutoff");
    assert_eq!(st["reason"], "defined");
    assert_eq!(st["spec"]["memory"], "64MiB");
    assert!(st.get("pid").is_none(), "no process, no pid: {out}");
    let (code, out, _) = e.vm_run(&["start", "def"]);
    assert_eq!(code, 0);
    assert!(out.contains("hello"));
    // edit: a valid change is saved, an invalid one refused.
    let mut c = e.cmd();
    c.env("EDITOR", "sed -i s/64MiB/32MiB/")
        .args(["edit", "def"]);
    assert!(c.status().unwrap().success());
    assert!(std::fs::read_to_string(e.dir.path().join("defs/def.json"))
        .unwrap()
        .contains("32MiB"));
    let mut c = e.cmd();
    let out = c
        .env("EDITOR", "sed -i s/32MiB/32/")
        .args(["edit", "def"])
        .output()
        .unwrap();
    let (code, _, err) = decode(&out);
    assert_eq!(code, 1);
    assert!(error_line(&err).contains("no unit"), "{err}");
    assert!(std::fs::read_to_string(e.dir.path().join("defs/def.json"))
        .unwrap()
        .contains("32MiB"));
    assert_eq!(e.vm_run(&["undefine", "def"]).0, 0);
    assert_eq!(e.vm_run(&["start", "def"]).0, 1);
    let (code, _, err) = e.vm_run(&["status", "def"]);
    assert_eq!(code, 1);
    assert!(error_line(&err).contains("no VM named 'def'"), "{err}");
}
