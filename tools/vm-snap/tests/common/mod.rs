//! What vm-snap's tests share: a run folder per test (test-guest's
//! RunDir) with vm-snap itself at hand.
#![allow(dead_code)] // each test file uses its own part

use std::path::Path;
use std::process::Command;

#[allow(unused_imports)]
pub use test_guest::rundir::{contiguous, decode, json};

pub struct Env(test_guest::rundir::RunDir);

impl std::ops::Deref for Env {
    type Target = test_guest::rundir::RunDir;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Env {
    pub fn new() -> Self {
        Self(test_guest::rundir::RunDir::new(Path::new(env!(
            "CARGO_BIN_EXE_vm-snap"
        ))))
    }
    pub fn snap(&self, args: &[&str]) -> (i32, String, String) {
        self.run("vm-snap", args)
    }
    pub fn tool(&self, exe: &Path) -> std::process::Command {
        self.command(exe.file_name().and_then(|n| n.to_str()).expect("a name"))
    }
}

/// Runs `prog` and asserts it succeeds; its stdout.
pub fn ok(prog: &str, args: &[&str]) -> String {
    let (code, out, err) = decode(&Command::new(prog).args(args).output().unwrap());
    assert_eq!(code, 0, "{prog} {args:?}: {out}{err}");
    out
}
