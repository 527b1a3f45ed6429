//! NBD exports and the null device as inputs: what the real qemu-nbd
//! serves, vm-img reads as qemu-img reads it (info, map with and without
//! `x-dirty-bitmap`, compare, convert); QEMU's `null-co` reads as
//! qemu-img reads it; and a hostile server gets one error line, never a
//! panic, an allocation it asked for, or data from outside the read.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A qemu-nbd serving one image read-only on a unix socket, killed on drop.
struct Server {
    child: Child,
    pub uri: String,
    pub socket: String,
}

impl Server {
    fn start(d: &Dir, img: &str, extra: &[&str]) -> Self {
        let socket = d.s("nbd.sock");
        let child = Command::new("qemu-nbd")
            .args(["-k", &socket, "-x", "exp", "-r", "-t", "-f", "qcow2"])
            .args(extra)
            .arg(img)
            .stdout(Stdio::null())
            .spawn()
            .expect("qemu-nbd runs");
        let t0 = Instant::now();
        while !Path::new(&socket).exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "qemu-nbd did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            uri: format!("nbd+unix:///exp?socket={socket}"),
            socket,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    // a qcow2 export read as one (the format layer over NBD is missing):
    // one line each.
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
        vec!["check".into(), uri.into()],
    ] {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = run(&a);
        assert_eq!(code, 1, "{a:?}: {out}");
        assert_eq!(err.lines().count(), 1, "{a:?}: {err}");
    }
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

/// What a fake server does once the client asks for the export or reads.
#[derive(Clone, Copy, Debug)]
enum Misdeed {
    /// Serves 1 MiB of 0x5a, correctly (the control case, over TCP).
    Nothing,
    BadMagic,
    OldStyle,
    /// An option reply claiming 1 GiB of data.
    HugeOptionReply,
    /// An export larger than a file offset can be.
    HugeExport,
    /// A data chunk for bytes before the range read.
    ChunkOutsideRead,
    /// A reply for another request.
    WrongHandle,
    /// A block-status extent of no length.
    EmptyExtent,
    /// A read reply that covers half of what was read.
    ShortRead,
    /// Hangs up in the middle of a reply.
    HangUp,
    /// Answers EIO to reads of this sector (and only those).
    BadSector(u64),
    /// Answers EIO to block status of ranges that hold this offset.
    BadStatus(u64),
    /// Not a misdeed: answers large reads two at a time, the later first,
    /// each in two chunks interleaved with the other's (as a server with
    /// several requests in flight may), the bytes telling their sector.
    Reordered,
}

/// What `Misdeed::Reordered` serves at `from`: each byte its sector's
/// number (low byte).
fn sector_pattern(from: u64, len: u32) -> Vec<u8> {
    (0..u64::from(len))
        .map(|i| ((from + i) / 512) as u8)
        .collect()
}

const EXPORT: u64 = 1 << 20;

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes(b[i..i + 4].try_into().unwrap())
}

fn option_reply(s: &mut impl Write, opt: u32, kind: u32, data: &[u8]) {
    let mut m = 0x0003_e889_0455_65a9u64.to_be_bytes().to_vec();
    m.extend_from_slice(&opt.to_be_bytes());
    m.extend_from_slice(&kind.to_be_bytes());
    m.extend_from_slice(&(data.len() as u32).to_be_bytes());
    m.extend_from_slice(data);
    let _ = s.write_all(&m);
}

/// An error chunk's payload: EIO, with a message.
fn eio() -> Vec<u8> {
    let mut p = 5u32.to_be_bytes().to_vec();
    p.extend_from_slice(&4u16.to_be_bytes());
    p.extend_from_slice(b"bad!");
    p
}

fn chunk(flags: u16, kind: u16, handle: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut m = 0x668e_33efu32.to_be_bytes().to_vec();
    m.extend_from_slice(&flags.to_be_bytes());
    m.extend_from_slice(&kind.to_be_bytes());
    m.extend_from_slice(handle);
    m.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    m.extend_from_slice(payload);
    m
}

