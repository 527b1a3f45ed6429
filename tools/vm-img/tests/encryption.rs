//! Encrypted images: qcow2 with `encrypt.format=luks` and the `luks`
//! format, made by vm-img with a secret from `--object`, opened by QEMU
//! (qemu-io reads and writes them with the password, and refuses another
//! one), described and measured as qemu-img describes and measures them,
//! checked with the LUKS header counted; AES is refused on purpose, and a
//! forged LUKS header gets one error line.

mod common;

use std::os::unix::fs::FileExt;
use std::process::Command;

use common::*;

const SECRET: &str = "secret,id=sec0,data=astrochicken";
const SECRET64: &str = "secret,id=sec0,data=YXN0cm9jaGlja2Vu,format=base64";

/// qemu-img's output for a command that times PBKDF2: QEMU times it in
/// CPU time, which a busy machine can make fail ("Unable to get accurate
/// CPU usage"); a few tries, then `None` with the reason printed.
fn qemu_luks(args: &[&str]) -> Option<String> {
    for _ in 0..5 {
        let (code, out, err) = qemu_img(args);
        if code == 0 {
            return Some(out);
        }
        assert!(err.contains("CPU usage"), "qemu-img {args:?}: {err}");
    }
    eprintln!("skipped: qemu-img could not time PBKDF2 here (Unable to get accurate CPU usage)");
    None
}

/// qemu-io with the secret over `spec` (an --image-opts list); its output.
fn qemu_io_secret(secret: &str, spec: &str, cmds: &[&str]) -> (i32, String) {
    let mut c = Command::new("qemu-io");
    c.args(["--object", secret, "--image-opts", spec]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let (code, out, err) = decode(&c.output().expect("qemu-io runs"));
    (code, out + &err)
}

#[test]
fn luks_qcow2_images_open_in_qemu_with_their_password_only() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let base = d.s("base.qcow2");
    let opts = "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10";
    let out = ok(&[
        "create", "-f", "qcow2", "--object", SECRET, "-o", opts, &base, "16M",
    ]);
    assert!(
        out.contains("fmt=qcow2 encrypt.format=luks encrypt.key-secret=sec0 encrypt.iter-time=10"),
        "{out}"
    );
    let spec = format!("driver=qcow2,file.filename={base},encrypt.key-secret=sec0");
    let (code, out) = qemu_io_secret(SECRET, &spec, &["write -P 0xa 0 1M", "read -P 0xa 0 1M"]);
    assert!(code == 0 && !out.contains("fail"), "{out}");
    // The same password given base64-encoded opens it too; another does not.
    let (code, out) = qemu_io_secret(SECRET64, &spec, &["read -P 0xa 0 1M"]);
    assert!(code == 0 && !out.contains("fail"), "{out}");
    let (code, out) = qemu_io_secret("secret,id=sec0,data=furby", &spec, &["read 0 512"]);
    assert!(code != 0 && out.contains("Invalid password"), "{out}");

    // described, checked and measured as qemu-img does
    assert_eq!(ok(&["info", &base]), qemu_ok(&["info", &base]));
    assert_eq!(
        ok(&["info", "--output=json", &base]),
        qemu_ok(&["info", "--output=json", &base])
    );
    let check = ok(&["check", &base]);
    assert!(check.contains("No errors were found"), "{check}");
    for size in ["16M", "1G", "0"] {
        let args = [
            "measure", "--object", SECRET, "-O", "qcow2", "-o", opts, "--size", size,
        ];
        if let Some(theirs) = qemu_luks(&args) {
            assert_eq!(ok(&args), theirs, "{size}");
        }
    }

    // An encrypted overlay of it: its size comes from the base's header.
    let top = d.s("top.qcow2");
    let secret1 = "secret,id=sec1,data=furby";
    ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "--object",
        secret1,
        "-o",
        "encrypt.format=luks,encrypt.key-secret=sec1,encrypt.iter-time=10",
        "-b",
        &base,
        "-F",
        "qcow2",
        &top,
    ]);
    let mut c = Command::new("qemu-io");
    c.args(["--object", SECRET, "--object", secret1, "--image-opts"]);
    c.arg(format!(
        "driver=qcow2,file.filename={top},encrypt.key-secret=sec1,backing.driver=qcow2,\
         backing.file.filename={base},backing.encrypt.key-secret=sec0"
    ));
    c.args([
        "-c",
        "write -P 0xe 0 1024",
        "-c",
        "read -P 0xe 0 1024",
        "-c",
        "read -P 0xa 1024 64512",
    ]);
    let (code, out, err) = decode(&c.output().unwrap());
    assert!(code == 0 && !out.contains("fail"), "{out}{err}");

    // Read with the password: converted out and mapped as qemu-img does.
    let (code, out) = qemu_io_secret(SECRET, &spec, &["write -z 2M 128k", "write -P 3 3M 100k"]);
    assert!(code == 0 && !out.contains("fail"), "{out}");
    for (i, fmt) in ["raw", "qcow2"].iter().enumerate() {
        let ours = d.s(&format!("ours{i}"));
        let theirs = d.s(&format!("theirs{i}"));
        for (tool, out) in [("vm-img", &ours), ("qemu-img", &theirs)] {
            let args = [
                "convert",
                "--object",
                SECRET,
                "--image-opts",
                &spec,
                "-O",
                fmt,
                out,
            ];
            if tool == "vm-img" {
                ok(&args);
            } else {
                qemu_ok(&args);
            }
        }
        qemu_same(&d.path(&format!("ours{i}")), &d.path(&format!("theirs{i}")));
    }
    let map = [
        "map",
        "--output=json",
        "--object",
        SECRET,
        "--image-opts",
        &spec,
    ];
    assert_eq!(ok(&map), qemu_ok(&map));
    // Without the password, or with another, one line says why.
    let (code, _, err) = run(&["convert", "-O", "raw", &base, &d.s("plain.raw")]);
    assert_eq!((code, err.lines().count()), (1, 1), "{err}");
    assert!(
        err.contains("encrypted") && err.contains("key-secret"),
        "{err}"
    );
    let (code, _, err) = run(&[
        "map",
        "--object",
        "secret,id=sec0,data=furby",
        "--image-opts",
        &spec,
    ]);
    assert_eq!((code, err.lines().count()), (1, 1), "{err}");
    assert!(err.contains("Invalid password"), "{err}");
}

