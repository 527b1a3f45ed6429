//! Backing file names in QEMU's other forms: `file:PATH` and a `json:`
//! name over a local file are written into the header as given and read
//! as that file, by vm-img and by qemu-io alike; a json name for another
//! protocol opens nothing.

mod common;

use common::*;

#[test]
fn file_and_json_backing_names_name_local_files() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let base = d.s("base.qcow2");
    ok(&["create", "-q", "-f", "qcow2", &base, "4M"]);
    qemu_io(&d.path("base.qcow2"), "qcow2", &["write -P 7 1M 64k"]);
    let names = [
        format!("file:{base}"),
        format!(
            r#"json:{{"driver": "qcow2", "file": {{"driver": "file", "filename": "{base}"}}}}"#
        ),
    ];
    for (i, name) in names.iter().enumerate() {
        let top = d.s(&format!("top{i}.qcow2"));
        // No size: it comes from the backing file, which must be opened.
        ok(&[
            "create", "-q", "-f", "qcow2", "-b", name, "-F", "qcow2", &top,
        ]);
        let info: serde_json::Value =
            serde_json::from_str(&ok(&["info", "--output=json", &top])).unwrap();
        assert_eq!(info["backing-filename"], name.as_str());
        assert_eq!(info["virtual-size"], 4 << 20);
        qemu_io(
            &d.path(&format!("top{i}.qcow2")),
            "qcow2",
            &["read -P 7 1M 64k", "read -P 0 0 64k"],
        );
        let (code, out, err) = run(&["compare", &base, &top]);
        assert_eq!(code, 0, "{out}{err}");
    }
    // Another protocol is not a local file: nothing is opened in its place.
    let nbd = r#"json:{"driver": "qcow2", "file": {"driver": "nbd", "path": "/tmp/x.sock"}}"#;
    let (code, _, err) = run(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        nbd,
        "-F",
        "qcow2",
        &d.s("t.qcow2"),
    ]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// A header with two backing format extensions (older tools wrote them;
/// the data path refuses such an image): info describes it from the
/// header, as qemu-img does, and `rebase -u -F` rewrites it into one.
#[test]
fn two_backing_format_extensions_are_described_and_repaired() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = Dir::new();
    let base = d.s("base.qcow2");
    let top = d.s("top.qcow2");
    qemu_ok(&["create", "-q", "-f", "qcow2", &base, "4M"]);
    qemu_ok(&[
        "create", "-q", "-f", "qcow2", "-b", &base, "-F", "qcow2", &top,
    ]);
    // A second backing-format extension, "foo", after the first.
    let mut bytes = std::fs::read(d.path("top.qcow2")).unwrap();
    let at = bytes
        .windows(4)
        .position(|w| w == [0xe2, 0x79, 0x2a, 0xca])
        .unwrap();
    let mut ext = vec![0xe2, 0x79, 0x2a, 0xca, 0, 0, 0, 3];
    ext.extend_from_slice(b"foo\0\0\0\0\0");
    // Within the header cluster: everything after moves 16 bytes on (the
    // backing file name too), and 16 of its trailing zeroes go.
    // (after the first one, "qcow2" padded to 8: the last one counts)
    bytes.splice(at + 16..at + 16, ext);
    bytes.drain(65536..65536 + 16);
    let name_at = u64::from_be_bytes(bytes[8..16].try_into().unwrap()) + 16;
    bytes[8..16].copy_from_slice(&name_at.to_be_bytes());
    std::fs::write(d.path("top.qcow2"), &bytes).unwrap();
    let want = qemu_ok(&["info", &top]);
    let got = ok(&["info", &top]);
    assert_eq!(got, want);
    assert!(got.contains("backing file format: foo"), "{got}");
    let (code, _, err) = run(&["rebase", "-u", "-b", &base, &top]);
    assert_eq!(code, 1);
    assert!(err.contains("backing format must be specified"), "{err}");
    ok(&["rebase", "-u", "-b", &base, "-F", "qcow2", &top]);
    qemu_io(&d.path("top.qcow2"), "qcow2", &["read -P 0 0 4k"]);
    qemu_clean(&d.path("top.qcow2"));
}
