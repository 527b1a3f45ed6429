//! create's encryption: LUKS headers for qcow2 (`encrypt.format=luks`)
//! and for the `luks` format, made with a secret from `--object`.
//!
//! QEMU's old AES-CBC qcow2 encryption (`encryption=on`,
//! `encrypt.format=aes`) is made as qemu-img makes it (the header's
//! method; the key is the password and is stored nowhere), so scripts
//! written for qemu-img keep working. QEMU deprecates the scheme (no
//! integrity, predictable IVs) and its system emulators refuse it; vm-run
//! does not run encrypted disks at all.

use std::fmt::Write as _;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use vm_image::crypto::luks;
use vm_image::qcow2::meta::Meta;
use vm_image::Format;

use crate::cli::CreateArgs;
use crate::cmd::options::{FormatOptions, Prealloc};
use crate::secrets::Secrets;
use crate::util::AtomicOutput;

/// Checks qcow2's encryption options and, for LUKS, makes the header
/// area create places (in `o.luks_area`). `name` is the new image's.
pub fn qcow2_encryption(
    name: &str,
    fmt: Format,
    o: &mut FormatOptions,
    secrets: &Secrets,
) -> Result<()> {
    let e = &o.encrypt;
    if fmt != Format::Qcow2 || e.first_bare.is_some() {
        if let Some(k) = e.first_bare.as_deref().or(e.any_key()) {
            bail!("Invalid parameter '{k}'");
        }
        return Ok(());
    }
    let format = match (e.legacy, e.format.as_deref()) {
        (Some(true), None | Some("aes")) | (None | Some(false), Some("aes")) => "aes",
        (Some(true), Some(f)) => {
            bail!("{name}: encryption=on and encrypt.format={f} disagree (encryption=on is aes)")
        }
        (_, Some("luks")) => "luks",
        (_, Some(f)) => bail!("{name}: Invalid encrypt.format '{f}' (luks, aes)"),
        (_, None) if e.any_key().is_some_and(|k| k != "encryption") => {
            bail!("{name}: encrypt.format is required with the other encrypt.* options")
        }
        (_, None) => return Ok(()),
    };
    if o.prealloc.is_some_and(|p| p != Prealloc::Off) {
        bail!("{name}: preallocation of an encrypted image is not supported yet");
    }
    if o.qcow2.data_file.is_some() {
        bail!("{name}: an encrypted image with an external data file is not supported yet");
    }
    // qemu-img says this after its Formatting line, as it says what the
    // format refuses.
    let Some(id) = e.key_secret.as_deref() else {
        o.refused
            .get_or_insert_with(|| "Parameter 'encrypt.key-secret' is required for cipher".into());
        return Ok(());
    };
    let password = secrets.get(id)?;
    if format == "aes" {
        o.aes = true;
        return Ok(());
    }
    let (area, _) = luks::create(password, e.luks()?).with_context(|| name.to_string())?;
    o.luks_area = Some(area);
    Ok(())
}

/// `create -f luks`: a LUKS header, then the (encrypted) disk.
pub fn luks_file(a: &CreateArgs, secrets: &Secrets) -> Result<i32> {
    let name = a.file()?.display().to_string();
    let (o, size) = crate::cmd::create::options_and_size(a, &name)?;
    if let Some(k) = o.encrypt.first_prefixed.as_deref() {
        bail!("Invalid parameter '{k}'");
    }
    if o.qcow2.backing_file.is_some() || a.backing.is_some() {
        bail!("{name}: Backing file not supported for file format 'luks'");
    }
    if o.cluster_size_given || o.compat.is_some() || o.qcow2.data_file.is_some() {
        bail!("{name}: Invalid parameter for format 'luks' (size, preallocation and the LUKS options only)");
    }
    let size = size.ok_or_else(|| anyhow!("Image creation needs a size parameter"))?;
    let size = size.div_ceil(512).saturating_mul(512);
    if !a.common.quiet {
        let mut s = format!("Formatting '{name}', fmt=luks size={size}");
        s += &o.encrypt.describe("");
        let shown =
            (o.refused_prealloc.clone()).or_else(|| o.prealloc.map(|p| p.as_str().to_string()));
        if let Some(p) = shown {
            let _ = write!(s, " preallocation={p}");
        }
        println!("{s}");
    }
    if let Some(e) = &o.refused {
        bail!("{name}: {e}");
    }
    if o.prealloc.is_some_and(|p| p != Prealloc::Off) {
        bail!("{name}: preallocation of a LUKS image is not supported yet");
    }
    let id = o
        .encrypt
        .key_secret
        .as_deref()
        .ok_or_else(|| anyhow!("{name}: Parameter 'key-secret' is required for cipher"))?;
    let (area, _) =
        luks::create(secrets.get(id)?, o.encrypt.luks()?).with_context(|| name.clone())?;
    let path = crate::input::target(a.file()?, None, false)?.0;
    let out = AtomicOutput::create(&path, false)?;
    out.file
        .write_all_at(&area, 0)
        .with_context(|| name.clone())?;
    crate::util::set_output_len(&out.file, area.len() as u64 + size)?;
    out.commit(true)?;
    Ok(0)
}

/// The virtual size of an encrypted qcow2 image, from its header alone
/// (the data path does not open encrypted images yet).
pub fn encrypted_size(path: &Path) -> Option<u64> {
    let file = vm_image::open_image_file(path, false, false).ok()?;
    let h = Meta::open(path, file).ok()?.header;
    (h.crypt_method != 0).then_some(h.size)
}