#[test]
fn luks_files_open_in_qemu() {
    if !have("qemu-io") || !have("qemu-img") {
        return;
    }
    let d = Dir::new();
    let f = d.s("t.luks");
    let out = ok(&[
        "create",
        "-f",
        "luks",
        "--object",
        SECRET,
        "-o",
        "key-secret=sec0",
        "-o",
        "iter-time=10",
        &f,
        "1M",
    ]);
    assert!(
        out.contains("fmt=luks size=1048576 key-secret=sec0 iter-time=10"),
        "{out}"
    );
    // QEMU's layout for aes-256-xts: 2068480 bytes of header, then the disk.
    assert_eq!(std::fs::metadata(&f).unwrap().len(), 2_068_480 + (1 << 20));
    let spec = format!("driver=luks,file.filename={f},key-secret=sec0");
    let (code, out) = qemu_io_secret(SECRET, &spec, &["write -P 5 0 64k", "read -P 5 0 64k"]);
    assert!(code == 0 && !out.contains("fail"), "{out}");
    // The data on disk is not the data written.
    let mut raw = vec![0u8; 512];
    std::fs::File::open(&f)
        .unwrap()
        .read_exact_at(&mut raw, 2_068_480)
        .unwrap();
    assert!(raw.iter().any(|&b| b != 5), "stored in the clear");
    // Read back with the password, as qemu-img reads it.
    let (ours, theirs) = (d.s("ours.raw"), d.s("theirs.raw"));
    ok(&[
        "convert",
        "--object",
        SECRET,
        "--image-opts",
        &spec,
        "-O",
        "raw",
        &ours,
    ]);
    qemu_ok(&[
        "convert",
        "--object",
        SECRET,
        "--image-opts",
        &spec,
        "-O",
        "raw",
        &theirs,
    ]);
    assert_eq!(
        std::fs::read(&ours).unwrap(),
        std::fs::read(&theirs).unwrap()
    );
    assert!(std::fs::read(&ours).unwrap()[..65536]
        .iter()
        .all(|&b| b == 5));
    // Described as qemu-img describes it (probed or named); never probed
    // as raw for reading (its ciphertext is not the disk).
    for args in [
        vec!["info", &f],
        vec!["info", "-f", "luks", &f],
        vec!["info", "--output=json", &f],
    ] {
        assert_eq!(ok(&args), qemu_ok(&args), "{args:?}");
    }
    let (code, _, err) = run(&["convert", "-O", "raw", &f, &d.s("cipher.raw")]);
    assert_eq!((code, err.lines().count()), (1, 1), "{err}");
    assert!(err.contains("LUKS"), "{err}");
    // aes-128 and sha1 are taken too.
    let g = d.s("u.luks");
    ok(&[
        "create",
        "-q",
        "-f",
        "luks",
        "--object",
        SECRET,
        "-o",
        "key-secret=sec0,iter-time=10,cipher-alg=aes-128,hash-alg=sha1",
        &g,
        "64k",
    ]);
    let spec = format!("driver=luks,file.filename={g},key-secret=sec0");
    let (code, out) = qemu_io_secret(SECRET, &spec, &["write -P 6 0 4k", "read -P 6 0 4k"]);
    assert!(code == 0 && !out.contains("fail"), "{out}");
}

