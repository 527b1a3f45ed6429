//! QEMU's blkdebug driver: errors injected into an image's requests, as
//! scripts test their error paths with (`blkdebug:CONFIG:FILE`, or
//! `driver=blkdebug` with `image`, `inject-error` and `set-state`
//! options).
//!
//! The reading commands read through [`Debug`]: the `none` event (a rule
//! active from the start) and `read_aio` (fired by every data read), the
//! `read` and `block-status` I/O types. `snapshot` edits through the same
//! rules ([`Engine`] as vm-image's `Faults`), where the qcow2 code fires
//! the events QEMU's does on the way (`cluster_free`) and every metadata
//! request is checked. A rule on an event nothing here fires never
//! fires, as in QEMU for a command that does not reach it. `errno`,
//! `sector`, `once` and rule states are taken. A `sector` under a format
//! other than raw (a host sector, which vm-img does not see) is refused.

use std::collections::HashSet;
use std::io;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Result};
use vm_image::host::{Faults, IoKind};
use vm_image::Extent;

use super::Input;

/// The I/O types a rule can name, as bits.
const READ: u8 = 1;
const WRITE: u8 = 1 << 1;
const WRITE_ZEROES: u8 = 1 << 2;
const DISCARD: u8 = 1 << 3;
const FLUSH: u8 = 1 << 4;
const BLOCK_STATUS: u8 = 1 << 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `none`, or the event that activates the rule.
    event: String,
    /// The I/O types it fails (QEMU's default: all but block status).
    iotypes: u8,
    errno: i32,
    sector: Option<u64>,
    once: bool,
    /// Only in this state (0: any).
    state: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetState {
    event: String,
    state: u64,
    new_state: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    inject: Vec<Rule>,
    set_state: Vec<SetState>,
    /// `align`: the request alignment blkdebug imposes.
    pub align: Option<u64>,
}

fn number(what: &str, v: &str) -> Result<u64> {
    v.trim()
        .trim_matches('"')
        .parse()
        .map_err(|_| anyhow!("blkdebug: {what} must be a number, not '{v}'"))
}

fn boolean(what: &str, v: &str) -> Result<bool> {
    match v.trim().trim_matches('"') {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => bail!("blkdebug: {what} must be on or off, not '{v}'"),
    }
}

impl Rules {
    /// One `[inject-error]` or `[set-state]` section's (or option list
    /// entry's) keys.
    fn add(&mut self, section: &str, keys: &[(String, String)]) -> Result<()> {
        let get = |k: &str| keys.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let event = get("event")
            .ok_or_else(|| anyhow!("blkdebug: {section} needs an event"))?
            .trim_matches('"')
            .to_string();
        for (k, _) in keys {
            let known: &[&str] = if section == "inject-error" {
                &[
                    "event",
                    "errno",
                    "sector",
                    "once",
                    "immediately",
                    "state",
                    "iotype",
                ]
            } else {
                &["event", "state", "new_state"]
            };
            if !known.contains(&k.as_str()) {
                bail!("blkdebug: '{k}' is not taken in {section}");
            }
        }
        let state = get("state").map_or(Ok(0), |v| number("state", v))?;
        if section == "set-state" {
            let new_state = get("new_state")
                .ok_or_else(|| anyhow!("blkdebug: set-state needs new_state"))
                .and_then(|v| number("new_state", v))?;
            self.set_state.push(SetState {
                event,
                state,
                new_state,
            });
            return Ok(());
        }
        let iotypes = match get("iotype").map(|v| v.trim_matches('"')) {
            // QEMU's default: every data request, block status not among them.
            None => READ | WRITE | WRITE_ZEROES | DISCARD | FLUSH,
            Some("read") => READ,
            Some("write") => WRITE,
            Some("write-zeroes") => WRITE_ZEROES,
            Some("discard") => DISCARD,
            Some("flush") => FLUSH,
            Some("block-status") => BLOCK_STATUS,
            Some(t) => bail!("blkdebug: unknown iotype '{t}'"),
        };
        let errno = get("errno").map_or(Ok(5), |v| number("errno", v))?;
        let errno = i32::try_from(errno)
            .ok()
            .filter(|&e| e > 0)
            .ok_or_else(|| anyhow!("blkdebug: errno out of range"))?;
        let sector = match get("sector").map(str::trim) {
            None | Some("-1") => None,
            Some(v) => Some(number("sector", v)?),
        };
        self.inject.push(Rule {
            event,
            iotypes,
            errno,
            sector,
            once: get("once").map_or(Ok(false), |v| boolean("once", v))?,
            state,
        });
        Ok(())
    }

