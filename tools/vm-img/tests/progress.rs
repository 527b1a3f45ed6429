//! `-p` prints qemu-img's progress lines, so scripts that read qemu-img's
//! progress read ours: judged against qemu-img's own output.

mod common;
use common::*;

#[test]
fn convert_progress_is_qemu_imgs() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    for fmt in ["qcow2", "raw"] {
        let src = d.path(&format!("src.{fmt}"));
        let s = src.to_str().unwrap();
        qemu_ok(&["create", "-q", "-f", fmt, s, "128M"]);
        // Four 1 MiB runs of data among holes: progress counts data
        // copied (25% a run), not the holes passed over.
        qemu_io(
            &src,
            fmt,
            &["write 0 1M", "write 2M 1M", "write 4M 1M", "write 32M 1M"],
        );
        let (ours, theirs) = (d.s(&format!("o.{fmt}")), d.s(&format!("t.{fmt}")));
        let (code, out, err) = run(&["convert", "-p", "-f", fmt, "-O", fmt, s, &ours]);
        assert_eq!(code, 0, "{err}");
        let (_, want, _) = qemu_img(&["convert", "-p", "-f", fmt, "-O", fmt, s, &theirs]);
        assert_eq!(out, want, "convert -p of a {fmt} image");
        assert!(out.contains("    (25.00/100%)\r"), "{out:?}");
        // Nothing to copy: 0% and the end.
        let empty = d.s(&format!("empty.{fmt}"));
        qemu_ok(&["create", "-q", "-f", fmt, &empty, "1M"]);
        let out = ok(&["convert", "-p", "-f", fmt, "-O", fmt, &empty, &d.s("e2")]);
        let (_, want, _) = qemu_img(&["convert", "-p", "-f", fmt, "-O", fmt, &empty, &d.s("e3")]);
        assert_eq!(out, want, "convert -p of an empty {fmt} image");
    }
    // compare: qemu-img's order at the end, 100%, the verdict, the newline.
    let a = d.s("src.qcow2");
    let out = ok(&["compare", "-p", &a, &a]);
    let (_, want, _) = qemu_img(&["compare", "-p", &a, &a]);
    let tail = "    (100.00/100%)\rImages are identical.\n\n";
    assert!(want.ends_with(tail), "qemu-img: {want:?}");
    assert!(
        out.starts_with("    (0.00/100%)\r") && out.ends_with(tail),
        "{out:?}"
    );
}

/// amend -p over a refcount width change: qemu-img's walks over the old
/// refcount table, out of the walks known so far, so the progress steps
/// back when the new structure needs one more placing pass (the image of
/// iotest 112: 66.67% then 50.00%).
#[test]
fn amend_progress_is_qemu_imgs() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    for (create, data, to) in [
        ("refcount_bits=1,cluster_size=512", 58 * 512, "64"),
        ("refcount_bits=16", 3 << 20, "2"),
        ("refcount_bits=16,cluster_size=4096", 5 << 20, "64"),
    ] {
        let mut outs = Vec::new();
        for name in ["o.qcow2", "t.qcow2"] {
            let p = d.path(name);
            let s = p.to_str().unwrap();
            qemu_ok(&["create", "-q", "-f", "qcow2", "-o", create, s, "64M"]);
            qemu_io(&p, "qcow2", &[&format!("write 0 {data}")]);
            outs.push(p);
        }
        let o = format!("refcount_bits={to}");
        let ours = ok(&["amend", "-p", "-o", &o, outs[0].to_str().unwrap()]);
        let (code, theirs, err) = qemu_img(&["amend", "-p", "-o", &o, outs[1].to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            ours, theirs,
            "amend -p -o {o} of an image made with {create}"
        );
        qemu_clean(&outs[0]);
    }
}
