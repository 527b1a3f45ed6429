//! `vm-run start --paused` (virsh start --paused): a booted guest runs no
//! instruction until `vm-run resume`, then boots as usual.

use std::time::Duration;

use test_guest::{have_kvm, kvm_lock};

mod common;

use common::{json, Env};

#[test]
fn a_paused_boot_waits_for_resume() {
    if !have_kvm() {
        return;
    }
    let _l = kvm_lock();
    let e = Env::new();
    let s = e.spec("p", "heartbeat", &serde_json::json!({}));
    let (code, out, err) = e.vm_run(&["start", "--detach", "--paused", &s]);
    assert_eq!(code, 0, "{err}");
    let st = json(&out);
    assert_eq!(
        (st["state"].as_str(), st["reason"].as_str()),
        (Some("paused"), Some("booted")),
        "{st}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(e.console("p"), "", "the guest ran before its resume");
    let (code, out, err) = e.vm_run(&["resume", "p"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["state"], "running");
    e.wait_ticks("p", 2);
    e.vm_run(&["kill", "p"]);
}
