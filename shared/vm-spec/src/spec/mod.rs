//! VmSpec: the machine description, the role libvirt's domain XML plays.
//!
//! Parsing is strict: unknown fields are errors that name the field's path,
//! and the guide's rules (topology, NUMA cells, names, units) are checked
//! here. Host-dependent checks (do the CPUs exist, is there a hugepage pool,
//! are the files there) belong to the tool that applies the spec.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{CpuList, MacAddr, Size, VmName};

/// Why a spec was refused. `path` is the JSON path of the bad field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("{path}: {message}")]
    Field { path: String, message: String },
    #[error("not valid JSON: {0}")]
    Syntax(String),
    #[error("{path}: {feature} is not supported yet by {tool}")]
    Unsupported {
        path: String,
        feature: Feature,
        tool: String,
    },
}

fn field(path: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError::Field {
        path: path.into(),
        message: message.into(),
    }
}

/// A capability a spec can ask for, so a tool can refuse what it cannot do
/// yet with a message naming it, instead of silently ignoring the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Feature {
    Disks,
    Nets,
    Hugepages,
    GuestNuma,
    Iothreads,
    VcpuPinning,
    EmulatorPinning,
    IothreadPinning,
    CpuShares,
    CpuQuota,
    NumaTune,
    SerialPty,
    SerialSocket,
    Initrd,
}

impl std::fmt::Display for Feature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Disks => "disks (virtio-blk)",
            Self::Nets => "network interfaces (virtio-net)",
            Self::Hugepages => "hugepage-backed memory",
            Self::GuestNuma => "guest NUMA cells (needs ACPI tables)",
            Self::Iothreads => "iothreads",
            Self::VcpuPinning => "vCPU pinning (cputune.vcpupin)",
            Self::EmulatorPinning => "emulator pinning (cputune.emulatorpin)",
            Self::IothreadPinning => "iothread pinning (cputune.iothreadpin)",
            Self::CpuShares => "CPU shares (cputune.shares)",
            Self::CpuQuota => "CPU bandwidth (cputune period/quota)",
            Self::NumaTune => "host NUMA memory policy (numatune)",
            Self::SerialPty => "a serial console on a pty",
            Self::SerialSocket => "a serial console on a unix socket",
            Self::Initrd => "an initrd",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    pub name: VmName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<uuid::Uuid>,
    pub vcpus: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuConfig>,
    pub memory: Size,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugepages: Option<Size>,
    pub boot: Boot,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Disk>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<Serial>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub iothreads: u32,
    /// A virtio-rng device the guest reads entropy from (libvirt's
    /// `<rng model='virtio'>` with /dev/urandom).
    #[serde(default, skip_serializing_if = "is_false")]
    pub rng: bool,
    #[serde(default = "Action::destroy")]
    pub on_poweroff: Action,
    #[serde(default = "Action::restart")]
    pub on_reboot: Action,
    #[serde(default = "Action::destroy")]
    pub on_crash: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cputune: Option<CpuTune>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numatune: Option<NumaTune>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[allow(clippy::trivially_copy_pass_by_ref)] // as is_zero
fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CpuConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<Topology>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub numa: Vec<NumaCell>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub sockets: u32,
    pub cores: u32,
    pub threads: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumaCell {
    pub id: u32,
    pub cpus: CpuList,
    pub memory: Size,
    /// ACPI SLIT distances to other cells by id (libvirt's `<distances>`):
    /// 10 to itself, 11-254 to others; unnamed ones are 10 and 20.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub distances: BTreeMap<u32, u8>,
}

impl NumaCell {
    /// The distance from this cell to `other` (the defaults as QEMU's).
    pub fn distance_to(&self, other: u32) -> u8 {
        self.distances
            .get(&other)
            .copied()
            .unwrap_or(if other == self.id { 10 } else { 20 })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Boot {
    pub kernel: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
}

/// Disk image formats. Required in a spec and never probed: a guest could
/// write a qcow2 header naming a host file into a raw disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
        }
    }
}

/// The guide's cache modes, with QEMU's meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    /// O_DIRECT, flushes honoured.
    None,
    /// Host page cache, flushes honoured.
    #[default]
    Writeback,
    /// Every write synced.
    Writethrough,
    /// O_DIRECT and every write synced.
    Directsync,
    /// Host page cache, flushes ignored.
    Unsafe,
}

impl CacheMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Writeback => "writeback",
            Self::Writethrough => "writethrough",
            Self::Directsync => "directsync",
            Self::Unsafe => "unsafe",
        }
    }
    /// Opened with O_DIRECT.
    pub fn direct(self) -> bool {
        matches!(self, Self::None | Self::Directsync)
    }
    /// Every write is followed by a sync.
    pub fn write_through(self) -> bool {
        matches!(self, Self::Writethrough | Self::Directsync)
    }
    /// Guest flushes reach the disk.
    pub fn honours_flush(self) -> bool {
        !matches!(self, Self::Unsafe)
    }
}