    /// A blkdebug config file: `[inject-error]` and `[set-state]` sections
    /// of `key = "value"` lines, `#` comments.
    pub fn parse_config(text: &str) -> Result<Self> {
        let mut rules = Self::default();
        let mut section: Option<(String, Vec<(String, String)>)> = None;
        let flush = |rules: &mut Self, s: Option<(String, Vec<(String, String)>)>| {
            s.map_or(Ok(()), |(name, keys)| rules.add(&name, &keys))
        };
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                flush(&mut rules, section.take())?;
                if name != "inject-error" && name != "set-state" {
                    bail!("blkdebug: unknown section [{name}]");
                }
                section = Some((name.to_string(), Vec::new()));
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| anyhow!("blkdebug: '{line}' is not key = value"))?;
            let (_, keys) = section
                .as_mut()
                .ok_or_else(|| anyhow!("blkdebug: '{line}' is outside a section"))?;
            keys.push((k.trim().to_string(), v.trim().trim_matches('"').to_string()));
        }
        flush(&mut rules, section)?;
        Ok(rules)
    }

    /// `inject-error.N.KEY` and `set-state.N.KEY` options.
    pub fn add_options(&mut self, opts: &[(String, String)]) -> Result<()> {
        for section in ["inject-error", "set-state"] {
            let mut n = 0;
            loop {
                let prefix = format!("{section}.{n}.");
                let keys: Vec<(String, String)> = opts
                    .iter()
                    .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_string(), v.clone())))
                    .collect();
                if keys.is_empty() {
                    break;
                }
                self.add(section, &keys)?;
                n += 1;
            }
        }
        Ok(())
    }

    pub fn has_sector(&self) -> bool {
        self.inject.iter().any(|r| r.sector.is_some())
    }
}

/// Splits blkdebug's own options from its `image`'s (returned with the
/// prefix taken off), and reads its rules.
pub fn from_options(
    text: &str,
    opts: Vec<(String, String)>,
) -> Result<(Rules, Vec<(String, String)>)> {
    let mut rules = Rules::default();
    let mut image = Vec::new();
    let mut own = Vec::new();
    for (k, v) in opts {
        if let Some(sub) = k.strip_prefix("image.") {
            image.push((sub.to_string(), v));
        } else if k == "image" {
            // A bare filename.
            image.push(("filename".to_string(), v));
            image.push(("driver".to_string(), "file".to_string()));
        } else if k.starts_with("inject-error.") || k.starts_with("set-state.") {
            own.push((k, v));
        } else if k == "config" {
            let conf = std::fs::read_to_string(&v)
                .map_err(|e| anyhow!("'{text}': could not read blkdebug config '{v}': {e}"))?;
            let parsed = Rules::parse_config(&conf)?;
            rules.inject.extend(parsed.inject);
            rules.set_state.extend(parsed.set_state);
        } else if k == "align" {
            let a = vm_spec::parse_size(&v, vm_spec::BareNumber::Bytes)
                .map_err(|e| anyhow!("'{text}': blkdebug align: {e}"))?;
            if !a.is_power_of_two() {
                bail!("'{text}': blkdebug align must be a power of two");
            }
            rules.align = Some(a);
        } else if k == "node-name" || k == "read-only" {
        } else {
            bail!("'{text}': blkdebug option '{k}' is not supported");
        }
    }
    rules.add_options(&own)?;
    if image.is_empty() {
        bail!("'{text}': blkdebug needs an image");
    }
    Ok((rules, image))
}

/// The rules' live state: the state number, and the events that fired.
#[derive(Debug)]
pub struct Engine {
    live: Mutex<Live>,
}

#[derive(Debug)]
struct Live {
    rules: Vec<Rule>,
    set_state: Vec<SetState>,
    state: u64,
    fired: HashSet<String>,
}

impl Engine {
    pub fn new(rules: Rules) -> Arc<Self> {
        Arc::new(Self {
            live: Mutex::new(Live {
                rules: rules.inject,
                set_state: rules.set_state,
                state: 1,
                fired: HashSet::new(),
            }),
        })
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `event` happened: its rules are active from now on, and a
    /// set-state rule for it moves the state.
    pub fn fire(&self, event: &str) {
        let mut live = self.live();
        if !live.fired.contains(event) {
            live.fired.insert(event.to_string());
        }
        let state = live.state;
        if let Some(s) = live
            .set_state
            .iter()
            .find(|s| s.event == event && (s.state == 0 || s.state == state))
        {
            live.state = s.new_state;
        }
    }

    /// The error a request of type `kind` (one of the I/O type bits)
    /// meets, if a rule says so.
    fn meet(&self, kind: u8, pos: u64, len: u64) -> io::Result<()> {
        let mut live = self.live();
        let state = live.state;
        let hit = live.rules.iter().position(|r| {
            let active = r.event == "none" || live.fired.contains(&r.event);
            let covers = r
                .sector
                .is_none_or(|s| pos / 512 <= s && s < (pos + len.max(1)).div_ceil(512));
            active && r.iotypes & kind != 0 && covers && (r.state == 0 || r.state == state)
        });
        let Some(i) = hit else {
            return Ok(());
        };
        let errno = live.rules[i].errno;
        if live.rules[i].once {
            live.rules.remove(i);
        }
        Err(io::Error::from_raw_os_error(errno))
    }
}

impl Faults for Engine {
    fn event(&self, name: &str) {
        self.fire(name);
    }

