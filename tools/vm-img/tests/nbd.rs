//! NBD exports and the null device as inputs: what the real qemu-nbd
//! serves, vm-img reads as qemu-img reads it (info, map with and without
//! `x-dirty-bitmap`, compare, convert); QEMU's `null-co` reads as
//! qemu-img reads it; and a hostile server gets one error line, never a
//! panic, an allocation it asked for, or data from outside the read.

mod common;

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

use common::fake_nbd::{sector_pattern, serve, Misdeed, EXPORT};
use common::*;

/// A qemu-nbd serving one image read-only on a unix socket.
struct Server;

impl Server {
    fn start(d: &Dir, img: &str, extra: &[&str]) -> NbdServer {
        let mut args = vec!["-r", "-f", "qcow2"];
        args.extend_from_slice(extra);
        NbdServer::start(d, img, &args)
    }
}

/// Both tools' stdout for the same arguments, required equal and successful.
fn same(args: &[&str]) -> String {
    let ours = ok(args);
    let theirs = qemu_ok(args);
    assert_eq!(ours, theirs, "{args:?}");
    ours
}

/// A map without host offsets: convert's qcow2 output keeps its own
/// streaming layout (docs/vm-img.md), so only what is data, zero or
/// absent must match.
fn layout_free(map: &str) -> String {
    map.lines()
        .map(|l| {
            l.split(", \"offset\"")
                .next()
                .unwrap_or(l)
                .trim_end_matches([']', '}'])
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn exports_read_as_qemu_img_reads_them() {
    if !have("qemu-img") || !have("qemu-io") || !have("qemu-nbd") {
        return;
    }
    let d = Dir::new();
    let base = d.s("base.qcow2");
    let top = d.s("top.qcow2");
    qemu_ok(&["create", "-q", "-f", "qcow2", &base, "8M"]);
    qemu_io(&d.path("base.qcow2"), "qcow2", &["write -P 3 0 2M"]);
    qemu_ok(&[
        "create", "-q", "-f", "qcow2", "-b", &base, "-F", "qcow2", &top,
    ]);
    ok(&["bitmap", "--add", &top, "b0"]);
    qemu_io(
        &d.path("top.qcow2"),
        "qcow2",
        &["write -P 9 1M 2M", "write -z 5M 512k", "write -P 1 7M 4k"],
    );
    let s = Server::start(&d, &top, &["-A", "-B", "b0"]);
    let uri = s.uri.as_str();
    same(&["info", uri]);
    same(&["info", "--output=json", uri]);
    same(&["map", uri]);
    same(&["map", "--output=json", "-f", "raw", uri]);
    same(&[
        "map",
        "--output=json",
        &format!("nbd:unix:{}:exportname=exp", s.socket),
    ]);
    let opts = format!(
        "driver=nbd,server.type=unix,server.path={},export=exp",
        s.socket
    );
    same(&["map", "--output=json", "--image-opts", &opts]);
    for ctx in ["qemu:dirty-bitmap:b0", "qemu:allocation-depth"] {
        let o = format!("{opts},x-dirty-bitmap={ctx}");
        let out = same(&["map", "--output=json", "--image-opts", &o]);
        assert!(out.contains("\"data\": false"), "{ctx}: {out}");
    }
    same(&["compare", uri, &top]);
    for (i, args) in [&["-O", "qcow2"][..], &["-O", "raw"], &["-O", "qcow2", "-c"]]
        .iter()
        .enumerate()
    {
        let ours = d.s(&format!("ours{i}"));
        let theirs = d.s(&format!("theirs{i}"));
        let fmt = args[1];
        let mut a = vec!["convert"];
        a.extend_from_slice(args);
        ok(&[&a[..], &[uri, &ours]].concat());
        qemu_ok(&[&a[..], &[uri, &theirs]].concat());
        qemu_same(&d.path(&format!("ours{i}")), &d.path("top.qcow2"));
        let map = |p: &str| layout_free(&qemu_ok(&["map", "--output=json", "-f", fmt, p]));
        if !args.contains(&"-c") {
            assert_eq!(map(&ours), map(&theirs), "{args:?}");
        }
    }
    // A context the server does not have, an export it does not have, and
    // a raw export read as a qcow2: one line each.
    for args in [
        vec![
            "map".to_string(),
            "--image-opts".into(),
            format!("{opts},x-dirty-bitmap=qemu:dirty-bitmap:nope"),
        ],
        vec![
            "map".into(),
            format!("nbd+unix:///nope?socket={}", s.socket),
        ],
        vec!["info".into(), "-f".into(), "qcow2".into(), uri.into()],
    ] {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = run(&a);
        assert_eq!(code, 1, "{a:?}: {out}");
        assert_eq!(err.lines().count(), 1, "{a:?}: {err}");
    }
    // A raw export has nothing to check, as qemu-img says (exit 63).
    let (code, _, err) = run(&["check", uri]);
    assert_eq!(code, qemu_img(&["check", uri]).0, "{err}");
    assert_eq!(code, 63, "{err}");
}

#[test]
fn the_null_device_reads_as_qemu_img_reads_it() {
    if !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    let zeroes = "json:{'driver': 'null-co', 'size': 1048576, 'read-zeroes': true}";
    let plain = "json:{\"driver\": \"null-co\", \"size\": 2097152}";
    same(&["map", "--output=json", zeroes]);
    same(&["map", "--output=json", plain]);
    for (i, (fmt, sparse)) in [
        ("qcow2", "512"),
        ("qcow2", "0"),
        ("raw", "512"),
        ("raw", "0"),
    ]
    .iter()
    .enumerate()
    {
        let ours = d.s(&format!("o{i}"));
        let theirs = d.s(&format!("t{i}"));
        ok(&["convert", "-O", fmt, "-S", sparse, zeroes, &ours]);
        qemu_ok(&["convert", "-O", fmt, "-S", sparse, zeroes, &theirs]);
        let map = |p: &str| layout_free(&qemu_ok(&["map", "--output=json", "-f", fmt, p]));
        assert_eq!(map(&ours), map(&theirs), "{fmt} -S {sparse}");
    }
    // A backing file that is the null device: named, sized, not a file.
    let top = d.s("top.qcow2");
    ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "null-co://",
        "-F",
        "raw",
        &top,
        "1440K",
    ]);
    let info = qemu_ok(&["info", "-U", "--output=json", &top]);
    assert!(
        info.contains("\"backing-filename\": \"null-co://\""),
        "{info}"
    );
    let (code, _, err) = run(&["map", "json:{'driver': 'null-co', 'size': 'lots'}"]);
    assert_eq!((code, err.lines().count()), (1, 1), "{err}");
}

#[test]
fn hostile_servers_get_one_error_line() {
    let d = Dir::new();
    // The control case over TCP: the fake server is a working server.
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        for _ in 0..2 {
            let (c, _) = tcp.accept().unwrap();
            serve(c, Misdeed::Nothing);
        }
    });
    let uri = format!("nbd://127.0.0.1:{port}");
    let out = ok(&["map", "--output=json", &uri]);
    assert!(
        out.contains("\"length\": 1048576") && out.contains("\"data\": true"),
        "{out}"
    );
    let copy = d.s("copy.raw");
    ok(&["convert", "-O", "raw", &uri, &copy]);
    assert_eq!(std::fs::read(&copy).unwrap(), vec![0x5a; EXPORT as usize]);
    h.join().unwrap();
    // Replies out of order, their chunks interleaved: each still lands
    // where its request asked (reads go out several at a time).
    let sock = d.path("reordered");
    let l = UnixListener::bind(&sock).unwrap();
    let h = std::thread::spawn(move || {
        if let Ok((c, _)) = l.accept() {
            serve(c, Misdeed::Reordered);
        }
    });
    let uri = format!("nbd+unix:///?socket={}", sock.display());
    ok(&["convert", "-O", "raw", &uri, &copy]);
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        sector_pattern(0, EXPORT as u32)
    );
    h.join().unwrap();

    for (i, bad) in [
        Misdeed::BadMagic,
        Misdeed::OldStyle,
        Misdeed::HugeOptionReply,
        Misdeed::HugeExport,
        Misdeed::ChunkOutsideRead,
        Misdeed::WrongHandle,
        Misdeed::EmptyExtent,
        Misdeed::ShortRead,
        Misdeed::HangUp,
    ]
    .into_iter()
    .enumerate()
    {
        let sock = d.path(&format!("s{i}"));
        let l = UnixListener::bind(&sock).unwrap();
        let h = std::thread::spawn(move || {
            if let Ok((c, _)) = l.accept() {
                serve(c, bad);
            }
        });
        let uri = format!("nbd+unix:///?socket={}", sock.display());
        let out = d.s(&format!("out{i}"));
        let t0 = Instant::now();
        let (code, _, err) = run(&["convert", "-O", "raw", &uri, &out]);
        assert!(t0.elapsed() < Duration::from_secs(30), "{bad:?} stalled");
        assert_eq!(code, 1, "{bad:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{bad:?}: {err}");
        // Nothing half-made is left where the output was to be.
        assert!(!Path::new(&out).exists(), "{bad:?}");
        h.join().unwrap();
    }
}

