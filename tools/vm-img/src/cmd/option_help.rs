//! `-o help` (or `-o ?`) for create, convert and amend: the options a
//! format takes, listed as qemu-img lists them (its names, kinds and
//! words, sorted by name), and qemu-img's check of an option list's
//! commas. With a file name, create and convert add the file protocol's
//! options, as qemu-img does; amend lists what amend takes.

use std::fmt::Write as _;

use anyhow::{bail, Result};

use crate::input::names::option_items;

/// One option: its name, the kind qemu-img prints, and its description.
type Opt = (&'static str, &'static str, &'static str);

const SIZE: Opt = ("size", "size", "Virtual disk size");
const EXTENT_SIZE_HINT: Opt = (
    "extent_size_hint",
    "size",
    "Extent size hint for the image file, 0 to disable",
);
const NOCOW: Opt = (
    "nocow",
    "bool (on/off)",
    "Turn off copy-on-write (valid only on btrfs)",
);
const ITER_TIME: Opt = ("iter-time", "num", "Time to spend in PBKDF in milliseconds");
const BACKING_FILE: Opt = ("backing_file", "str", "File name of a base image");
const BACKING_FMT: Opt = ("backing_fmt", "str", "Image format of the base image");
const COMPAT: Opt = (
    "compat",
    "str",
    "Compatibility level (v2 [0.10] or v3 [1.1])",
);
const DATA_FILE: Opt = ("data_file", "str", "File name of an external data file");
const DATA_FILE_RAW: Opt = (
    "data_file_raw",
    "bool (on/off)",
    "The external data file must stay valid as a raw image",
);
const LAZY_REFCOUNTS: Opt = (
    "lazy_refcounts",
    "bool (on/off)",
    "Postpone refcount updates",
);
const REFCOUNT_BITS: Opt = (
    "refcount_bits",
    "num",
    "Width of a reference count entry in bits",
);

/// The file protocol's own options (added when a file name is given).
const FILE: &[Opt] = &[
    EXTENT_SIZE_HINT,
    NOCOW,
    (
        "preallocation",
        "str",
        "Preallocation mode (allowed values: off, falloc, full)",
    ),
    SIZE,
];

const QCOW2: &[Opt] = &[
    BACKING_FILE,
    BACKING_FMT,
    ("cluster_size", "size", "qcow2 cluster size"),
    COMPAT,
    (
        "compression_type",
        "str",
        "Compression method used for image cluster compression",
    ),
    DATA_FILE,
    DATA_FILE_RAW,
    (
        "encrypt.cipher-alg",
        "str",
        "Name of encryption cipher algorithm",
    ),
    (
        "encrypt.cipher-mode",
        "str",
        "Name of encryption cipher mode",
    ),
    (
        "encrypt.format",
        "str",
        "Encrypt the image, format choices: 'aes', 'luks'",
    ),
    (
        "encrypt.hash-alg",
        "str",
        "Name of encryption hash algorithm",
    ),
    (
        "encrypt.iter-time",
        "num",
        "Time to spend in PBKDF in milliseconds",
    ),
    ("encrypt.ivgen-alg", "str", "Name of IV generator algorithm"),
    (
        "encrypt.ivgen-hash-alg",
        "str",
        "Name of IV generator hash algorithm",
    ),
    (
        "encrypt.key-secret",
        "str",
        "ID of secret providing qcow AES key or LUKS passphrase",
    ),
    (
        "encryption",
        "bool (on/off)",
        "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)",
    ),
    ("extended_l2", "bool (on/off)", "Extended L2 tables"),
    LAZY_REFCOUNTS,
    (
        "preallocation",
        "str",
        "Preallocation mode (allowed values: off, metadata, falloc, full)",
    ),
    REFCOUNT_BITS,
    SIZE,
];

const RAW: &[Opt] = &[SIZE];

const LUKS: &[Opt] = &[
    ("cipher-alg", "str", "Name of encryption cipher algorithm"),
    ("cipher-mode", "str", "Name of encryption cipher mode"),
    ("hash-alg", "str", "Name of encryption hash algorithm"),
    ITER_TIME,
    ("ivgen-alg", "str", "Name of IV generator algorithm"),
    (
        "ivgen-hash-alg",
        "str",
        "Name of IV generator hash algorithm",
    ),
    (
        "key-secret",
        "str",
        "ID of the secret that provides the keyslot passphrase",
    ),
    SIZE,
];

/// LUKS key-slot changes, under `encrypt.` for qcow2.
const LUKS_AMEND: &[Opt] = &[
    ITER_TIME,
    (
        "keyslot",
        "num",
        "Select a single keyslot to modify explicitly",
    ),
    (
        "new-secret",
        "str",
        "New secret to set in the matching keyslots. Empty string to erase",
    ),
    (
        "old-secret",
        "str",
        "Select all keyslots that match this password",
    ),
    (
        "state",
        "str",
        "Select new state of affected keyslots (active/inactive)",
    ),
];

/// qemu-img's test of one `-o` argument: not empty, no comma first, and
/// no unescaped comma last (a trailing `,,` is an escaped comma).
pub fn check_lists(opts: &[String]) -> Result<()> {
    for o in opts {
        let trailing = o.len() - o.trim_end_matches(',').len();
        if o.is_empty() || o.starts_with(',') || trailing % 2 == 1 {
            bail!("Invalid option list: {o}");
        }
    }
    Ok(())
}

/// Whether any `-o` list asks for help (`help` or `?` as an item of its
/// own, not inside an escaped value).
pub fn wanted(opts: &[String]) -> bool {
    opts.iter()
        .flat_map(|o| option_items(o))
        .any(|i| i == "help" || i == "?")
}

/// One listing line: qemu-img pads `name=<kind>` to 22 columns.
fn line(out: &mut String, name: &str, kind: &str, help: &str) {
    let left = format!("{name}=<{kind}>");
    let _ = writeln!(out, "  {left:<22} - {help}");
}

fn list(out: &mut String, opts: &[Opt]) {
    for (name, kind, help) in opts {
        line(out, name, kind, help);
    }
}

/// Whether `name` is one of qcow2's creation options (amend says so of
/// one it cannot change, as qemu-img does).
pub fn qcow2_creation_option(name: &str) -> bool {
    QCOW2.iter().any(|(n, _, _)| *n == name)
}

/// create's and convert's listing for format `fmt`; `with_file` when the
/// target file is named (its protocol's options join the format's).
pub fn creation(fmt: &str, with_file: bool) -> Result<String> {
    let own: &[Opt] = match fmt {
        "qcow2" => QCOW2,
        "raw" => RAW,
        "file" => FILE,
        "luks" => LUKS,
        other => bail!("Unknown file format '{other}' (supported: raw, qcow2, luks)"),
    };
    let mut out = String::new();
    if with_file {
        // The format's entry wins where both have one (size, preallocation).
        let mut all: Vec<Opt> = own.to_vec();
        all.extend(FILE.iter().filter(|f| !own.iter().any(|o| o.0 == f.0)));
        all.sort_by_key(|o| o.0);
        out.push_str("Supported options:\n");
        list(&mut out, &all);
    } else {
        let _ = writeln!(out, "Supported {fmt} options:");
        list(&mut out, own);
        out.push_str(
            "\nThe protocol level may support further options.\n\
             Specify the target filename to include those options.\n",
        );
    }
    Ok(out)
}

/// amend's listing for format `fmt`.
pub fn amendment(fmt: &str) -> Result<String> {
    let mut opts: Vec<(String, &str, &str)> = Vec::new();
    match fmt {
        "qcow2" => {
            for o in [BACKING_FILE, BACKING_FMT, COMPAT, DATA_FILE, DATA_FILE_RAW] {
                opts.push((o.0.to_string(), o.1, o.2));
            }
            for o in LUKS_AMEND {
                opts.push((format!("encrypt.{}", o.0), o.1, o.2));
            }
            for o in [LAZY_REFCOUNTS, REFCOUNT_BITS, SIZE] {
                opts.push((o.0.to_string(), o.1, o.2));
            }
        }
        "luks" => opts.extend(LUKS_AMEND.iter().map(|o| (o.0.to_string(), o.1, o.2))),
        "raw" | "file" => bail!("Format driver '{fmt}' does not support option amendment"),
        f if crate::util::read_only_format(f) => {
            bail!("Format driver '{f}' does not support option amendment")
        }
        other => bail!("Unknown file format '{other}' (supported: raw, qcow2, luks)"),
    }
    let mut out = format!("Amend options for '{fmt}':\n");
    for (name, kind, help) in opts {
        line(&mut out, &name, kind, help);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_lists_are_checked_as_qemu_img_checks_them() {
        for good in ["a=1", "a=1,,", "backing_file=x,,help", "help"] {
            assert!(check_lists(&[good.into()]).is_ok(), "{good}");
        }
        for bad in ["", ",help", ",,", "a=1,", "a=1,,,"] {
            assert!(check_lists(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(wanted(&["cluster_size=4k,help".into()]));
        assert!(wanted(&["a=1".into(), "?".into()]));
        assert!(!wanted(&["backing_file=x,,help".into()]));
    }

    #[test]
    fn listings_are_sorted_and_aligned() {
        let with = creation("qcow2", true).unwrap();
        let names: Vec<&str> = with
            .lines()
            .skip(1)
            .map(|l| l.trim_start().split('=').next().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        assert!(with.contains("  size=<size>            - Virtual disk size\n"));
        assert!(with.contains("off, metadata, falloc, full"));
        assert!(!with.contains("off, falloc, full)"));
        assert!(amendment("raw").is_err());
        assert!(creation("vmdk", false).is_err());
    }
}
