//! `-o key=value,...` format options, as qemu-img takes them.

use anyhow::{anyhow, bail, Result};
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
    /// The file's extent size hint (QEMU's file layer; XFS heeds it).
    pub extent_size_hint: Option<u64>,
    /// `compat` as given (create's Formatting line repeats it).
    pub compat: Option<String>,
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
        for item in arg.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| anyhow!("Invalid option '{item}': expected key=value"))?;
            apply(&mut out, k.trim(), v.trim())?;
        }
    }
    Ok(out)
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
                parse_size(v, BareNumber::Bytes).map_err(|e| anyhow!("Parameter 'size': {e}"))?,
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
            o.prealloc = Some(Prealloc::parse(v)?);
        }
        "lazy_refcounts" => o.qcow2.lazy_refcounts = on_off(k, v)?,
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
            o.qcow2.version = match v {
                "0.10" | "v2" => 2,
                "1.1" | "v3" => 3,
                _ => bail!("Invalid compatibility level: '{v}'"),
            };
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
        "extended_l2" => {
            if on_off(k, v)? {
                bail!("extended_l2=on is not supported");
            }
        }
        "compression_type" => {
            if v != "zlib" {
                bail!("compression_type={v} is not supported (zlib only)");
            }
        }
        _ => bail!("Invalid parameter '{k}'"),
    }
    Ok(())
}