/// convert --salvage over an export with a bad sector and a range whose
/// block status fails: the rest is copied, the bad sector reads as zeroes,
/// each failure is one warning, and the exit code is 0. Without
/// --salvage, one error line and no output.
#[test]
fn salvage_goes_on_past_read_errors() {
    let d = Dir::new();
    for (i, bad) in [Misdeed::BadSector(700), Misdeed::BadStatus(4 << 10)]
        .into_iter()
        .enumerate()
    {
        let sock = d.path(&format!("s{i}"));
        let l = UnixListener::bind(&sock).unwrap();
        let h = std::thread::spawn(move || {
            for _ in 0..2 {
                if let Ok((c, _)) = l.accept() {
                    serve(c, bad);
                }
            }
        });
        let uri = format!("nbd+unix:///?socket={}", sock.display());
        let out = d.s(&format!("out{i}"));
        let (code, _, err) = run(&["convert", "-f", "raw", "-O", "raw", &uri, &out]);
        assert_eq!((code, err.lines().count()), (1, 1), "{bad:?}: {err}");
        assert!(!Path::new(&out).exists(), "{bad:?}");
        let (code, _, err) = run(&["convert", "--salvage", "-f", "raw", "-O", "raw", &uri, &out]);
        assert_eq!(code, 0, "{bad:?}: {err}");
        assert!(
            err.lines().count() >= 1
                && err
                    .lines()
                    .all(|l| l.contains("warning: error while reading")),
            "{bad:?}: {err}"
        );
        let data = std::fs::read(&out).unwrap();
        assert_eq!(data.len() as u64, EXPORT);
        if let Misdeed::BadSector(s) = bad {
            let s = s as usize * 512;
            assert!(data[s..s + 512].iter().all(|&b| b == 0), "the bad sector");
            assert!(data[..s].iter().chain(&data[s + 512..]).all(|&b| b == 0x5a));
            assert_eq!(err.lines().count(), 1, "one sector, one warning: {err}");
            assert!(err.contains(&format!("offset {s}")), "{err}");
        } else {
            // Block status failed: narrowed down to the one sector, read
            // as data; said once per pass over the allocation (two, as
            // qemu-img).
            assert!(data.iter().all(|&b| b == 0x5a));
            // The server's own words follow strerror's.
            let want = "warning: error while reading block status at offset 4096: Input/output error: bad!";
            assert_eq!(
                err.lines().filter(|l| l.ends_with(want)).count(),
                2,
                "{err}"
            );
            assert_eq!(err.lines().count(), 2, "{err}");
        }
        h.join().unwrap();
    }
}

