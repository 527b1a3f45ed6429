//! `map --output=json` tells what qemu-img's tells: judged against
//! qemu-img's map of the same images.

mod common;
use common::*;

#[test]
fn zero_clusters_with_and_without_a_host_cluster_stay_apart() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let img = d.path("z.qcow2");
    let s = img.to_str().unwrap();
    qemu_ok(&["create", "-q", "-f", "qcow2", s, "1M"]);
    // Zero clusters without a host cluster (-u unmaps), then ones that
    // keep theirs, then data, then the same again the other way round.
    qemu_io(
        &img,
        "qcow2",
        &[
            "write 128k 384k",
            "write -z -u 0 128k",
            "write -z 128k 128k",
            "write -z 384k 128k",
            "write -z -u 512k 128k",
        ],
    );
    let args = ["map", "--output=json", "-f", "qcow2", s];
    let ours = ok(&args);
    assert_eq!(ours, qemu_ok(&args));
    assert!(ours.lines().count() >= 5, "{ours}");
}
