//! QEMU's blkdebug: the same names, rules and errors make vm-img say and
//! write what qemu-img says and writes (convert --salvage's warnings,
//! compare's read error and exit code, a snapshot edit failed half way),
//! a blkdebug backing name is sized through it, and what vm-img does not
//! model is refused in one line.

mod common;

use common::*;

/// stderr of both tools for the same arguments, with the program's name
/// taken off; both exit codes.
fn both(args: &[&str]) -> ((i32, String), (i32, String)) {
    let strip = |e: String| {
        e.lines()
            .map(|l| l.split_once(": ").map_or(l, |(_, r)| r).to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let (c1, _, e1) = run(args);
    let (c2, _, e2) = qemu_img(args);
    ((c1, strip(e1)), (c2, strip(e2)))
}

#[test]
fn salvage_through_blkdebug_as_qemu_img() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    for fmt in ["qcow2", "raw"] {
        let src = d.s(&format!("src.{fmt}"));
        qemu_ok(&["create", "-q", "-f", fmt, &src, "8M"]);
        qemu_io(&d.path(&format!("src.{fmt}")), fmt, &["write -P 42 0 8M"]);
        let rule = |iotype: &str, sector: u64| {
            format!("{{'event': 'none', 'iotype': '{iotype}', 'errno': 5, 'sector': {sector}}}")
        };
        let name = format!(
            "json:{{'driver': 'blkdebug', 'image': {{'driver': '{fmt}', 'file': {{'driver': \
             'file', 'filename': '{src}'}}}}, 'inject-error': [{}, {}, {}, {}]}}",
            rule("block-status", 2 * 2048 + 16),
            rule("read", 3 * 2048 - 128),
            rule("read", 5 * 2048 + 1),
            rule("read", 5 * 2048 + 2),
        );
        let (ours, theirs) = (d.s("ours"), d.s("theirs"));
        let (o, t) = (
            run(&["convert", "--salvage", &name, &ours]),
            qemu_img(&["convert", "--salvage", &name, &theirs]),
        );
        assert_eq!(o.0, 0, "{fmt}: {}", o.2);
        assert_eq!(t.0, 0, "{fmt}: {}", t.2);
        let strip = |e: &str| -> Vec<String> {
            e.lines()
                .map(|l| l.split_once(": ").map_or(l, |x| x.1).to_string())
                .collect()
        };
        // The same warnings; qemu-img's order varies with its parallel
        // reads, so they are compared sorted.
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        assert_eq!(
            sorted(strip(&o.2)),
            sorted(strip(&t.2)),
            "{fmt}: the same warnings"
        );
        assert_eq!(strip(&o.2).len(), 5, "{fmt}: {}", o.2);
        qemu_same(&d.path("ours"), &d.path("theirs"));
        // Without --salvage: one line, no output.
        let (code, _, err) = run(&["convert", &name, &d.s("nothing")]);
        assert_eq!((code, err.lines().count()), (1, 1), "{err}");
        assert!(!d.path("nothing").exists());
    }
}

#[test]
fn compare_and_create_through_blkdebug_as_qemu_img() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let a = d.s("a.qcow2");
    let b = d.s("b.qcow2");
    qemu_ok(&["create", "-q", "-f", "qcow2", &a, "64M"]);
    std::fs::copy(&a, &b).unwrap();
    qemu_io(&d.path("a.qcow2"), "qcow2", &["write -P 7 512 512"]);
    let conf = d.s("blkdebug.conf");
    std::fs::write(
        &conf,
        "[inject-error]\nevent = \"read_aio\"\nerrno = \"5\"\nonce =\"off\"\n",
    )
    .unwrap();
    let name = format!("blkdebug:{conf}:{a}");
    let (ours, theirs) = both(&["compare", "-f", "qcow2", &name, &b]);
    assert_eq!(ours, theirs);
    assert_eq!(ours.0, 4, "{}", ours.1);
    // Only data reads fire read_aio: an image that holds none compares.
    let (ours, theirs) = both(&[
        "compare",
        "-f",
        "qcow2",
        &format!("blkdebug:{conf}:{b}"),
        &b,
    ]);
    assert_eq!((ours.0, theirs.0), (0, 0), "{ours:?} {theirs:?}");

    // A backing file named through blkdebug: sized through it.
    let raw = d.s("base.raw");
    qemu_ok(&["create", "-q", "-f", "raw", &raw, "3M"]);
    let top = d.s("top.qcow2");
    let backing = format!("blkdebug:{conf}:{raw}");
    ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &format!("backing_file={backing},backing_fmt=raw"),
        &top,
    ]);
    let info = qemu_ok(&["info", "-U", &top]);
    assert!(info.contains("virtual size: 3 MiB"), "{info}");

    // An alignment up to the cluster size changes nothing map says.
    let aligned = format!(
        "driver=blkdebug,image.driver=qcow2,image.file.driver=file,image.file.filename={a},align=4k"
    );
    assert_eq!(
        ok(&["map", "--image-opts", &aligned]),
        qemu_ok(&["map", "--image-opts", &aligned])
    );

    // What vm-img does not model: one line each.
    let sector = format!(
        "json:{{'driver': 'qcow2', 'file': {{'driver': 'blkdebug', 'image': {{'driver': \
         'file', 'filename': '{a}'}}, 'inject-error': [{{'event': 'none', 'sector': 1}}]}}}}"
    );
    for args in [
        vec!["map".to_string(), sector],
        vec!["check".to_string(), name.clone()],
        vec!["commit".to_string(), name.clone()],
        // An alignment larger than the image's clusters would change what
        // block status says; it is refused.
        vec![
            "map".to_string(),
            format!(
                "json:{{'driver': 'blkdebug', 'align': 131072, 'image': {{'driver': 'qcow2', \
                 'file': {{'driver': 'file', 'filename': '{a}'}}}}}}"
            ),
        ],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, err) = run(&args);
        assert_eq!((code, err.lines().count()), (1, 1), "{args:?}: {err}");
    }
}

