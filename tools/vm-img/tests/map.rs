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

/// `cache.direct=on` (QEMU's iotest 253): a raw file whose size is not a
/// whole sector, with data up to its end, maps as qemu-img maps it under
/// O_DIRECT (the cut last sector takes the data's status), and converts
/// to the same bytes.
#[test]
fn a_cut_last_sector_under_o_direct_maps_as_qemu_img() {
    if !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    let p = d.path("cut.raw");
    let mut bytes = vec![0u8; (1 << 20) - 1];
    let tail = bytes.len() - (64 << 10) + 1;
    bytes[tail..].fill(0x5a);
    bytes[..4096].fill(1);
    std::fs::write(&p, &bytes).unwrap();
    let opts = format!(
        "driver=raw,file.driver=file,file.filename={},cache.direct=on",
        p.display()
    );
    let args = ["map", "--output=json", "--image-opts", &opts];
    assert_eq!(ok(&args), qemu_ok(&args));
    let out = d.s("out.raw");
    ok(&["convert", "--image-opts", &opts, "-O", "raw", &out]);
    let mut want = bytes.clone();
    want.push(0);
    assert!(std::fs::read(&out).unwrap() == want);
}
