//! `convert -c -B`: compressed output over a backing file holds only what
//! the source's top layer holds, zeroes there as zero clusters; judged by
//! qemu-img (compare, check, map) against qemu-img's own `convert -c -B`.

mod common;
use common::*;

#[test]
fn compressed_over_a_backing_file() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let (base, top) = (d.path("base.qcow2"), d.path("top.qcow2"));
    let (b, t) = (base.to_str().unwrap(), top.to_str().unwrap());
    qemu_ok(&["create", "-q", "-f", "qcow2", b, "8M"]);
    qemu_io(&base, "qcow2", &["write -P 1 0 8M"]);
    qemu_ok(&[
        "create", "-q", "-f", "qcow2", "-b", b, "-F", "qcow2", t, "8M",
    ]);
    // Data, zeroes hiding the base, and (in between) what the base holds.
    qemu_io(
        &top,
        "qcow2",
        &["write -P 2 1M 1M", "write -z 3M 512k", "write -P 3 6M 64k"],
    );
    let mut maps = Vec::new();
    for tool in ["ours", "qemu"] {
        let out = d.path(&format!("{tool}.qcow2"));
        let o = out.to_str().unwrap();
        let args = ["convert", "-c", "-O", "qcow2", "-B", b, "-F", "qcow2", t, o];
        if tool == "ours" {
            let (code, _, err) = run(&args);
            assert_eq!(code, 0, "{err}");
        } else {
            qemu_ok(&args);
        }
        qemu_clean(&out);
        qemu_same(&top, &out);
        let map = qemu_ok(&["map", "--output=json", o]);
        // Offsets of compressed data differ with the compressor's output.
        let shape: Vec<String> = map
            .lines()
            .map(|l| {
                l.split(", \"offset\"")
                    .next()
                    .unwrap()
                    .trim_end_matches(['}', ']', ','])
                    .to_string()
            })
            .collect();
        maps.push(shape);
    }
    assert_eq!(maps[0], maps[1], "which clusters the output holds, and how");
}