    fn check(&self, kind: IoKind, offset: u64, len: u64) -> io::Result<()> {
        let bit = match kind {
            IoKind::Read => READ,
            IoKind::Write => WRITE,
            IoKind::WriteZeroes => WRITE_ZEROES,
            IoKind::Discard => DISCARD,
            IoKind::Flush => FLUSH,
        };
        self.meet(bit, offset, len)
    }
}

/// The wrapped input, read through the rules.
#[derive(Debug)]
pub struct Debug {
    pub inner: Input,
    name: String,
    engine: Arc<Engine>,
}

impl Debug {
    /// Wraps `inner`. An `align` is taken only where it changes nothing
    /// a reading command sees: block status of a qcow2 image comes in
    /// whole clusters, so an alignment up to the cluster size leaves it as
    /// it is (reads are split, not changed). Elsewhere it is refused.
    pub fn new(inner: Input, rules: Rules, name: String) -> Result<Self> {
        if let Some(align) = rules.align.filter(|&a| a > 1) {
            let cluster = inner
                .image()
                .and_then(vm_image::Image::header)
                .map(vm_image::qcow2::header::Header::cluster_size);
            if cluster.is_none_or(|cs| align > cs) {
                bail!(
                    "'{name}': blkdebug align={align} is taken over a qcow2 image with clusters of \
                     at least that size only"
                );
            }
        }
        Ok(Self {
            inner,
            name,
            engine: Engine::new(rules),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        // A data read fires read_aio first, as QEMU's format drivers do.
        self.engine.fire("read_aio");
        self.engine.meet(READ, pos, buf.len() as u64)?;
        self.inner.read_at(buf, pos)
    }

    pub fn map(&self, start: u64, len: u64) -> io::Result<Vec<Extent>> {
        self.engine.meet(BLOCK_STATUS, start, len)?;
        self.inner.map(start, len)
    }
}

/// Refuses `sector` rules for blkdebug under a format (`None`: one to
/// be probed) other than raw: its sectors are then the file's, not the
/// disk's, which vm-img does not see.
pub fn check_placement(rules: &Rules, format: Option<&str>) -> Result<()> {
    if rules.has_sector() && format != Some("raw") {
        bail!(
            "blkdebug 'sector' rules under a {} image are not supported (they name the file's \
             sectors)",
            format.unwrap_or("probed")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_and_options_as_qemu_takes_them() {
        let r = Rules::parse_config(
            "# comment\n[inject-error]\nevent = \"read_aio\"\nerrno = \"5\"\nonce =\"off\"\n\n[set-state]\nevent = \"read_aio\"\nnew_state = \"2\"\n",
        )
        .unwrap();
        assert_eq!(r.inject.len(), 1);
        assert_eq!(r.inject[0].errno, 5);
        assert!(!r.inject[0].once);
        assert_eq!(r.set_state[0].new_state, 2);
        let o = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter().map(|(a, b)| ((*a).into(), (*b).into())).collect()
        };
        let mut r = Rules::default();
        r.add_options(&o(&[
            ("inject-error.0.event", "none"),
            ("inject-error.0.iotype", "block-status"),
            ("inject-error.0.sector", "32784"),
            ("inject-error.1.event", "none"),
            ("inject-error.1.errno", "28"),
        ]))
        .unwrap();
        assert_eq!(r.inject.len(), 2);
        assert_eq!(r.inject[0].iotypes, BLOCK_STATUS);
        assert_eq!(r.inject[0].sector, Some(32784));
        assert_eq!(r.inject[1].errno, 28);
        for bad in [
            "[inject-error]\nerrno = 5\n",
            "[weird]\nevent = none\n",
            "event = none\n",
            "[inject-error]\nevent = none\nerrno = x\n",
            "[inject-error]\nevent = none\nbogus = 1\n",
        ] {
            assert!(Rules::parse_config(bad).is_err(), "{bad}");
        }
    }
}
