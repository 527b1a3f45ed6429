//! `vm-img bench`: qemu-img's bench, judged by what it leaves in the image
//! (qemu-io reads the pattern back, qemu-img check finds it clean) and by
//! saying what qemu-img says before the run.

mod common;
use common::*;

#[test]
fn bench_reads_and_writes_as_qemu_img_bench() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let img = d.s("b.qcow2");
    qemu_ok(&["create", "-q", "-f", "qcow2", &img, "4M"]);
    // 64 KiB writes of byte 7 every 128 KiB from 512 KiB, wrapping at the
    // end: 40 requests cover every even 64 KiB block of the disk.
    let args = [
        "bench",
        "-w",
        "-c",
        "40",
        "-d",
        "4",
        "-s",
        "64k",
        "-S",
        "128k",
        "-o",
        "512k",
        "--pattern=7",
        "--flush-interval=5",
        &img,
    ];
    let ours = ok(&args);
    let mut lines = ours.lines();
    assert_eq!(
        lines.next(),
        Some("Sending 40 write requests, 65536 bytes each, 4 in parallel (starting at offset 524288, step size 131072)")
    );
    assert_eq!(lines.next(), Some("Sending flush every 5 requests"));
    assert!(lines.next().unwrap().starts_with("Run completed in "));
    // What qemu-img says before the same run, on an image of its own.
    let other = d.s("q.qcow2");
    qemu_ok(&["create", "-q", "-f", "qcow2", &other, "4M"]);
    let mut theirs_args = args;
    *theirs_args.last_mut().unwrap() = &other;
    let theirs = qemu_ok(&theirs_args);
    assert_eq!(
        ours.lines().take(2).collect::<Vec<_>>(),
        theirs.lines().take(2).collect::<Vec<_>>()
    );
    qemu_clean(&d.path("b.qcow2"));
    let mut cmds = Vec::new();
    for k in 0..64u64 {
        let pat = if k % 2 == 0 { 7 } else { 0 };
        cmds.push(format!("read -P {pat} {} 64k", k * 64 * 1024));
    }
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io(&d.path("b.qcow2"), "qcow2", &cmds);
    // Reads: the same first line; a request past the end fails the run.
    let read = ["bench", "-c", "100", "-U", &img];
    assert_eq!(ok(&read).lines().next(), qemu_ok(&read).lines().next());
    let (code, out, err) = run(&["bench", "-c", "3", "-s", "64k", "-o", "4M", &img]);
    assert_eq!(code, 1);
    assert!(out.starts_with("Sending 3 read requests"), "{out}");
    assert_eq!(err.trim_end(), "vm-img: Failed request: Input/output error");
}

#[test]
fn bad_bench_options_get_one_line() {
    let d = Dir::new();
    let img = d.s("b.raw");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    for bad in [
        vec!["-c", "-1"],
        vec!["-c", "x"],
        vec!["-d", "0"],
        vec!["-s", "1x"],
        vec!["-S", "-1"],
        vec!["-o", "-5"],
        vec!["--flush-interval=3"],
        vec!["-w", "--pattern=300"],
        vec!["-t", "bogus"],
        vec!["-i", "bogus"],
        vec!["-w", "-U"],
    ] {
        let mut args = vec!["bench", "-f", "raw"];
        args.extend(&bad);
        args.push(&img);
        let (code, out, err) = run(&args);
        assert_eq!(code, 1, "{bad:?}");
        assert!(out.is_empty(), "{bad:?}: {out}");
        assert_eq!(err.lines().count(), 1, "{bad:?}: {err}");
    }
}