/// snapshot -d through blkdebug, as QEMU's iotest 217 fails it: once the
/// first cluster is being freed every request fails. Both tools, on copies
/// of one image, say the same, leave the same leaks (the snapshot is gone
/// from the table, its clusters still counted), and the same repair
/// mends them. A rule on an event the edit never reaches changes nothing,
/// and one failing every write from the start leaves the image as it was.
#[test]
fn snapshot_edits_through_blkdebug_as_qemu_img() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let base = d.s("base.qcow2");
    qemu_ok(&["create", "-q", "-f", "qcow2", &base, "64M"]);
    qemu_io(&d.path("base.qcow2"), "qcow2", &["write -P 3 0 64k"]);
    qemu_ok(&["snapshot", "-c", "foo", &base]);
    let conf = d.path("blkdebug.conf");
    let copies = |tag: &str| {
        let (a, b) = (
            d.s(&format!("ours-{tag}.qcow2")),
            d.s(&format!("theirs-{tag}.qcow2")),
        );
        std::fs::copy(&base, &a).unwrap();
        std::fs::copy(&base, &b).unwrap();
        (a, b)
    };

    std::fs::write(
        &conf,
        "[inject-error]\nevent = \"cluster_free\"\nerrno = \"5\"\n",
    )
    .unwrap();
    let (ours, theirs) = copies("free");
    let debug = |img: &str| format!("blkdebug:{}:{img}", conf.display());
    let (code, _, err) = run(&["snapshot", "-d", "foo", &debug(&ours)]);
    let (qcode, _, qerr) = qemu_img(&["snapshot", "-d", "foo", &debug(&theirs)]);
    assert_eq!(code, qcode, "{err}");
    assert_eq!(code, 1);
    let without_program = |e: &str| e.replace("vm-img: ", "").replace("qemu-img: ", "");
    assert_eq!(without_program(&err), without_program(&qerr));
    assert!(
        err.contains("Failed to free the cluster and L1 table"),
        "{err}"
    );
    // The same leaks, found the same way by both tools.
    for img in [&ours, &theirs] {
        let (code, out, err) = qemu_img(&["check", img]);
        assert_eq!(code, 3, "{out}{err}");
        assert!(err.contains("Leaked cluster"), "{err}");
        assert_eq!(ok(&["snapshot", "-l", img]), "");
    }
    let leaks = |img: &str| qemu_img(&["check", img]).2;
    assert_eq!(leaks(&ours), leaks(&theirs));
    let (code, out, err) = run(&["check", "-r", "leaks", &ours]);
    assert_eq!(code, 0, "{out}{err}");
    qemu_clean(&d.path("ours-free.qcow2"));

    // An event snapshot -d never reaches: the rule never fires.
    std::fs::write(&conf, "[inject-error]\nevent = \"l1_grow_alloc_table\"\n").unwrap();
    let (ours, _) = copies("quiet");
    ok(&["snapshot", "-d", "foo", &debug(&ours)]);
    assert_eq!(ok(&["snapshot", "-l", &ours]), "");
    qemu_clean(std::path::Path::new(&ours));

    // Every write failing from the start: nothing changes.
    std::fs::write(
        &conf,
        "[inject-error]\nevent = \"none\"\niotype = \"write\"\n",
    )
    .unwrap();
    let (ours, _) = copies("none");
    let before = std::fs::read(&ours).unwrap();
    let (code, _, err) = run(&["snapshot", "-c", "bar", &debug(&ours)]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        std::fs::read(&ours).unwrap() == before,
        "the image is untouched"
    );
}

