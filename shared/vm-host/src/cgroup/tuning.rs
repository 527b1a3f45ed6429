//! CPU shares, bandwidth and memory nodes of a running VM's groups.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::stale::v2_group_of;
use super::{err, group_name, write, CgroupError, Hierarchy, VmCgroup};

/// CPU bandwidth and weight of one group, in cgroup v1's units (v2 files
/// are translated: cpu.weight from shares, cpu.max from period and quota).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTuning {
    pub shares: Option<u64>,
    pub period: Option<u64>,
    /// Negative: unlimited.
    pub quota: Option<i64>,
}

/// v1 shares to a v2 weight, keeping the defaults equal (1024 and 100,
/// as systemd maps CPUShares to CPUWeight), so a VM given the default
/// competes evenly with every other default group.
pub fn shares_to_weight(shares: u64) -> u64 {
    (shares * 100 / 1024).clamp(1, 10_000)
}

/// The inverse of [`shares_to_weight`] (exact where shares is a multiple
/// of 256).
pub fn weight_to_shares(weight: u64) -> u64 {
    (weight * 1024 / 100).clamp(2, 262_144)
}

fn read_trim(p: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .map_err(err(p))
}

impl VmCgroup {
    /// The groups of a running VM, if they exist: `<name>.<pid>` on v1;
    /// on v2 the group the process is in, which is named for the process
    /// that launched it (`<name>.<launcher pid>`).
    pub fn find(vm: &str, pid: u32) -> Option<Self> {
        let hierarchy = Hierarchy::detect()?;
        let mut name = group_name(vm, pid);
        if let Hierarchy::V2(root) = &hierarchy {
            let of_vm = v2_group_of(&pid.to_string(), root).filter(|g| {
                g.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.rsplit_once('.'))
                    .is_some_and(|(n, p)| n == vm && p.parse::<u32>().is_ok())
            });
            if let Some(g) = of_vm.and_then(|g| g.file_name().map(std::borrow::ToOwned::to_owned)) {
                name = g.to_string_lossy().into_owned();
            }
        }
        let (thread_groups, memory_group) = match &hierarchy {
            Hierarchy::V1 {
                cpu,
                cpuset,
                memory,
            } => (
                [cpu, cpuset]
                    .into_iter()
                    .flatten()
                    .map(|m| m.join("vmtools").join(&name))
                    .filter(|p| p.is_dir())
                    .collect::<Vec<_>>(),
                memory
                    .as_ref()
                    .map(|m| m.join("vmtools").join(&name))
                    .filter(|p| p.is_dir()),
            ),
            Hierarchy::V2(root) => (
                vec![root.join("vmtools").join(&name)]
                    .into_iter()
                    .filter(|p| p.is_dir())
                    .collect(),
                None,
            ),
        };
        if thread_groups.is_empty() {
            return None;
        }
        Some(Self {
            hierarchy,
            thread_groups,
            memory_group,
        })
    }

    /// The group where the cpu controller's files are: the VM's group
    /// (`child` None) or one of its children.
    fn cpu_dir(&self, child: Option<&str>) -> Option<PathBuf> {
        let base = match &self.hierarchy {
            Hierarchy::V1 { cpu: Some(m), .. } => self
                .thread_groups
                .iter()
                .find(|g| g.starts_with(m))?
                .clone(),
            Hierarchy::V1 { cpu: None, .. } => return None,
            Hierarchy::V2(_) => self.thread_groups.first()?.clone(),
        };
        Some(child.map_or(base.clone(), |c| base.join(c)))
    }

    /// Reads the tuning of the VM group (`None`) or of a child.
    pub fn cpu_tuning(&self, child: Option<&str>) -> Result<CpuTuning, CgroupError> {
        let dir = self.cpu_dir(child).ok_or_else(|| CgroupError {
            path: PathBuf::from("cpu"),
            source: io::Error::new(io::ErrorKind::NotFound, "no cpu controller"),
        })?;
        let num = |f: &str| -> Result<Option<i64>, CgroupError> {
            let p = dir.join(f);
            if !p.exists() {
                return Ok(None);
            }
            Ok(read_trim(&p)?.parse().ok())
        };
        Ok(match self.hierarchy {
            Hierarchy::V1 { .. } => CpuTuning {
                shares: num("cpu.shares")?.map(|v| v as u64),
                period: num("cpu.cfs_period_us")?.map(|v| v as u64),
                quota: num("cpu.cfs_quota_us")?,
            },
            Hierarchy::V2(_) => {
                let weight = num("cpu.weight")?;
                let max = read_trim(&dir.join("cpu.max")).unwrap_or_default();
                let mut it = max.split_whitespace();
                let quota = it.next().map(|q| {
                    if q == "max" {
                        -1
                    } else {
                        q.parse().unwrap_or(-1)
                    }
                });
                let period = it.next().and_then(|p| p.parse().ok());
                CpuTuning {
                    shares: weight.map(|w| weight_to_shares(w as u64)),
                    period,
                    quota,
                }
            }
        })
    }

    /// Writes whatever `t` sets, to the VM group or a child.
    pub fn set_cpu_tuning(&self, child: Option<&str>, t: CpuTuning) -> Result<(), CgroupError> {
        let Some(dir) = self.cpu_dir(child) else {
            return Err(CgroupError {
                path: PathBuf::from("cpu"),
                source: io::Error::new(io::ErrorKind::NotFound, "no cpu controller"),
            });
        };
        match self.hierarchy {
            Hierarchy::V1 { .. } => {
                if let Some(s) = t.shares {
                    write(&dir.join("cpu.shares"), &s.to_string())?;
                }
                if let Some(p) = t.period {
                    write(&dir.join("cpu.cfs_period_us"), &p.to_string())?;
                }
                if let Some(q) = t.quota {
                    write(&dir.join("cpu.cfs_quota_us"), &q.max(-1).to_string())?;
                }
            }
            Hierarchy::V2(_) => {
                if let Some(s) = t.shares {
                    write(&dir.join("cpu.weight"), &shares_to_weight(s).to_string())?;
                }
                if t.period.is_some() || t.quota.is_some() {
                    let cur = self.cpu_tuning(child)?;
                    let period = t.period.or(cur.period).unwrap_or(100_000);
                    let quota = t.quota.or(cur.quota).unwrap_or(-1);
                    let q = if quota < 0 {
                        "max".to_string()
                    } else {
                        quota.to_string()
                    };
                    write(&dir.join("cpu.max"), &format!("{q} {period}"))?;
                }
            }
        }
        Ok(())
    }
}