impl std::str::FromStr for CacheMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "none" => Self::None,
            "writeback" => Self::Writeback,
            "writethrough" => Self::Writethrough,
            "directsync" => Self::Directsync,
            "unsafe" => Self::Unsafe,
            _ => {
                return Err(format!(
                    "invalid cache mode '{s}' (none, writeback, writethrough, directsync, unsafe)"
                ))
            }
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IoMode {
    #[default]
    Threads,
    /// The guide's `native` names the kernel's own asynchronous I/O; here
    /// that is io_uring.
    #[serde(alias = "native")]
    IoUring,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    pub id: String,
    pub path: PathBuf,
    pub format: DiskFormat,
    #[serde(default)]
    pub readonly: bool,
    #[serde(default)]
    pub cache: CacheMode,
    #[serde(default)]
    pub io: IoMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iothread: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_order: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Net {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    #[serde(default = "one")]
    pub queues: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialMode {
    Stdio,
    File,
    Pty,
    Socket,
    Null,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Serial {
    pub mode: SerialMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
}

/// What to do when the guest powers off, reboots or crashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Destroy,
    Restart,
    Preserve,
}

impl Action {
    fn destroy() -> Self {
        Self::Destroy
    }
    fn restart() -> Self {
        Self::Restart
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CpuTune {
    /// vCPU number (as a string, since JSON keys are strings) to host CPUs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vcpupin: BTreeMap<u32, CpuList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emulatorpin: Option<CpuList>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub iothreadpin: BTreeMap<u32, CpuList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shares: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu_period: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu_quota: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emulator_period: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emulator_quota: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NumaMode {
    Strict,
    Preferred,
    Interleave,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumaTune {
    pub mode: NumaMode,
    pub nodeset: CpuList,
}

/// CFS period bounds, as the kernel and libvirt take them (microseconds).
const PERIOD_RANGE: std::ops::RangeInclusive<u64> = 1_000..=1_000_000;
/// CFS quota bounds; -1 (or any negative value) means unlimited.
const QUOTA_MAX: i64 = 17_592_186_044_415;
/// Largest vCPU count: APIC ids are 8 bits in the MP table.
const MAX_VCPUS: u32 = 255;
/// Each iothread is a thread and a cgroup of the VM; far more than any
/// disk layout needs (libvirt setups use a handful).
const MAX_IOTHREADS: u32 = 64;
/// Below this no kernel loads (they go at 1 MiB, the boot tables below).
const MIN_MEMORY: u64 = 2 << 20;

impl VmSpec {
    /// Parses and validates a spec from JSON text.
    pub fn from_json(text: &str) -> Result<Self, SpecError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let spec: VmSpec = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                SpecError::Syntax(inner.to_string())
            } else {
                // serde_json appends " at line L column C"; the path says where.
                let msg = inner.to_string();
                let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
                field(if path == "." { "spec".into() } else { path }, msg)
            }
        })?;
        // One document: anything after it is a mistake (two specs pasted
        // together, a stray brace), not something to ignore.
        de.end()
            .map_err(|e| SpecError::Syntax(format!("after the spec: {e}")))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Pretty JSON, as `define` stores it.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("a VmSpec always serialises")
    }

    /// Every feature this spec asks for.
    pub fn features(&self) -> Vec<(Feature, String)> {
        let mut out = Vec::new();
        let mut add = |f: Feature, p: &str| out.push((f, p.to_string()));
        if !self.disks.is_empty() {
            add(Feature::Disks, "disks");
        }
        if !self.nets.is_empty() {
            add(Feature::Nets, "nets");
        }
        if self.hugepages.is_some() {
            add(Feature::Hugepages, "hugepages");
        }
        if self.cpu.as_ref().is_some_and(|c| !c.numa.is_empty()) {
            add(Feature::GuestNuma, "cpu.numa");
        }
        if self.iothreads > 0 {
            add(Feature::Iothreads, "iothreads");
        }
        if self.boot.initrd.is_some() {
            add(Feature::Initrd, "boot.initrd");
        }
        match self.serial.as_ref().map(|s| s.mode) {
            Some(SerialMode::Pty) => add(Feature::SerialPty, "serial.mode"),
            Some(SerialMode::Socket) => add(Feature::SerialSocket, "serial.mode"),
            _ => {}
        }
        if let Some(t) = &self.cputune {
            if !t.vcpupin.is_empty() {
                add(Feature::VcpuPinning, "cputune.vcpupin");
            }
            if t.emulatorpin.is_some() {
                add(Feature::EmulatorPinning, "cputune.emulatorpin");
            }
            if !t.iothreadpin.is_empty() {
                add(Feature::IothreadPinning, "cputune.iothreadpin");
            }
            if t.shares.is_some() {
                add(Feature::CpuShares, "cputune.shares");
            }
            if t.vcpu_period.is_some()
                || t.vcpu_quota.is_some()
                || t.emulator_period.is_some()
                || t.emulator_quota.is_some()
            {
                add(Feature::CpuQuota, "cputune");
            }
        }
        if self.numatune.is_some() {
            add(Feature::NumaTune, "numatune");
        }
        out
    }

    /// Refuses the first feature `tool` does not support yet, naming it.
    pub fn require_supported(&self, tool: &str, supported: &[Feature]) -> Result<(), SpecError> {
        match self
            .features()
            .into_iter()
            .find(|(f, _)| !supported.contains(f))
        {
            Some((feature, path)) => Err(SpecError::Unsupported {
                path,
                feature,
                tool: tool.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// Makes every relative path absolute against `base` (the spec file's
    /// folder, or the current folder for a spec read from stdin).
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.boot.kernel);
        if let Some(i) = &mut self.boot.initrd {
            fix(i);
        }
        for d in &mut self.disks {
            fix(&mut d.path);
        }
        if let Some(p) = self.serial.as_mut().and_then(|s| s.path.as_mut()) {
            fix(p);
        }
    }
}

#[cfg(test)]
mod tests;
mod validate;
