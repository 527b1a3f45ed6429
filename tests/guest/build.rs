//! Builds the test guest with the system gcc and ld: 32-bit freestanding C
//! and assembly, linked at 1 MiB, then turned into an ELF64 file (as a
//! vmlinux is) with a PVH note. Its path reaches tests as TEST_GUEST_ELF.

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command) {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e} (install gcc and binutils)"));
    assert!(status.success(), "{shown} failed");
}

fn main() {
    let src = Path::new("guest");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    for f in [
        "main.c",
        "blk.c",
        "net.c",
        "rng.c",
        "guest.h",
        "start.S",
        "guest.ld",
        "start64.S",
        "guest64.ld",
    ] {
        println!("cargo:rerun-if-changed=guest/{f}");
    }
    let cc = |input: &str, obj: &str| {
        run(Command::new("gcc")
            .args([
                "-m32",
                "-ffreestanding",
                "-fno-pic",
                "-fno-pie",
                "-fno-stack-protector",
                "-fno-asynchronous-unwind-tables",
                "-nostdlib",
                "-O2",
                "-Wall",
                "-Werror",
                "-c",
            ])
            .arg(src.join(input))
            .arg("-o")
            .arg(out.join(obj)));
    };
    cc("main.c", "main.o");
    cc("blk.c", "blk.o");
    cc("net.c", "net.o");
    cc("rng.c", "rng.o");
    cc("start.S", "start.o");
    run(Command::new("ld")
        .args([
            "-m",
            "elf_i386",
            "-nostdlib",
            "--no-warn-rwx-segments",
            "-T",
        ])
        .arg(src.join("guest.ld"))
        .arg("-o")
        .arg(out.join("guest32.elf"))
        .arg(out.join("start.o"))
        .arg(out.join("main.o"))
        .arg(out.join("blk.o"))
        .arg(out.join("net.o"))
        .arg(out.join("rng.o")));
    let elf = out.join("guest.elf");
    run(Command::new("objcopy")
        .args(["-O", "elf64-x86-64"])
        .arg(out.join("guest32.elf"))
        .arg(&elf));
    println!("cargo:rustc-env=TEST_GUEST_ELF={}", elf.display());

    // The 64-bit entry guest: assembly only.
    run(Command::new("gcc")
        .args(["-m64", "-c"])
        .arg(src.join("start64.S"))
        .arg("-o")
        .arg(out.join("start64.o")));
    let elf64 = out.join("guest64.elf");
    run(Command::new("ld")
        .args([
            "-m",
            "elf_x86_64",
            "-nostdlib",
            "--no-warn-rwx-segments",
            "-T",
        ])
        .arg(src.join("guest64.ld"))
        .arg("-o")
        .arg(&elf64)
        .arg(out.join("start64.o")));
    println!("cargo:rustc-env=TEST_GUEST64_ELF={}", elf64.display());
}
