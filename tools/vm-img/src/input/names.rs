//! What a qemu-img filename names: a local file (a path, `file:PATH`,
//! `json:{...}` or, with --image-opts, `driver=FMT,file.filename=PATH`),
//! an NBD export (`nbd://`, `nbd+unix://`, `nbd:`, or the nbd driver's
//! options), or QEMU's null device (`null-co://`, driver `null-co`).
//! Other protocols (blkdebug, ssh, http...) are refused, saying so,
//! never guessed at.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use vm_image::nbd::Address;

use super::{blkdebug, quorum};

/// The null device's size when none is given (QEMU's default).
const NULL_DEFAULT_SIZE: u64 = 1 << 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    File {
        path: PathBuf,
        format: Option<String>,
        /// False when `file.locking=off` says so (qemu-img's `-U`).
        locking: bool,
        /// The `--object secret` id an encrypted image's password is
        /// (`encrypt.key-secret` for qcow2, `key-secret` for luks).
        key_secret: Option<String>,
        /// `cache.direct=on`: opened with O_DIRECT.
        direct: bool,
    },
    Nbd {
        address: Address,
        /// The format over the export (`None`: probed; the nbd driver
        /// alone is `raw`).
        format: Option<String>,
    },
    /// Reads as zeroes (QEMU's null-co reads as whatever its buffer held
    /// unless `read-zeroes` is on; here it is always zeroes), and says so
    /// to block status only when `read-zeroes` is on, as QEMU does.
    Null { size: u64, read_zeroes: bool },
    /// QEMU's blkdebug over `inner`: errors injected as `rules` say.
    Debug {
        inner: Box<Located>,
        rules: blkdebug::Rules,
    },
    /// QEMU's quorum: one disk voted from `children`, read as `format`
    /// (raw; a qcow2 over a quorum is described by info only).
    Quorum {
        children: Vec<Located>,
        settings: quorum::Settings,
        format: Option<String>,
    },
}

impl Located {
    /// The format named over a protocol other than a local file (NBD, a
    /// quorum): info describes a qcow2 header read through it.
    pub fn format_over_protocol(&self) -> Option<&str> {
        match self {
            Self::Nbd { format, .. } | Self::Quorum { format, .. } => format.as_deref(),
            _ => None,
        }
    }

    /// The same protocol, read as a raw disk.
    #[must_use]
    pub fn as_raw(self) -> Self {
        match self {
            Self::Nbd { address, .. } => Self::Nbd {
                address,
                format: Some("raw".into()),
            },
            Self::Quorum {
                children, settings, ..
            } => Self::Quorum {
                children,
                settings,
                format: Some("raw".into()),
            },
            other => other,
        }
    }
}

/// Parses a filename as qemu-img does. `format` is `-f`'s value.
pub fn locate(name: &Path, format: Option<&str>, image_opts: bool) -> Result<Located> {
    let text = name.to_string_lossy();
    let opts: Vec<(String, String)> = if image_opts {
        option_list(&text)?
    } else if let Some(json) = text.strip_prefix("json:") {
        json_options(json)?
    } else if let Some(path) = text.strip_prefix("file:") {
        return Ok(Located::File {
            path: plain_path(path),
            format: format.map(str::to_string),
            locking: true,
            key_secret: None,
            direct: false,
        });
    } else if let Some(rest) = text.strip_prefix("blkdebug:") {
        // blkdebug:[CONFIG]:FILE, the format (-f) over it.
        let (conf, file) = rest
            .split_once(':')
            .ok_or_else(|| anyhow!("'{text}': blkdebug:CONFIG:FILE expected"))?;
        let rules = if conf.is_empty() {
            blkdebug::Rules::default()
        } else {
            let t = std::fs::read_to_string(conf)
                .map_err(|e| anyhow!("'{text}': could not read blkdebug config '{conf}': {e}"))?;
            blkdebug::Rules::parse_config(&t)?
        };
        blkdebug::check_placement(&rules, format)?;
        return Ok(Located::Debug {
            inner: Box::new(Located::File {
                path: plain_path(file),
                format: format.map(str::to_string),
                locking: true,
                key_secret: None,
                direct: false,
            }),
            rules,
        });
    } else if text.starts_with("null-co://") {
        return Ok(Located::Null {
            size: NULL_DEFAULT_SIZE,
            read_zeroes: false,
        });
    } else if Address::is_nbd_name(&text) {
        return Ok(Located::Nbd {
            address: Address::parse(&text).map_err(|e| anyhow!("{e}"))?,
            format: format.map(str::to_string),
        });
    } else {
        return Ok(Located::File {
            path: name.to_path_buf(),
            format: format.map(str::to_string),
            locking: true,
            key_secret: None,
            direct: false,
        });
    };
    from_options(&text, format.map(str::to_string), opts)
}

