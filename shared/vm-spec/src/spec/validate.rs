//! The guide's rules that need more than one field of a spec.

use std::collections::BTreeSet;

use super::{
    field, CpuConfig, CpuTune, DiskFormat, IoMode, SerialMode, SpecError, VmSpec, MAX_IOTHREADS,
    MAX_VCPUS, MIN_MEMORY, PERIOD_RANGE, QUOTA_MAX,
};
use crate::{check_ifname, CpuList, Size};

impl VmSpec {
    /// The guide's rules that need more than one field.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(field("vcpus", format!("must be 1 to {MAX_VCPUS}")));
        }
        if self.iothreads > MAX_IOTHREADS {
            return Err(field("iothreads", format!("must be 0 to {MAX_IOTHREADS}")));
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
            // Three u32s can pass u64: a wrapped product must not match.
            let product = u128::from(t.sockets) * u128::from(t.cores) * u128::from(t.threads);
            if t.sockets == 0 || t.cores == 0 || t.threads == 0 {
                return Err(field(
                    "cpu.topology",
                    "sockets, cores and threads must be >= 1",
                ));
            }
            if product != u128::from(self.vcpus) {
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
