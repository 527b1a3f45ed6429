//! VmSpec: the machine description, the role libvirt's domain XML plays.
//!
//! Parsing is strict: unknown fields are errors that name the field's path,
//! and the guide's rules (topology, NUMA cells, names, units) are checked
//! here. Host-dependent checks (do the CPUs exist, is there a hugepage pool,
//! are the files there) belong to the tool that applies the spec.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{check_ifname, CpuList, MacAddr, Size, VmName};

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

    /// The guide's rules that need more than one field.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(field("vcpus", format!("must be 1 to {MAX_VCPUS}")));
        }
        if self.memory.0 == 0 || self.memory.0 % 4096 != 0 {
            return Err(field("memory", "must be a non-zero multiple of 4KiB"));
        }
        if self.memory.0 < MIN_MEMORY {
            return Err(field(
                "memory",
                format!(
                    "{} is too little: a guest needs at least 2MiB (kernels load at 1 MiB)",
                    self.memory
                ),
            ));
        }
        if let Some(hp) = self.hugepages {
            if hp.0 != 2 << 20 && hp.0 != 1 << 30 {
                return Err(field("hugepages", "must be \"2M\" or \"1G\""));
            }
            if self.memory.0 % hp.0 != 0 {
                return Err(field(
                    "memory",
                    format!("must be a multiple of the hugepage size {hp}"),
                ));
            }
        }
        if self.boot.kernel.as_os_str().is_empty() {
            return Err(field("boot.kernel", "must name a kernel file"));
        }
        if let Some(cmdline) = &self.boot.cmdline {
            if cmdline.contains('\0') {
                return Err(field("boot.cmdline", "must not contain NUL"));
            }
        }
        if let Some(cpu) = &self.cpu {
            self.validate_cpu(cpu)?;
        }
        self.validate_disks()?;
        self.validate_nets()?;
        if let Some(serial) = &self.serial {
            let needs_path = matches!(serial.mode, SerialMode::File | SerialMode::Socket);
            if needs_path && serial.path.is_none() {
                return Err(field(
                    "serial.path",
                    "is required for modes file and socket",
                ));
            }
            if !needs_path && serial.path.is_some() {
                return Err(field("serial.path", "is only for modes file and socket"));
            }
        }
        if let Some(tune) = &self.cputune {
            self.validate_cputune(tune)?;
        }
        Ok(())
    }

    fn validate_cpu(&self, cpu: &CpuConfig) -> Result<(), SpecError> {
        if let Some(t) = cpu.topology {
            let product = u64::from(t.sockets) * u64::from(t.cores) * u64::from(t.threads);
            if t.sockets == 0 || t.cores == 0 || t.threads == 0 {
                return Err(field(
                    "cpu.topology",
                    "sockets, cores and threads must be >= 1",
                ));
            }
            if product != u64::from(self.vcpus) {
                return Err(field(
                    "cpu.topology",
                    format!(
                        "sockets x cores x threads = {product}, but vcpus is {}",
                        self.vcpus
                    ),
                ));
            }
        }
        if cpu.numa.is_empty() {
            return Ok(());
        }
        let mut ids = BTreeSet::new();
        let mut covered = CpuList::default();
        let mut total = 0u64;
        for (i, cell) in cpu.numa.iter().enumerate() {
            let path = format!("cpu.numa[{i}]");
            if !ids.insert(cell.id) {
                return Err(field(
                    format!("{path}.id"),
                    format!("cell id {} repeats", cell.id),
                ));
            }
            if cell.cpus.max().is_some_and(|m| m >= self.vcpus) {
                return Err(field(
                    format!("{path}.cpus"),
                    format!("names vCPUs beyond vcpus = {}", self.vcpus),
                ));
            }
            if !cell.cpus.is_disjoint(&covered) {
                return Err(field(format!("{path}.cpus"), "overlaps another cell"));
            }
            covered = CpuList::from_cpus(covered.iter().chain(cell.cpus.iter()));
            total = total.saturating_add(cell.memory.0);
        }
        if covered.len() != self.vcpus as usize {
            return Err(field("cpu.numa", "the cells must cover every vCPU"));
        }
        // The ACPI tables number proximity domains 0..N-1, as libvirt
        // numbers cells.
        if ids.iter().copied().ne(0..cpu.numa.len() as u32) {
            return Err(field("cpu.numa", "cell ids must be 0 to N-1, each once"));
        }
        for (i, cell) in cpu.numa.iter().enumerate() {
            for (&to, &d) in &cell.distances {
                let path = format!("cpu.numa[{i}].distances.{to}");
                if !ids.contains(&to) {
                    return Err(field(path, "names no cell"));
                }
                let ok = if to == cell.id {
                    d == 10
                } else {
                    (11..=254).contains(&d)
                };
                if !ok {
                    return Err(field(
                        path,
                        "a distance is 10 to the cell itself and 11 to 254 to others",
                    ));
                }
            }
        }
        if total != self.memory.0 {
            return Err(field(
                "cpu.numa",
                format!(
                    "cell memory adds up to {}, but memory is {}",
                    Size(total),
                    self.memory
                ),
            ));
        }
        Ok(())
    }

    fn validate_disks(&self) -> Result<(), SpecError> {
        let mut ids = BTreeSet::new();
        for (i, d) in self.disks.iter().enumerate() {
            let path = format!("disks[{i}]");
            check_device_id(&d.id).map_err(|m| field(format!("{path}.id"), m))?;
            if !ids.insert(d.id.as_str()) {
                return Err(field(format!("{path}.id"), format!("'{}' repeats", d.id)));
            }
            if d.path.as_os_str().is_empty() {
                return Err(field(format!("{path}.path"), "must name an image"));
            }
            if let Some(t) = d.iothread {
                if t == 0 || t > self.iothreads {
                    return Err(field(
                        format!("{path}.iothread"),
                        format!("must be 1 to iothreads = {}", self.iothreads),
                    ));
                }
            }
            if let Some(s) = &d.serial {
                // virtio-blk's GET_ID returns at most 20 bytes.
                if s.len() > 20 || !s.is_ascii() {
                    return Err(field(
                        format!("{path}.serial"),
                        "at most 20 ASCII characters",
                    ));
                }
            }
            if d.io == IoMode::IoUring && d.format != DiskFormat::Raw {
                return Err(field(
                    format!("{path}.io"),
                    "io_uring (native) is for raw images",
                ));
            }
        }
        Ok(())
    }

    fn validate_nets(&self) -> Result<(), SpecError> {
        let mut ids = BTreeSet::new();
        let mut macs = BTreeSet::new();
        for (i, n) in self.nets.iter().enumerate() {
            let path = format!("nets[{i}]");
            check_device_id(&n.id).map_err(|m| field(format!("{path}.id"), m))?;
            if !ids.insert(n.id.as_str()) {
                return Err(field(format!("{path}.id"), format!("'{}' repeats", n.id)));
            }
            match (&n.tap, &n.bridge) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(field(path, "give exactly one of tap and bridge"))
                }
                (Some(t), None) => {
                    check_ifname(t).map_err(|e| field(format!("{path}.tap"), e.to_string()))?;
                }
                (None, Some(b)) => {
                    check_ifname(b).map_err(|e| field(format!("{path}.bridge"), e.to_string()))?;
                }
            }
            if n.queues == 0 || n.queues > 16 {
                return Err(field(format!("{path}.queues"), "must be 1 to 16"));
            }
            if let Some(mac) = n.mac {
                if !macs.insert(mac.0) {
                    return Err(field(format!("{path}.mac"), format!("{mac} repeats")));
                }
            }
        }
        Ok(())
    }

    fn validate_cputune(&self, t: &CpuTune) -> Result<(), SpecError> {
        if let Some(v) = t.vcpupin.keys().find(|&&v| v >= self.vcpus) {
            return Err(field(
                format!("cputune.vcpupin.{v}"),
                format!("no such vCPU (vcpus = {})", self.vcpus),
            ));
        }
        if let Some(v) = t
            .iothreadpin
            .keys()
            .find(|&&v| v == 0 || v > self.iothreads)
        {
            return Err(field(
                format!("cputune.iothreadpin.{v}"),
                format!("no such iothread (iothreads = {})", self.iothreads),
            ));
        }
        if let Some(s) = t.shares {
            if !(2..=262_144).contains(&s) {
                return Err(field("cputune.shares", "must be 2 to 262144"));
            }
        }
        for (name, p) in [
            ("vcpu_period", t.vcpu_period),
            ("emulator_period", t.emulator_period),
        ] {
            if p.is_some_and(|p| !PERIOD_RANGE.contains(&p)) {
                return Err(field(
                    format!("cputune.{name}"),
                    "must be 1000 to 1000000 microseconds",
                ));
            }
        }
        for (name, q) in [
            ("vcpu_quota", t.vcpu_quota),
            ("emulator_quota", t.emulator_quota),
        ] {
            if q.is_some_and(|q| (0..1000).contains(&q) || q > QUOTA_MAX) {
                return Err(field(
                    format!("cputune.{name}"),
                    "must be -1 (unlimited) or 1000 to 17592186044415 microseconds",
                ));
            }
        }
        Ok(())
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

fn check_device_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 32 {
        return Err("must be 1 to 32 characters".into());
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(format!("'{id}': use letters, digits, '_', '-' and '.'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{
      "name": "demo",
      "uuid": "ab472210-db8c-4018-9b3e-fc5319a769f7",
      "vcpus": 2,
      "cpu": { "topology": { "sockets": 1, "cores": 2, "threads": 1 },
               "numa": [ { "id": 0, "cpus": "0-1", "memory": "512MiB" } ] },
      "memory": "512MiB",
      "hugepages": "2M",
      "boot": { "kernel": "vmlinux", "initrd": "initrd.img", "cmdline": "console=ttyS0" },
      "disks": [
        { "id": "vda", "path": "disk.qcow2", "format": "qcow2", "readonly": false,
          "cache": "none", "io": "threads", "iothread": 1, "serial": "vda-0001",
          "boot_order": 1 }
      ],
      "nets": [ { "id": "net0", "tap": "vnet0", "bridge": null,
                  "mac": "52:54:00:12:34:56", "queues": 1 } ],
      "serial": { "mode": "file", "path": "console.log" },
      "iothreads": 1,
      "on_poweroff": "destroy",
      "on_reboot": "restart",
      "on_crash": "destroy",
      "cputune": { "vcpupin": { "0": "2-3" }, "emulatorpin": "0-1",
                   "iothreadpin": { "1": "1" }, "shares": 1024,
                   "vcpu_period": 100000, "vcpu_quota": -1 },
      "numatune": { "mode": "strict", "nodeset": "0" }
    }"#;

    fn minimal() -> serde_json::Value {
        serde_json::json!({"name": "t", "vcpus": 1, "memory": "64MiB",
                           "boot": {"kernel": "guest.elf"}})
    }

    fn err_of(v: &serde_json::Value) -> String {
        VmSpec::from_json(&v.to_string()).unwrap_err().to_string()
    }

    fn with(mut base: serde_json::Value, key: &str, val: serde_json::Value) -> serde_json::Value {
        base[key] = val;
        base
    }

    #[test]
    fn design_example_parses_and_round_trips() {
        let spec = VmSpec::from_json(FULL).unwrap();
        assert_eq!(spec.vcpus, 2);
        assert_eq!(spec.memory, Size(512 << 20));
        assert_eq!(spec.hugepages, Some(Size(2 << 20)));
        assert_eq!(spec.disks[0].cache, CacheMode::None);
        assert_eq!(
            spec.cputune.as_ref().unwrap().vcpupin[&0].to_string(),
            "2-3"
        );
        let again = VmSpec::from_json(&spec.to_json_pretty()).unwrap();
        assert_eq!(spec, again);
        assert_eq!(spec.features().len(), 12);
    }

    #[test]
    fn minimal_spec_takes_libvirt_defaults() {
        let spec = VmSpec::from_json(&minimal().to_string()).unwrap();
        assert_eq!(spec.on_poweroff, Action::Destroy);
        assert_eq!(spec.on_reboot, Action::Restart);
        assert_eq!(spec.on_crash, Action::Destroy);
        assert!(spec.features().is_empty());
        assert!(spec.require_supported("vm-run", &[]).is_ok());
    }

    #[test]
    fn required_fields() {
        for key in ["name", "vcpus", "memory", "boot"] {
            let mut v = minimal();
            v.as_object_mut().unwrap().remove(key);
            let e = err_of(&v);
            assert!(e.contains(&format!("missing field `{key}`")), "{e}");
        }
        let e = err_of(&with(minimal(), "boot", serde_json::json!({})));
        assert!(e.contains("boot") && e.contains("kernel"), "{e}");
    }

    #[test]
    fn unknown_fields_name_their_path() {
        let e = err_of(&with(minimal(), "colour", serde_json::json!(1)));
        assert!(e.contains("unknown field `colour`"), "{e}");
        let e = err_of(&with(
            minimal(),
            "disks",
            serde_json::json!([{"id": "a", "path": "p", "format": "raw", "cahce": "none"}]),
        ));
        assert!(e.starts_with("disks[0]") && e.contains("cahce"), "{e}");
    }

    #[test]
    fn memory_has_a_floor_and_nothing_follows_the_spec() {
        let e = err_of(&with(minimal(), "memory", serde_json::json!("512KiB")));
        assert!(e.starts_with("memory: 512KiB is too little"), "{e}");
        let mut text = minimal().to_string();
        text.push_str(" {}");
        let e = VmSpec::from_json(&text).unwrap_err().to_string();
        assert!(e.contains("trailing characters"), "{e}");
        let e = err_of(&with(minimal(), "name", serde_json::json!("-")));
        assert!(e.contains("must start with a letter or a digit"), "{e}");
    }

    #[test]
    fn memory_needs_a_unit() {
        let e = err_of(&with(minimal(), "memory", serde_json::json!(512)));
        assert!(e.starts_with("memory: ") && e.contains("no unit"), "{e}");
        let e = err_of(&with(minimal(), "memory", serde_json::json!("512")));
        assert!(e.contains("no unit"), "{e}");
        let e = err_of(&with(minimal(), "memory", serde_json::json!("1000B")));
        assert!(e.contains("multiple of 4KiB"), "{e}");
        let e = err_of(&with(minimal(), "memory", serde_json::json!("0MiB")));
        assert!(e.starts_with("memory"), "{e}");
    }

    #[test]
    fn bad_names_and_values() {
        let e = err_of(&with(minimal(), "name", serde_json::json!("123")));
        assert!(e.starts_with("name: ") && e.contains("all digits"), "{e}");
        let e = err_of(&with(minimal(), "vcpus", serde_json::json!(0)));
        assert!(e.starts_with("vcpus"), "{e}");
        let e = err_of(&with(minimal(), "vcpus", serde_json::json!(-1)));
        assert!(e.starts_with("vcpus"), "{e}");
        let e = err_of(&with(minimal(), "uuid", serde_json::json!("nope")));
        assert!(e.starts_with("uuid"), "{e}");
        let e = err_of(&with(minimal(), "on_crash", serde_json::json!("explode")));
        assert!(e.starts_with("on_crash") && e.contains("destroy"), "{e}");
        let e = err_of(&with(minimal(), "hugepages", serde_json::json!("4K")));
        assert!(e.starts_with("hugepages"), "{e}");
        assert!(VmSpec::from_json("{")
            .unwrap_err()
            .to_string()
            .starts_with("not valid JSON"));
    }

    #[test]
    fn topology_must_multiply_to_vcpus() {
        let mut v = with(minimal(), "vcpus", serde_json::json!(4));
        v["cpu"] = serde_json::json!({"topology": {"sockets": 1, "cores": 2, "threads": 1}});
        let e = err_of(&v);
        assert!(e.contains("= 2, but vcpus is 4"), "{e}");
        v["cpu"]["topology"]["cores"] = serde_json::json!(4);
        assert!(VmSpec::from_json(&v.to_string()).is_ok());
    }

    #[test]
    fn numa_distances_follow_acpis_rules() {
        let mut v = minimal();
        v["vcpus"] = serde_json::json!(2);
        v["memory"] = serde_json::json!("128MiB");
        v["cpu"] = serde_json::json!({"numa": [
            {"id": 0, "cpus": "0", "memory": "64MiB", "distances": {"0": 10, "1": 21}},
            {"id": 1, "cpus": "1", "memory": "64MiB"}]});
        let spec = VmSpec::from_json(&v.to_string()).unwrap();
        let cells = &spec.cpu.as_ref().unwrap().numa;
        assert_eq!(cells[0].distance_to(1), 21);
        assert_eq!(cells[1].distance_to(0), 20);
        assert_eq!(cells[1].distance_to(1), 10);
        for (bad, want) in [
            (serde_json::json!({"0": 11}), "10 to the cell itself"),
            (serde_json::json!({"1": 255}), "11 to 254"),
            (serde_json::json!({"7": 20}), "names no cell"),
        ] {
            let mut w = v.clone();
            w["cpu"]["numa"][0]["distances"] = bad;
            let e = err_of(&w);
            assert!(e.contains(want), "{e}");
        }
        let mut w = v.clone();
        w["cpu"]["numa"][1]["id"] = serde_json::json!(2);
        assert!(err_of(&w).contains("0 to N-1"));
    }

    #[test]
    fn numa_cells_cover_cpus_and_memory() {
        let mut v = with(minimal(), "vcpus", serde_json::json!(2));
        v["memory"] = serde_json::json!("128MiB");
        v["cpu"] = serde_json::json!({"numa": [
            {"id": 0, "cpus": "0", "memory": "64MiB"},
            {"id": 1, "cpus": "1", "memory": "64MiB"}]});
        assert!(VmSpec::from_json(&v.to_string()).is_ok());
        let mut w = v.clone();
        w["cpu"]["numa"][1]["memory"] = serde_json::json!("32MiB");
        assert!(err_of(&w).contains("adds up to 96MiB"));
        let mut w = v.clone();
        w["cpu"]["numa"][1]["cpus"] = serde_json::json!("0");
        assert!(err_of(&w).contains("overlaps"));
        let mut w = v.clone();
        w["cpu"]["numa"][1]["cpus"] = serde_json::json!("5");
        assert!(err_of(&w).contains("beyond vcpus"));
        let mut w = v.clone();
        w["cpu"]["numa"][1]["id"] = serde_json::json!(0);
        assert!(err_of(&w).contains("repeats"));
        let mut w = v;
        w["cpu"]["numa"].as_array_mut().unwrap().pop();
        w["memory"] = serde_json::json!("64MiB");
        assert!(err_of(&w).contains("cover every vCPU"));
    }

    #[test]
    fn disks_and_nets() {
        let d = |extra: serde_json::Value| {
            let mut disk = serde_json::json!({"id": "vda", "path": "a.img", "format": "raw"});
            for (k, v) in extra.as_object().unwrap() {
                disk[k] = v.clone();
            }
            with(minimal(), "disks", serde_json::json!([disk]))
        };
        let e = err_of(&with(
            minimal(),
            "disks",
            serde_json::json!([{"id": "vda", "path": "a.img"}]),
        ));
        assert!(e.contains("missing field `format`"), "{e}");
        assert!(err_of(&d(serde_json::json!({"format": "vmdk"}))).contains("unknown variant"));
        assert!(err_of(&d(serde_json::json!({"cache": "fast"}))).starts_with("disks[0].cache"));
        assert!(err_of(&d(serde_json::json!({"iothread": 1}))).contains("iothreads = 0"));
        assert!(err_of(&d(serde_json::json!({"serial": "x".repeat(21)}))).contains("20"));
        let native = VmSpec::from_json(&d(serde_json::json!({"io": "native"})).to_string());
        assert_eq!(native.unwrap().disks[0].io, IoMode::IoUring);
        let e = err_of(&d(serde_json::json!({"format": "qcow2", "io": "io_uring"})));
        assert!(e.contains("for raw images"), "{e}");
        let two = serde_json::json!([{"id": "a", "path": "x", "format": "raw"},
                                     {"id": "a", "path": "y", "format": "raw"}]);
        assert!(err_of(&with(minimal(), "disks", two)).contains("repeats"));

        let n = |net: serde_json::Value| with(minimal(), "nets", serde_json::json!([net]));
        assert!(err_of(&n(serde_json::json!({"id": "n"}))).contains("exactly one"));
        assert!(err_of(&n(
            serde_json::json!({"id": "n", "tap": "t", "bridge": "b"})
        ))
        .contains("exactly one"));
        assert!(err_of(&n(
            serde_json::json!({"id": "n", "tap": "a-very-long-tap-name"})
        ))
        .contains("15 bytes"));
        assert!(err_of(&n(
            serde_json::json!({"id": "n", "tap": "t", "mac": "01:00:00:00:00:00"})
        ))
        .contains("multicast"));
        assert!(
            err_of(&n(serde_json::json!({"id": "n", "tap": "t", "queues": 0}))).contains("queues")
        );
    }

    #[test]
    fn serial_modes() {
        let e = err_of(&with(
            minimal(),
            "serial",
            serde_json::json!({"mode": "file"}),
        ));
        assert!(e.contains("required"), "{e}");
        let e = err_of(&with(
            minimal(),
            "serial",
            serde_json::json!({"mode": "tty"}),
        ));
        assert!(e.starts_with("serial.mode"), "{e}");
        let e = err_of(&with(
            minimal(),
            "serial",
            serde_json::json!({"mode": "null", "path": "x"}),
        ));
        assert!(e.contains("only for"), "{e}");
    }

    #[test]
    fn cputune_rules() {
        let t = |tune: serde_json::Value| with(minimal(), "cputune", tune);
        assert!(err_of(&t(serde_json::json!({"vcpupin": {"1": "0"}}))).contains("no such vCPU"));
        assert!(err_of(&t(serde_json::json!({"vcpupin": {"0": "3-1"}}))).contains("backwards"));
        assert!(err_of(&t(serde_json::json!({"iothreadpin": {"1": "0"}}))).contains("iothread"));
        assert!(err_of(&t(serde_json::json!({"shares": 1}))).contains("shares"));
        assert!(err_of(&t(serde_json::json!({"vcpu_period": 10}))).contains("vcpu_period"));
        assert!(err_of(&t(serde_json::json!({"vcpu_quota": 5}))).contains("vcpu_quota"));
        assert!(VmSpec::from_json(&t(serde_json::json!({"vcpu_quota": -1})).to_string()).is_ok());
    }

    #[test]
    fn unsupported_features_are_named() {
        let v = with(minimal(), "hugepages", serde_json::json!("2M"));
        let spec = VmSpec::from_json(&v.to_string()).unwrap();
        let e = spec
            .require_supported("vm-run", &[Feature::Disks])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "hugepages: hugepage-backed memory is not supported yet by vm-run"
        );
        assert!(spec
            .require_supported("vm-run", &[Feature::Hugepages])
            .is_ok());
    }

    #[test]
    fn relative_paths_resolve_against_the_spec_folder() {
        let mut spec = VmSpec::from_json(FULL).unwrap();
        spec.resolve_paths(Path::new("/vms/demo"));
        assert_eq!(spec.boot.kernel, Path::new("/vms/demo/vmlinux"));
        assert_eq!(spec.disks[0].path, Path::new("/vms/demo/disk.qcow2"));
        assert_eq!(
            spec.serial.unwrap().path.unwrap(),
            Path::new("/vms/demo/console.log")
        );
    }
}