impl VmCgroup {
    /// The cpuset groups (the VM's and its children's), v1 or v2.
    fn cpuset_dirs(&self) -> Vec<PathBuf> {
        let base = match &self.hierarchy {
            Hierarchy::V1 {
                cpuset: Some(m), ..
            } => self
                .thread_groups
                .iter()
                .find(|g| g.starts_with(m))
                .cloned(),
            Hierarchy::V1 { cpuset: None, .. } => None,
            Hierarchy::V2(_) => self.thread_groups.first().cloned(),
        };
        let Some(base) = base else { return Vec::new() };
        let mut dirs = vec![base.clone()];
        if let Ok(entries) = fs::read_dir(&base) {
            dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
        dirs
    }

    /// The memory nodes the VM may use (cpuset.mems of its group).
    pub fn mems(&self) -> Result<String, CgroupError> {
        let dirs = self.cpuset_dirs();
        let first = dirs.first().ok_or_else(|| CgroupError {
            path: PathBuf::from("cpuset"),
            source: io::Error::new(io::ErrorKind::NotFound, "no cpuset controller"),
        })?;
        let f = match self.hierarchy {
            Hierarchy::V1 { .. } => "cpuset.mems",
            Hierarchy::V2(_) => "cpuset.mems.effective",
        };
        read_trim(&first.join(f))
    }

    /// Moves the VM's memory to `nodes` (cpuset.mems, with page migration
    /// on in v1), the way libvirt changes numatune live.
    pub fn set_mems(&self, nodes: &str) -> Result<(), CgroupError> {
        let dirs = self.cpuset_dirs();
        if dirs.is_empty() {
            return Err(CgroupError {
                path: PathBuf::from("cpuset"),
                source: io::Error::new(io::ErrorKind::NotFound, "no cpuset controller"),
            });
        }
        for d in &dirs {
            if let Hierarchy::V1 { .. } = self.hierarchy {
                write(&d.join("cpuset.memory_migrate"), "1")?;
            }
            write(&d.join("cpuset.mems"), nodes)?;
        }
        Ok(())
    }
}