#[test]
fn bad_secrets_options_and_headers_get_one_line() {
    let d = Dir::new();
    let img = d.s("x.qcow2");
    let luks = "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10";
    // create -f FMT [--object OBJ] -o OPTS IMG 1M
    let create = |fmt: &'static str, object: Option<&'static str>, opts: &'static str| {
        let mut v = vec!["create", "-f", fmt];
        if let Some(o) = object {
            v.extend(["--object", o]);
        }
        if !opts.is_empty() {
            v.extend(["-o", opts]);
        }
        v
    };
    let aes = "encryption=on";
    let twofish = "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.cipher-alg=twofish-256";
    let cbc = "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.cipher-mode=cbc";
    let refused = [
        // no such secret; no secret named; a bad object
        create("qcow2", None, luks),
        create("qcow2", Some(SECRET), "encrypt.format=luks"),
        create("qcow2", Some("iothread,id=x"), ""),
        create("qcow2", Some("secret,id=s,data=@,format=base64"), ""),
        // AES with no secret named; AES over a data file or preallocated
        create("qcow2", Some(SECRET), aes),
        create(
            "qcow2",
            Some(SECRET),
            "encryption=on,encrypt.key-secret=sec0,preallocation=metadata",
        ),
        create(
            "qcow2",
            Some(SECRET),
            "encrypt.format=aes,encrypt.key-secret=sec0,data_file=x.raw",
        ),
        // ciphers and modes not made; the luks format's keys on qcow2
        create("qcow2", Some(SECRET), twofish),
        create("qcow2", Some(SECRET), cbc),
        create("qcow2", Some(SECRET), "key-secret=sec0"),
        create("raw", Some(SECRET), luks),
    ];
    for args in refused
        .into_iter()
        .map(|mut v| {
            v.extend([img.as_str(), "1M"]);
            v
        })
        .chain([
            // convert into an encrypted image is not there yet
            vec!["convert", "-O", "qcow2", "-o", luks, &img, &img],
        ])
    {
        let (code, _, err) = run(&args);
        assert_eq!(code, 1, "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            !std::path::Path::new(&img).exists(),
            "{args:?} made something"
        );
    }
    // A LUKS header whose key slot points outside its area, or asks for
    // four billion PBKDF2 rounds: described as broken, at once.
    ok(&[
        "create", "-q", "-f", "qcow2", "--object", SECRET, "-o", luks, &img, "1M",
    ]);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    // The header sits right after the L1 table: cluster 4.
    let luks_at = 4 * 65536u64;
    for (at, value) in [(208 + 40, u32::MAX), (208 + 4, u32::MAX)] {
        let mut keep = [0u8; 4];
        f.read_exact_at(&mut keep, luks_at + at).unwrap();
        f.write_all_at(&value.to_be_bytes(), luks_at + at).unwrap();
        let (code, _, err) = run(&["info", &img]);
        assert_eq!((code, err.lines().count()), (1, 1), "{err}");
        assert!(err.contains("key slot 0"), "{err}");
        f.write_all_at(&keep, luks_at + at).unwrap();
    }
    ok(&["info", &img]);

    // An AES-encrypted image (made by older QEMUs): described as qemu-img
    // describes it, not read (one line).
    if !have("qemu-img") {
        return;
    }
    let aes = d.s("aes.qcow2");
    ok(&["create", "-q", "-f", "qcow2", &aes, "1M"]);
    let f = std::fs::OpenOptions::new().write(true).open(&aes).unwrap();
    f.write_all_at(&1u32.to_be_bytes(), 32).unwrap();
    assert_eq!(ok(&["info", &aes]), qemu_ok(&["info", &aes]));
    let (code, _, err) = run(&["convert", "-O", "raw", &aes, &d.s("aes.raw")]);
    assert_eq!((code, err.lines().count()), (1, 1), "{err}");
}

