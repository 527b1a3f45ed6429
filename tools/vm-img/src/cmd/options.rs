//! `-o key=value,...` format options, as qemu-img takes them.

use std::fmt::Write as _;

use anyhow::{anyhow, bail, Result};
use vm_image::qcow2::header::CompressionType;
use vm_image::qcow2::writer::CreateOptions;
use vm_spec::{parse_size, BareNumber};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prealloc {
    Off,
    Metadata,
    Falloc,
    Full,
}

impl Prealloc {
    /// A mode as `-o preallocation=` and `resize --preallocation` name it.
    pub fn parse(v: &str) -> Result<Self> {
        Ok(match v {
            "off" => Self::Off,
            "metadata" => Self::Metadata,
            "falloc" => Self::Falloc,
            "full" => Self::Full,
            _ => bail!("Invalid preallocation mode: '{v}'"),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Metadata => "metadata",
            Self::Falloc => "falloc",
            Self::Full => "full",
        }
    }
}

#[derive(Debug, Default)]
pub struct FormatOptions {
    pub qcow2: CreateOptions,
    pub prealloc: Option<Prealloc>,
    pub size: Option<u64>,
    pub cluster_size_given: bool,
    /// A value the format itself refuses (a cluster size): qemu-img says
    /// so only once it has printed create's `Formatting` line.
    pub refused: Option<String>,
    /// Refused values as given, for create's Formatting line (which shows
    /// them before saying no).
    pub refused_cluster_size: Option<u64>,
    pub refused_refcount_bits: Option<String>,
    pub refused_prealloc: Option<String>,
    /// The file's extent size hint (QEMU's file layer; XFS heeds it).
    pub extent_size_hint: Option<u64>,
    /// `compat` as given (create's Formatting line repeats it).
    pub compat: Option<String>,
    /// `compression_type` as given (the Formatting line repeats it).
    pub compression_type: Option<String>,
    /// The file protocol's `nocow` (btrfs: no copy-on-write for the file).
    pub nocow: Option<bool>,
    pub encrypt: Encrypt,
    /// A LUKS header area for create to place (made from `encrypt`).
    pub luks_area: Option<Vec<u8>>,
    /// QEMU's old AES-CBC encryption (`encryption=on`): the header's
    /// method only.
    pub aes: bool,
}

/// Encryption options: qcow2's `encryption` and `encrypt.*`, and the
/// `luks` format's own names (the same keys without the prefix).
#[derive(Debug, Default, Clone)]
pub struct Encrypt {
    /// The old `encryption=on|off`.
    pub legacy: Option<bool>,
    pub format: Option<String>,
    pub key_secret: Option<String>,
    pub cipher_alg: Option<String>,
    pub cipher_mode: Option<String>,
    pub ivgen_alg: Option<String>,
    pub ivgen_hash_alg: Option<String>,
    pub hash_alg: Option<String>,
    pub iter_time: Option<u64>,
    /// The first key given in one form and not the other, for the error
    /// a format gives about a key it does not have.
    pub first_prefixed: Option<String>,
    pub first_bare: Option<String>,
}

impl Encrypt {
    /// What was given, in QEMU's order, with `prefix` before each key.
    pub fn describe(&self, prefix: &str) -> String {
        let mut s = String::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                // Commas doubled, as qemu-img prints string options.
                let _ = write!(s, " {prefix}{k}={}", v.replace(',', ",,"));
            }
        };
        put("format", self.format.clone());
        put("key-secret", self.key_secret.clone());
        put("cipher-alg", self.cipher_alg.clone());
        put("cipher-mode", self.cipher_mode.clone());
        put("ivgen-alg", self.ivgen_alg.clone());
        put("ivgen-hash-alg", self.ivgen_hash_alg.clone());
        put("hash-alg", self.hash_alg.clone());
        put("iter-time", self.iter_time.map(|t| t.to_string()));
        s
    }

    /// The first encryption key given, in either form.
    pub fn any_key(&self) -> Option<&str> {
        self.first_prefixed
            .as_deref()
            .or(self.first_bare.as_deref())
            .or(self.legacy.map(|_| "encryption"))
    }

    /// The LUKS header options these name (QEMU's defaults otherwise:
    /// aes-256, xts, plain64, sha256, 2000 ms).
    pub fn luks(&self) -> Result<vm_image::crypto::luks::CreateOptions> {
        use vm_image::crypto::Hash;
        let key_bytes = match self.cipher_alg.as_deref().unwrap_or("aes-256") {
            "aes-256" => 64,
            "aes-128" => 32,
            other => bail!("cipher algorithm '{other}' is not supported (aes-256, aes-128)"),
        };
        if let Some(m) = self.cipher_mode.as_deref().filter(|&m| m != "xts") {
            bail!("cipher mode '{m}' is not supported (xts)");
        }
        if let Some(g) = self.ivgen_alg.as_deref().filter(|&g| g != "plain64") {
            bail!("IV generator '{g}' is not supported (plain64)");
        }
        let hash = Hash::parse(self.hash_alg.as_deref().unwrap_or("sha256"))?;
        Ok(vm_image::crypto::luks::CreateOptions {
            key_bytes,
            hash,
            iter_time_ms: self.iter_time.unwrap_or(2000),
        })
    }
}

/// Parses all `-o` arguments (each may hold several comma-separated pairs).
pub fn parse(opts: &[String]) -> Result<FormatOptions> {
    let o = parse_for_create(opts)?;
    if let Some(e) = &o.refused {
        bail!("{e}");
    }
    Ok(o)
}

