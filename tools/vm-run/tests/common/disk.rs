//! Disks for vm-run's tests: images with known contents, qemu-img as the
//! judge, and the test guest run against them.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use test_guest::{fnv, have_kvm, have_tool, pattern};

use super::Env;

pub const DISK_SIZE: usize = 1 << 20;
pub const SECTOR: usize = 512;

pub fn ready() -> bool {
    have_kvm() && have_tool("qemu-img", "qemu-img")
}

/// A raw disk whose every sector differs, so a wrong offset shows.
pub fn base_data() -> Vec<u8> {
    pattern(0x00ba_5e00, DISK_SIZE)
}

pub fn qemu_img(args: &[&str]) -> (i32, String) {
    let out = Command::new("qemu-img").args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

pub fn disk(id: &str, path: &Path, format: &str, extra: &serde_json::Value) -> serde_json::Value {
    let mut d = json!({"id": id, "path": path, "format": format});
    for (k, v) in extra.as_object().unwrap() {
        d[k] = v.clone();
    }
    d
}

/// Runs the guest in `mode` (with arguments) in the foreground with
/// `disks`; returns the guest's line for the mode.
pub fn run_guest(
    e: &Env,
    mode: &str,
    disks: &serde_json::Value,
    extra: &serde_json::Value,
) -> String {
    let mut fields = json!({"disks": disks});
    for (k, v) in extra.as_object().unwrap() {
        fields[k] = v.clone();
    }
    let s = e.spec("blk", mode, &fields);
    let (code, out, err) = e.vm_run(&["start", &s]);
    assert_eq!(code, 0, "{mode}: {err}");
    let word = mode.split(' ').next().unwrap();
    out.lines()
        .find_map(|l| l.strip_prefix("vmtools test guest: "))
        .filter(|l| l.starts_with(word))
        .unwrap_or_else(|| panic!("no {word} line from the guest: {out}{err}"))
        .to_string()
}

pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
}

/// The guest's checksum of `count` sectors from `sector` of `data`.
pub fn sum_of(data: &[u8], sector: usize, count: usize) -> String {
    format!(
        "{:08x}",
        fnv(&data[sector * SECTOR..(sector + count) * SECTOR])
    )
}

/// `data` with the guest's blk-write pattern applied.
pub fn written(mut data: Vec<u8>, seed: u32, sector: usize, count: usize) -> Vec<u8> {
    data[sector * SECTOR..(sector + count) * SECTOR]
        .copy_from_slice(&pattern(seed, count * SECTOR));
    data
}

pub fn write_file(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap();
}

/// A qcow2 overlay on a raw base, with one range the overlay changed
/// (written by qemu-io, so the overlay holds data of its own).
pub fn overlay(e: &Env, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
    let base = e.dir.path().join(format!("{name}-base.raw"));
    write_file(&base, &base_data());
    let top = e.dir.path().join(format!("{name}.qcow2"));
    let (code, out) = qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        base.to_str().unwrap(),
        "-F",
        "raw",
        top.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    let mut expected = base_data();
    if have_tool("qemu-io", "qemu-io") {
        let st = Command::new("qemu-io")
            .args(["-c", "write -P 0xab 4096 8192", top.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(st.status.success());
        expected[4096..12288].fill(0xab);
    }
    (base, top, expected)
}