/// One connection of the fake server: a fixed newstyle handshake with
/// structured replies and base:allocation, then `bad` where it applies.
fn serve(mut s: impl Read + Write, bad: Misdeed) {
    let mut hello = 0x4e42_444d_4147_4943u64.to_be_bytes().to_vec();
    match bad {
        Misdeed::BadMagic => hello = b"NOTNBD!!".to_vec(),
        Misdeed::OldStyle => hello.extend_from_slice(&0x0000_4202_8186_1253_u64.to_be_bytes()),
        _ => hello.extend_from_slice(&0x4948_4156_454f_5054u64.to_be_bytes()),
    }
    hello.extend_from_slice(&3u16.to_be_bytes());
    if s.write_all(&hello).is_err() {
        return;
    }
    let mut flags = [0u8; 4];
    if s.read_exact(&mut flags).is_err() {
        return;
    }
    loop {
        let mut head = [0u8; 16];
        if s.read_exact(&mut head).is_err() {
            return;
        }
        let opt = u32_at(&head, 8);
        let mut data = vec![0u8; u32_at(&head, 12) as usize];
        if s.read_exact(&mut data).is_err() {
            return;
        }
        match opt {
            8 => option_reply(&mut s, opt, 1, &[]),
            10 => {
                let mut ctx = 1u32.to_be_bytes().to_vec();
                ctx.extend_from_slice(b"base:allocation");
                option_reply(&mut s, opt, 4, &ctx);
                option_reply(&mut s, opt, 1, &[]);
            }
            7 => {
                if let Misdeed::HugeOptionReply = bad {
                    let mut m = 0x0003_e889_0455_65a9u64.to_be_bytes().to_vec();
                    m.extend_from_slice(&7u32.to_be_bytes());
                    m.extend_from_slice(&3u32.to_be_bytes());
                    m.extend_from_slice(&(1u32 << 30).to_be_bytes());
                    let _ = s.write_all(&m);
                    return;
                }
                let size = match bad {
                    Misdeed::HugeExport => u64::MAX - 4095,
                    _ => EXPORT,
                };
                let mut info = 0u16.to_be_bytes().to_vec();
                info.extend_from_slice(&size.to_be_bytes());
                info.extend_from_slice(&3u16.to_be_bytes());
                option_reply(&mut s, opt, 3, &info);
                option_reply(&mut s, opt, 1, &[]);
                break;
            }
            _ => option_reply(&mut s, opt, 0x8000_0001, &[]),
        }
    }
    // A read held back by `Reordered` until the next one comes.
    let mut held: Option<(Vec<u8>, u64, u32)> = None;
    loop {
        let mut req = [0u8; 28];
        if s.read_exact(&mut req).is_err() {
            return;
        }
        let kind = u16::from_be_bytes([req[6], req[7]]);
        let mut handle = req[8..16].to_vec();
        let from = u64::from_be_bytes(req[16..24].try_into().unwrap());
        let len = u32_at(&req, 24);
        // Only reads that go out several at a time (large ones) are held:
        // a lone small read would wait for a partner forever.
        if let (0, Misdeed::Reordered, true) = (kind, bad, len >= 128 << 10) {
            let Some((h0, f0, l0)) = held.take() else {
                held = Some((handle, from, len));
                continue;
            };
            // Halves: (handle, offset, bytes, last).
            let halves = |h: &[u8], f: u64, l: u32| {
                let a = l / 2;
                let mut first = f.to_be_bytes().to_vec();
                first.extend(sector_pattern(f, a));
                let mut second = (f + u64::from(a)).to_be_bytes().to_vec();
                second.extend(sector_pattern(f + u64::from(a), l - a));
                (chunk(0, 1, h, &first), chunk(1, 1, h, &second))
            };
            let (a1, a2) = halves(&h0, f0, l0);
            let (b1, b2) = halves(&handle, from, len);
            for c in [b1, a1, a2, b2] {
                if s.write_all(&c).is_err() {
                    return;
                }
            }
            continue;
        }
        let reply = match (kind, bad) {
            (0, Misdeed::ChunkOutsideRead) => {
                let mut p = from.wrapping_sub(512).to_be_bytes().to_vec();
                p.extend(vec![0x5a; len as usize]);
                chunk(1, 1, &handle, &p)
            }
            (0, Misdeed::ShortRead) => {
                let mut p = from.to_be_bytes().to_vec();
                p.extend(vec![0x5a; len as usize / 2]);
                chunk(1, 1, &handle, &p)
            }
            (0, Misdeed::BadSector(bad))
                if from / 512 <= bad && bad < (from + u64::from(len)).div_ceil(512) =>
            {
                chunk(1, 0x8001, &handle, &eio())
            }
            (7, Misdeed::BadStatus(bad)) if from <= bad && bad < from + u64::from(len) => {
                chunk(1, 0x8001, &handle, &eio())
            }
            (0, Misdeed::HangUp) => {
                let mut p = from.to_be_bytes().to_vec();
                p.extend(vec![0x5a; len as usize]);
                let c = chunk(1, 1, &handle, &p);
                let _ = s.write_all(&c[..c.len() / 2]);
                return;
            }
            (0, m) => {
                if let Misdeed::WrongHandle = m {
                    handle[0] ^= 0xff;
                }
                let mut p = from.to_be_bytes().to_vec();
                p.extend(vec![0x5a; len as usize]);
                chunk(1, 1, &handle, &p)
            }
            (7, m) => {
                let mut p = 1u32.to_be_bytes().to_vec();
                let n = if let Misdeed::EmptyExtent = m { 0 } else { len };
                p.extend_from_slice(&n.to_be_bytes());
                p.extend_from_slice(&0u32.to_be_bytes());
                chunk(1, 5, &handle, &p)
            }
            _ => return,
        };
        if s.write_all(&reply).is_err() {
            return;
        }
    }
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
    // Its data is not read through the export yet: refused by name.
    let (code, _, err) = run(&["map", uri]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
}