/// commit empties its overlay as qemu-img does (the same bytes, on copies
/// of one chain), and through blkdebug fails it at each step QEMU's
/// iotest 098 fails it: one line, the guest's data safe in the base, and
/// an image the next `check -r all` mends.
#[test]
fn commit_empties_as_qemu_img_even_when_it_fails() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    // One folder per chain, the same names in each: the overlays record
    // their backing file's name.
    let chain = |tag: &str| {
        std::fs::create_dir(d.path(tag)).unwrap();
        let base = d.s(&format!("{tag}/t.base"));
        let top = d.s(&format!("{tag}/t.qcow2"));
        qemu_ok(&["create", "-q", "-f", "qcow2", &base, "64M"]);
        qemu_io(std::path::Path::new(&base), "qcow2", &["write -P 1 0 1M"]);
        qemu_ok(&[
            "create", "-q", "-f", "qcow2", "-b", "t.base", "-F", "qcow2", &top, "64M",
        ]);
        qemu_io(std::path::Path::new(&top), "qcow2", &["write -P 2 512k 1M"]);
        (base, top)
    };
    let (_, ours) = chain("ours");
    let (_, theirs) = chain("theirs");
    ok(&["commit", &ours]);
    qemu_ok(&["commit", &theirs]);
    let (a, b) = (
        std::fs::read(&ours).unwrap(),
        std::fs::read(&theirs).unwrap(),
    );
    let first = a.iter().zip(&b).position(|(x, y)| x != y);
    assert!(
        a.len() == b.len() && first.is_none(),
        "the emptied overlays differ: {} and {} bytes, first at {first:?}",
        a.len(),
        b.len()
    );
    let conf = d.path("blkdebug.conf");
    for event in [
        "l1_update",
        "empty_image_prepare",
        "reftable_update",
        "refblock_alloc",
    ] {
        std::fs::write(&conf, format!("[inject-error]\nevent = \"{event}\"\n")).unwrap();
        let (base, top) = chain(event);
        let name = format!("blkdebug:{}:{top}", conf.display());
        let (code, _, err) = run(&["commit", &name]);
        assert_eq!(code, 1, "{event}: {err}");
        assert_eq!(err.lines().count(), 1, "{event}: {err}");
        assert!(
            err.contains(&format!("Failed to empty {name}: Input/output error")),
            "{err}"
        );
        // The data is in the base already.
        qemu_io(
            std::path::Path::new(&base),
            "qcow2",
            &["read -P 1 0 512k", "read -P 2 512k 1M"],
        );
        let (code, _, err) = run(&["check", "-r", "all", &top]);
        assert_eq!(code, 0, "{event}: {err}");
        qemu_clean(std::path::Path::new(&top));
        qemu_io(
            std::path::Path::new(&top),
            "qcow2",
            &["read -P 1 0 512k", "read -P 2 512k 1M"],
        );
    }
}

/// A backing file named through blkdebug in a `json:` name (single
/// quotes, as QEMU writes them): the chain opens through it, and commit's
/// writes into it meet its rules, as QEMU's iotest 020 fails a commit.
/// Both tools say the same; without a rule the commit goes through.
#[test]
fn commit_into_a_base_named_through_blkdebug() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let make = |tag: &str, rules: &str| {
        let base = d.s(&format!("{tag}.base"));
        let top = d.s(&format!("{tag}.qcow2"));
        qemu_ok(&["create", "-q", "-f", "qcow2", &base, "1M"]);
        let name = format!(
            "json:{{'driver': 'qcow2', 'file': {{'driver': 'blkdebug', 'inject-error': \
             [{rules}], 'image': {{'driver': 'file', 'filename': '{base}'}}}}}}"
        );
        qemu_ok(&[
            "create", "-q", "-f", "qcow2", "-b", &name, "-F", "qcow2", &top, "1M",
        ]);
        qemu_io(std::path::Path::new(&top), "qcow2", &["write -P 7 0 64k"]);
        (base, top)
    };
    let enospc = "{'event': 'write_aio', 'errno': 28, 'once': true}";
    let (_, ours) = make("ours", enospc);
    let (_, theirs) = make("theirs", enospc);
    let (code, _, err) = run(&["commit", &ours]);
    let (qcode, _, qerr) = qemu_img(&["commit", &theirs]);
    assert_eq!((code, err.lines().count()), (1, 1), "{err}");
    assert_eq!(code, qcode);
    assert_eq!(err.replace("vm-img: ", ""), qerr.replace("qemu-img: ", ""));
    assert!(
        err.contains("Block job failed: No space left on device"),
        "{err}"
    );
    // A rule that never fires: the data reaches the base.
    let (base, top) = make("quiet", "{'event': 'l1_grow_alloc_table', 'errno': 28}");
    ok(&["commit", &top]);
    qemu_io(std::path::Path::new(&base), "qcow2", &["read -P 7 0 64k"]);
}