/// QEMU's old AES-CBC qcow2 (made by qemu-img, written by qemu-io) is read
/// with its password to convert out of it: the same bytes and map as
/// qemu-img's; vm-img itself does not make one.
#[test]
fn aes_images_are_made_as_qemu_img_makes_them_and_read_to_convert_out() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let img = d.s("aes.qcow2");
    let secret = "secret,id=sec0,data=hunter2";
    // vm-img makes the image as qemu-img does, byte for byte.
    let create = |img: &str| {
        [
            "create",
            "-q",
            "-f",
            "qcow2",
            "--object",
            secret,
            "-o",
            "encryption=on,encrypt.key-secret=sec0",
            img,
            "8M",
        ]
        .map(str::to_string)
    };
    let theirs_made = d.s("theirs.qcow2");
    qemu_ok(&create(&theirs_made).each_ref().map(String::as_str));
    ok(&create(&img).each_ref().map(String::as_str));
    assert_eq!(
        std::fs::read(&img).unwrap(),
        std::fs::read(&theirs_made).unwrap()
    );
    let spec = format!("driver=qcow2,file.filename={img},encrypt.key-secret=sec0");
    let (code, out) = qemu_io_secret(
        secret,
        &spec,
        &[
            "write -P 5 1000 70k",
            "write -P 9 4M 64k",
            "write -z 6M 64k",
        ],
    );
    assert!(code == 0 && !out.contains("fail"), "{out}");
    assert_eq!(ok(&["info", &img]), qemu_ok(&["info", &img]));
    let (ours, theirs) = (d.s("ours.raw"), d.s("theirs.raw"));
    let convert = |out: &str| {
        [
            "convert",
            "--object",
            secret,
            "--image-opts",
            &spec,
            "-O",
            "raw",
            out,
        ]
        .map(str::to_string)
    };
    let args = convert(&ours);
    ok(&args.each_ref().map(String::as_str));
    let args = convert(&theirs);
    qemu_ok(&args.each_ref().map(String::as_str));
    let data = std::fs::read(&ours).unwrap();
    assert_eq!(data, std::fs::read(&theirs).unwrap());
    assert!(data[1000..1000 + 70 * 1024].iter().all(|&b| b == 5));
    let map = [
        "map",
        "--output=json",
        "--object",
        secret,
        "--image-opts",
        &spec,
    ];
    assert_eq!(ok(&map), qemu_ok(&map));
}

/// Forged fields on the read path, with the right password: a `luks`
/// file whose payload offset lies past its end or inside its header, or
/// whose key slot points past the file; an encrypted qcow2 whose L1 table
/// points past the file. One error line each, no output left behind.
#[test]
fn forged_encrypted_images_are_refused_when_read() {
    let d = Dir::new();
    let luks = d.s("t.luks");
    let qcow2 = d.s("t.qcow2");
    let opts = "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10";
    let make = || {
        let _ = std::fs::remove_file(&luks);
        let _ = std::fs::remove_file(&qcow2);
        ok(&[
            "create",
            "-q",
            "-f",
            "luks",
            "--object",
            SECRET,
            "-o",
            "key-secret=sec0,iter-time=10",
            &luks,
            "1M",
        ]);
        ok(&[
            "create", "-q", "-f", "qcow2", "--object", SECRET, "-o", opts, &qcow2, "1M",
        ]);
    };
    let patch = |path: &str, at: u64, bytes: &[u8]| {
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(bytes, at).unwrap();
    };
    let luks_spec = format!("driver=luks,file.filename={luks},key-secret=sec0");
    let qcow2_spec = format!("driver=qcow2,file.filename={qcow2},encrypt.key-secret=sec0");
    let cases: [(&str, &str, u64, Vec<u8>); 5] = [
        (
            "payload past the end",
            "luks",
            104,
            u32::MAX.to_be_bytes().to_vec(),
        ),
        (
            "payload inside the header",
            "luks",
            104,
            1u32.to_be_bytes().to_vec(),
        ),
        (
            "key slot past the file",
            "luks",
            208 + 40,
            0x00ff_ffffu32.to_be_bytes().to_vec(),
        ),
        // L1 entry 0 (the table is cluster 3): an L2 table past the end.
        (
            "L2 table past the end",
            "qcow2",
            3 * 65536,
            (0x8000_0000_0000_0000u64 | (1 << 40))
                .to_be_bytes()
                .to_vec(),
        ),
        // The LUKS header pointer (extension data after the 112-byte header
        // and its 8-byte extension head): past the end of the file.
        (
            "LUKS header past the end",
            "qcow2",
            120,
            (1u64 << 40).to_be_bytes().to_vec(),
        ),
    ];
    for (what, kind, at, bytes) in cases {
        make();
        let (path, spec) = if kind == "luks" {
            (&luks, &luks_spec)
        } else {
            (&qcow2, &qcow2_spec)
        };
        patch(path, at, &bytes);
        let out = d.s("out.raw");
        let (code, _, err) = run(&[
            "convert",
            "--object",
            SECRET,
            "--image-opts",
            spec,
            "-O",
            "raw",
            &out,
        ]);
        assert_eq!((code, err.lines().count()), (1, 1), "{what}: {err}");
        assert!(!std::path::Path::new(&out).exists(), "{what}");
        let (code, _, err) = run(&["info", path]);
        if code != 0 {
            assert_eq!(err.lines().count(), 1, "{what}: {err}");
        }
    }
}