/// A name given as options (flattened `json:`, or `--image-opts`).
fn from_options(
    text: &str,
    format: Option<String>,
    opts: Vec<(String, String)>,
) -> Result<Located> {
    let mut driver = format;
    let mut key_secret = None;
    let mut rest = Vec::new();
    for (k, v) in opts {
        if k == "driver" {
            driver = Some(v);
        } else {
            rest.push((k, v));
        }
    }
    if driver.as_deref() == Some("blkdebug") {
        // Over its image (a format, or a file read as raw): its sectors
        // are the guest's.
        let (rules, image) = blkdebug::from_options(text, rest)?;
        let inner = from_options(text, None, image)?;
        return Ok(Located::Debug {
            inner: Box::new(inner),
            rules,
        });
    }
    // A protocol driver on top has its options at the top level; a format
    // driver has its protocol's under `file.`.
    let (format, protocol, popts) =
        if let Some(p @ ("file" | "nbd" | "null-co" | "null-aio" | "quorum")) = driver.as_deref() {
            (Some("raw".to_string()), p.to_string(), rest)
        } else {
            let mut protocol = "file".to_string();
            let mut popts = Vec::new();
            for (k, v) in rest {
                match k.strip_prefix("file.") {
                    Some("driver") => protocol = v,
                    Some(sub) => popts.push((sub.to_string(), v)),
                    None if k == "file" => protocol = v,
                    None if k == "filename" => popts.push((k, v)),
                    None if k == "encrypt.key-secret" || k == "key-secret" => key_secret = Some(v),
                    // The file inherits the format node's cache mode.
                    None if k == "cache.direct" => popts.push((k, v)),
                    // Options that change nothing about what is read.
                    None if matches!(
                        k.as_str(),
                        "cache.no-flush" | "read-only" | "force-share" | "node-name"
                    ) => {}
                    None => bail!("'{text}': option '{k}' is not supported"),
                }
            }
            (driver, protocol, popts)
        };
    match protocol.as_str() {
        "file" => file_options(text, format, &popts, key_secret),
        "nbd" => Ok(Located::Nbd {
            address: Address::from_options(text, &popts).map_err(|e| anyhow!("{e}"))?,
            format,
        }),
        "null-co" | "null-aio" => null_options(text, &popts),
        "quorum" => quorum_options(text, format, popts),
        "blkdebug" => {
            // Under a format: it filters the file the format reads.
            let (rules, image) = blkdebug::from_options(text, popts)?;
            let inner = match from_options(text, None, image)? {
                Located::File {
                    path,
                    locking,
                    key_secret: k,
                    direct,
                    ..
                } => Located::File {
                    path,
                    format: format.clone(),
                    locking,
                    key_secret: k.or(key_secret),
                    direct,
                },
                _ => bail!("'{text}': blkdebug under a format must wrap a local file"),
            };
            blkdebug::check_placement(&rules, format.as_deref())?;
            Ok(Located::Debug {
                inner: Box::new(inner),
                rules,
            })
        }
        other => {
            bail!("'{text}': only local files, nbd and null-co can be opened (driver '{other}' is not supported)")
        }
    }
}

fn file_options(
    text: &str,
    format: Option<String>,
    opts: &[(String, String)],
    key_secret: Option<String>,
) -> Result<Located> {
    let mut path = None;
    let mut locking = true;
    let mut direct = false;
    for (k, v) in opts {
        match k.as_str() {
            "filename" => path = Some(PathBuf::from(v)),
            "locking" => locking = !matches!(v.as_str(), "off" | "false"),
            "cache.direct" => direct = matches!(v.as_str(), "on" | "true"),
            // Options that change nothing about what is read.
            "aio" | "node-name" | "cache.no-flush" | "read-only" | "force-share" => {}
            other => bail!("'{text}': option '{other}' is not supported"),
        }
    }
    let path = path.ok_or_else(|| anyhow!("'{text}': no file.filename given"))?;
    Ok(Located::File {
        path,
        format,
        locking,
        key_secret,
        direct,
    })
}

/// The quorum driver's options: its own, and each child's under
/// `children.N.` (N from 0, none left out).
fn quorum_options(
    text: &str,
    format: Option<String>,
    opts: Vec<(String, String)>,
) -> Result<Located> {
    let mut own = Vec::new();
    let mut groups: Vec<Vec<(String, String)>> = Vec::new();
    for (k, v) in opts {
        let Some(rest) = k.strip_prefix("children.") else {
            own.push((k, v));
            continue;
        };
        let (n, key) = rest
            .split_once('.')
            .and_then(|(n, key)| Some((n.parse::<usize>().ok()?, key)))
            .ok_or_else(|| anyhow!("'{text}': quorum child option '{k}' is not understood"))?;
        // A bound on what a name can make us open.
        if n >= 64 {
            bail!("'{text}': quorum takes at most 64 children");
        }
        if groups.len() <= n {
            groups.resize(n + 1, Vec::new());
        }
        groups[n].push((key.to_string(), v));
    }
    if let Some(n) = groups.iter().position(Vec::is_empty) {
        bail!("'{text}': quorum child {n} is missing");
    }
    let settings = quorum::Settings::parse(text, &own)?;
    let children = groups
        .into_iter()
        .map(|g| from_options(text, None, g))
        .collect::<Result<Vec<_>>>()?;
    Ok(Located::Quorum {
        children,
        settings,
        format,
    })
}

