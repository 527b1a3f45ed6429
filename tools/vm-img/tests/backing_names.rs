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
