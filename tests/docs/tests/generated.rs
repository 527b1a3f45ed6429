//! Man pages and shell completions are generated from every tool's clap
//! definitions and committed; this test fails when they are stale.
//! Regenerate with `VMTOOLS_REGENERATE=1 cargo test -p docs-check`.

use std::fs;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every file that should exist, with its contents.
fn expected() -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for cmd in [
        vm_img::cli::Cli::command(),
        vm_run::cli::Cli::command(),
        vm_pin::cli::Cli::command(),
        vm_net::cli::Cli::command(),
        vm_snap::cli::Cli::command(),
        vm_migrate::cli::Cli::command(),
    ] {
        out.extend(for_tool(&cmd));
    }
    out
}

fn for_tool(cmd: &clap::Command) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let name = cmd.get_name().to_string();
    let mut pages = vec![(name.clone(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let sub_name = format!("{name}-{}", sub.get_name());
        pages.push((sub_name.clone(), sub.clone().name(sub_name)));
    }
    for (page, c) in pages {
        let mut buf = Vec::new();
        clap_mangen::Man::new(c)
            .render(&mut buf)
            .expect("render man page");
        out.push((root().join("man").join(format!("{page}.1")), buf));
    }
    for (shell, file) in [
        (Shell::Bash, format!("{name}.bash")),
        (Shell::Zsh, format!("_{name}")),
        (Shell::Fish, format!("{name}.fish")),
    ] {
        let mut buf = Vec::new();
        let mut c = cmd.clone();
        clap_complete::generate(shell, &mut c, &name, &mut buf);
        out.push((root().join("completions").join(file), buf));
    }
    out
}

#[test]
fn man_pages_and_completions_are_fresh() {
    let regenerate = std::env::var_os("VMTOOLS_REGENERATE").is_some();
    let mut stale = Vec::new();
    for (path, want) in expected() {
        if fs::read(&path).ok().as_deref() == Some(&want[..]) {
            continue;
        }
        if regenerate {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, &want).unwrap();
        } else {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "stale generated files (run VMTOOLS_REGENERATE=1 cargo test -p docs-check): {stale:?}"
    );
}