/// As `parse`, with what the format refuses left in `refused`.
pub fn parse_for_create(opts: &[String]) -> Result<FormatOptions> {
    let mut out = FormatOptions::default();
    for arg in opts {
        for item in crate::input::names::option_items(arg) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| anyhow!("Invalid option '{item}': expected key=value"))?;
            apply(&mut out, k.trim(), v.trim())?;
        }
    }
    Ok(out)
}

/// An encryption key without its `encrypt.` prefix, and whether it had one.
fn encrypt_key(k: &str) -> Option<(&str, bool)> {
    const KEYS: [&str; 8] = [
        "format",
        "key-secret",
        "cipher-alg",
        "cipher-mode",
        "ivgen-alg",
        "ivgen-hash-alg",
        "hash-alg",
        "iter-time",
    ];
    match k.strip_prefix("encrypt.") {
        Some(bare) if KEYS.contains(&bare) => Some((bare, true)),
        None if k != "format" && KEYS.contains(&k) => Some((k, false)),
        _ => None,
    }
}

/// QEMU's words for a value its option type does not have.
fn value_refused(key: &str, v: &str) -> String {
    format!("Parameter '{key}' does not accept value '{v}'")
}

fn on_off(k: &str, v: &str) -> Result<bool> {
    match v {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => bail!("Parameter '{k}' expects 'on' or 'off'"),
    }
}

fn apply(o: &mut FormatOptions, k: &str, v: &str) -> Result<()> {
    match k {
        "backing_file" => o.qcow2.backing_file = Some(v.to_string()),
        "backing_fmt" => o.qcow2.backing_format = Some(v.to_string()),
        "size" => {
            o.size = Some(
                parse_size(v, BareNumber::Bytes).map_err(|_| crate::hint::invalid_size_option())?,
            );
        }
        "cluster_size" => {
            let cs = parse_size(v, BareNumber::Bytes)
                .map_err(|e| anyhow!("Parameter 'cluster_size': {e}"))?;
            o.cluster_size_given = true;
            if !cs.is_power_of_two() || !(512..=2 << 20).contains(&cs) {
                o.refused_cluster_size = Some(cs);
                o.refused =
                    Some("Cluster size must be a power of two between 512 and 2048k".into());
                return Ok(());
            }
            o.qcow2.cluster_bits = cs.trailing_zeros();
        }
        "preallocation" => {
            if let Ok(p) = Prealloc::parse(v) {
                o.prealloc = Some(p);
            } else {
                // QEMU's option types refuse it, after create's Formatting
                // line (which shows it).
                o.refused_prealloc = Some(v.to_string());
                o.refused
                    .get_or_insert_with(|| value_refused("preallocation", v));
            }
        }
        "lazy_refcounts" => o.qcow2.lazy_refcounts = on_off(k, v)?,
        "nocow" => o.nocow = Some(on_off(k, v)?),
        "data_file" => o.qcow2.data_file = Some(v.to_string()),
        "data_file_raw" => o.qcow2.data_file_raw = on_off(k, v)?,
        "extent_size_hint" => {
            let hint = parse_size(v, BareNumber::Bytes)
                .map_err(|e| anyhow!("Parameter 'extent_size_hint': {e}"))?;
            if hint > u64::from(u32::MAX) {
                o.refused = Some("Extent size hint is too large".into());
            }
            o.extent_size_hint = Some(hint);
        }
        "compat" => {
            o.compat = Some(v.to_string());
            match v {
                "0.10" | "v2" => o.qcow2.version = 2,
                "1.1" | "v3" => o.qcow2.version = 3,
                // QEMU calls the option `version` inside.
                _ => {
                    o.refused.get_or_insert_with(|| value_refused("version", v));
                }
            }
        }
        "refcount_bits" => match v.parse::<u32>() {
            Ok(bits) if bits.is_power_of_two() && bits <= 64 => {
                o.qcow2.refcount_order = bits.trailing_zeros();
            }
            // The format refuses it: said after create's Formatting line.
            _ => {
                o.refused_refcount_bits = Some(v.to_string());
                o.refused =
                    Some("Refcount width must be a power of two and may not exceed 64 bits".into());
            }
        },
        "extended_l2" => o.qcow2.extended_l2 = on_off(k, v)?,
        "encryption" => o.encrypt.legacy = Some(on_off(k, v)?),
        _ if encrypt_key(k).is_some() => {
            let (bare, prefixed) = encrypt_key(k).expect("checked");
            let e = &mut o.encrypt;
            let first = if prefixed {
                &mut e.first_prefixed
            } else {
                &mut e.first_bare
            };
            first.get_or_insert_with(|| k.to_string());
            let v = Some(v.to_string());
            match bare {
                "format" => e.format = v,
                "key-secret" => e.key_secret = v,
                "cipher-alg" => e.cipher_alg = v,
                "cipher-mode" => e.cipher_mode = v,
                "ivgen-alg" => e.ivgen_alg = v,
                "ivgen-hash-alg" => e.ivgen_hash_alg = v,
                "hash-alg" => e.hash_alg = v,
                _ => {
                    let ms = v.as_deref().and_then(|t| t.parse::<u64>().ok());
                    e.iter_time = Some(ms.ok_or_else(|| {
                        anyhow!("Parameter '{k}' expects a number of milliseconds")
                    })?);
                }
            }
        }
        "compression_type" => {
            o.compression_type = Some(v.to_string());
            o.qcow2.compression_type = match v {
                "zlib" => CompressionType::Zlib,
                "zstd" => CompressionType::Zstd,
                _ => {
                    o.refused
                        .get_or_insert_with(|| value_refused("compression-type", v));
                    return Ok(());
                }
            };
        }
        _ => bail!("Invalid parameter '{k}'"),
    }
    Ok(())
}
