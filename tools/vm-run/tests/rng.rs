//! The entropy device (`"rng": true`, virtio-rng): the guest asks it for
//! bytes twice and gets fresh ones each time; a VM without it has none.

use serde_json::json;
use test_guest::{have_kvm, kvm_lock};

mod common;

use common::Env;

#[test]
fn the_guest_reads_fresh_bytes_from_its_entropy_device() {
    if !have_kvm() {
        return;
    }
    let _l = kvm_lock();
    let e = Env::new();
    // Beside a NIC-less, disk-less machine's only device, and after a
    // disk: the guest finds it by its device ID either way.
    let disk = e.dir.path().join("d.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    for extra in [
        json!({"rng": true}),
        json!({"rng": true, "disks": [{"id": "vda", "path": disk, "format": "raw"}]}),
    ] {
        let s = e.spec("rng", "rng-read bytes=4096", &extra);
        let (code, out, err) = e.vm_run(&["start", &s]);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("rng: got 4096 and 4096 bytes, differ"),
            "{extra}: {out}{err}"
        );
    }
    // Without it, the guest finds no such device.
    let s = e.spec("norng", "rng-read", &json!({}));
    let (_, out, err) = e.vm_run(&["start", &s]);
    assert!(
        out.contains("rng: error no virtio-rng device"),
        "{out}{err}"
    );
    // The spec says so when it has one, and only then.
    let s = e.spec("shown", "heartbeat", &json!({"rng": true}));
    let (code, out, err) = e.vm_run(&["start", "--detach", &s]);
    assert_eq!(code, 0, "{err}");
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["spec"]["rng"], true);
    assert_eq!(e.vm_run(&["kill", "shown"]).0, 0);
    let s = e.spec("plain", "heartbeat", &json!({}));
    let (code, out, err) = e.vm_run(&["start", "--detach", &s]);
    assert_eq!(code, 0, "{err}");
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(st["spec"].get("rng").is_none(), "{st}");
    assert_eq!(e.vm_run(&["kill", "plain"]).0, 0);
}