fn null_options(text: &str, opts: &[(String, String)]) -> Result<Located> {
    let mut size = NULL_DEFAULT_SIZE;
    let mut read_zeroes = false;
    for (k, v) in opts {
        match k.as_str() {
            "size" => {
                size = v
                    .parse()
                    .map_err(|_| anyhow!("'{text}': size '{v}' is not a number of bytes"))?;
            }
            "read-zeroes" => {
                read_zeroes = match v.as_str() {
                    "true" | "on" => true,
                    "false" | "off" => false,
                    _ => bail!("'{text}': read-zeroes must be true or false"),
                };
            }
            "latency-ns" | "node-name" | "read-only" | "force-share" => {}
            other => bail!("'{text}': option '{other}' is not supported for null-co"),
        }
    }
    Ok(Located::Null { size, read_zeroes })
}

/// `-U` with `--image-opts` that say `force-share=off` asks for two
/// things at once: refused, as qemu-img refuses it.
pub fn share_conflict(name: &Path, image_opts: bool, force_share: bool) -> Result<()> {
    if image_opts && force_share {
        let text = name.to_string_lossy();
        let off = option_items(&text).iter().any(|item| {
            item.split_once('=').is_some_and(|(k, v)| {
                k.trim() == "force-share" && matches!(v.trim(), "off" | "false" | "no")
            })
        });
        if off {
            bail!("--force-share/-U conflicts with image options");
        }
    }
    Ok(())
}

/// A local image's path and format (the format given in the name takes
/// the place of `-f`), for the commands that open local files only.
pub fn target(
    name: &Path,
    format: Option<&str>,
    image_opts: bool,
) -> Result<(PathBuf, Option<String>)> {
    target_with_locking(name, format, image_opts).map(|(p, f, _)| (p, f))
}

/// As `target`, with whether the name allows image locks.
pub fn target_with_locking(
    name: &Path,
    format: Option<&str>,
    image_opts: bool,
) -> Result<(PathBuf, Option<String>, bool)> {
    match locate(name, format, image_opts)? {
        Located::File {
            path,
            format,
            locking,
            ..
        } => Ok((path, format, locking)),
        Located::Nbd { .. } => bail!(
            "'{}': this command opens local files only (info, map, compare, check and convert open NBD exports)",
            name.display()
        ),
        Located::Null { .. } => bail!(
            "'{}': this command opens local files only (null-co is read by map and convert)",
            name.display()
        ),
        Located::Debug { .. } => bail!(
            "'{}': this command opens local files only (blkdebug is taken by info, map, \
             compare, convert, commit and snapshot)",
            name.display()
        ),
        Located::Quorum { .. } => bail!(
            "'{}': this command opens local files only (quorum is read by info, map, compare \
             and convert)",
            name.display()
        ),
    }
}

/// A local file's name as QEMU names it once the protocol is known: a
/// relative name whose first part holds a colon (`image:top.qcow2`, which
/// would read as a protocol) gets `./` in front, so what is printed and
/// what backing names resolve against can be given back as they are.
fn plain_path(path: &str) -> PathBuf {
    let head = path.split('/').next().unwrap_or("");
    if !path.starts_with('/') && head.contains(':') {
        PathBuf::from(format!("./{path}"))
    } else {
        PathBuf::from(path)
    }
}

/// The items of a QEMU option list (`a=1,b=2`), where `,,` stands for a
/// comma inside an item. Empty items are dropped.
pub fn option_items(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut item = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != ',' {
            item.push(c);
        } else if chars.peek() == Some(&',') {
            chars.next();
            item.push(',');
        } else if !item.is_empty() {
            out.push(std::mem::take(&mut item));
        }
    }
    if !item.is_empty() {
        out.push(item);
    }
    out
}

/// `key=value,...` with `,,` for a comma inside a value.
fn option_list(text: &str) -> Result<Vec<(String, String)>> {
    option_items(text)
        .into_iter()
        .map(|item| match item.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => bail!("Invalid option '{item}': expected key=value"),
        })
        .collect()
}

/// Flattens nested JSON objects and lists into dotted keys
/// (`file.filename`, `inject-error.0.event`).
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        // Lists as QEMU's dotted keys: `inject-error.0.event`.
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{prefix}.{i}"), v, out);
            }
        }
        serde_json::Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// A `json:` filename's object, flattened to dotted keys. QEMU's JSON
/// takes single-quoted strings too.
fn json_options(json: &str) -> Result<Vec<(String, String)>> {
    let normal = if json.contains('"') {
        json.to_string()
    } else {
        json.replace('\'', "\"")
    };
    let value: serde_json::Value = serde_json::from_str(&normal)
        .map_err(|e| anyhow!("Could not parse json: filename: {e}"))?;
    let mut out = Vec::new();
    if !value.is_object() {
        bail!("Could not parse json: filename: not an object");
    }
    flatten("", &value, &mut out);
    Ok(out)
}