/// A qcow2 file exported as it is (qemu-nbd -f raw): info reads its
/// header through the export, named or probed, as qemu-img does (but for
/// the disk size, which neither tool can know over NBD the same way).
#[test]
fn info_describes_a_qcow2_inside_an_export() {
    if !have("qemu-img") || !have("qemu-io") || !have("qemu-nbd") {
        return;
    }
    let d = Dir::new();
    let img = d.s("inner.qcow2");
    qemu_ok(&["create", "-q", "-f", "raw", &d.s("base.raw"), "16M"]);
    qemu_ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compression_type=zstd",
        "-b",
        "base.raw",
        "-F",
        "raw",
        &img,
        "16M",
    ]);
    qemu_io(&d.path("inner.qcow2"), "qcow2", &["write -P 1 0 1M"]);
    let s = Server::start(&d, &img, &["-f", "raw"]);
    let uri = s.uri.as_str();
    let sizeless = |t: String| {
        t.lines()
            .filter(|l| !l.starts_with("disk size") && !l.contains("actual-size"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    for args in [
        vec!["info", uri],
        vec!["info", "-f", "qcow2", uri],
        vec!["info", "--output=json", uri],
    ] {
        assert_eq!(sizeless(ok(&args)), sizeless(qemu_ok(&args)), "{args:?}");
    }
    let out = ok(&["info", uri]);
    assert!(out.contains("(cannot determine actual path)"), "{out}");
    // Its backing file is not opened through the export (qemu-img finds
    // no folder to look for it in either): refused by name.
    let (code, _, err) = run(&["map", uri]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
}
