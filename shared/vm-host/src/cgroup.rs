//! The per-VM cgroup: `vmtools/<name>.<pid>` with an `emulator` child for
//! the main thread and `vcpuN` children for the vCPU threads, so vm-pin
//! can set shares, quotas and CPU sets per thread group as libvirt does.
//!
//! cgroup v1 (one mount per controller, as on this machine): the groups
//! are made in the cpu and cpuset hierarchies, and the VM as a whole in
//! the memory hierarchy (memory is charged per process). cgroup v2 (one
//! unified hierarchy): the VM group is a domain with threaded children.
//! The pid in the name lets same-named VMs in different run folders
//! coexist (a local migration); a dead VM's groups are removed by the next
//! start, since a process cannot remove the group it is still in.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("cgroup {path}: {source}")]
pub struct CgroupError {
    path: PathBuf,
    #[source]
    source: io::Error,
}

fn err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError {
        path: path.to_path_buf(),
        source,
    }
}

/// Where the controllers we use are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// v1 mounts of the cpu, cpuset and memory controllers.
    V1 {
        cpu: Option<PathBuf>,
        cpuset: Option<PathBuf>,
        memory: Option<PathBuf>,
    },
    /// The v2 mount.
    V2(PathBuf),
}

impl Hierarchy {
    /// Reads /proc/self/mountinfo. The hierarchy that holds the cpu
    /// controller wins: a hybrid setup usually leaves v2 without
    /// controllers (v1, as here), but one may hand cpu and cpuset to v2
    /// while memory stays on v1 (v2, memory unused).
    ///
    /// `VMTOOLS_CGROUP_LAYOUT=v2` picks the v2 mount even where it offers no
    /// cpu controller: on a hybrid host (this project's development
    /// machine) that measures and tests v2 placement, which costs the same
    /// with or without the controllers.
    pub fn detect() -> Option<Self> {
        let forced = std::env::var_os("VMTOOLS_CGROUP_LAYOUT").is_some_and(|v| v == "v2");
        let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
        let (mut cpu, mut cpuset, mut memory, mut v2) = (None, None, None, None);
        for line in info.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let mount = pre.split_whitespace().nth(4).map(PathBuf::from);
            let mut fields = post.split_whitespace();
            let fstype = fields.next().unwrap_or_default();
            let opts = fields.nth(1).unwrap_or_default();
            match fstype {
                "cgroup" => {
                    for o in opts.split(',') {
                        match o {
                            "cpu" => cpu.clone_from(&mount),
                            "cpuset" => cpuset.clone_from(&mount),
                            "memory" => memory.clone_from(&mount),
                            _ => {}
                        }
                    }
                }
                "cgroup2" => v2 = mount,
                _ => {}
            }
        }
        let v2_has_cpu = v2.as_ref().is_some_and(|root: &PathBuf| {
            fs::read_to_string(root.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "cpu"))
        });
        if (cpu.is_none() && v2_has_cpu) || (forced && v2.is_some()) {
            return v2.map(Self::V2);
        }
        if cpu.is_some() || cpuset.is_some() || memory.is_some() {
            Some(Self::V1 {
                cpu,
                cpuset,
                memory,
            })
        } else {
            v2.map(Self::V2)
        }
    }
}

/// A VM's groups.
#[derive(Debug, Clone)]
pub struct VmCgroup {
    pub hierarchy: Hierarchy,
    /// The VM's group in each hierarchy where threads are placed (cpu and
    /// cpuset for v1; the one group for v2).
    pub thread_groups: Vec<PathBuf>,
    /// The VM's group in the memory hierarchy (v1).
    pub memory_group: Option<PathBuf>,
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(err(path))
}

fn mkdir(path: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(err(path)(e)),
    }
}

/// cpuset v1 groups start with empty CPU and node sets: inherit them.
fn inherit_cpuset(dir: &Path) -> Result<(), CgroupError> {
    let parent = dir.parent().unwrap_or(dir);
    for f in ["cpuset.cpus", "cpuset.mems"] {
        let v = fs::read_to_string(parent.join(f)).map_err(err(&parent.join(f)))?;
        write(&dir.join(f), v.trim())?;
    }
    Ok(())
}

/// The group name for a VM: `<name>.<pid>`.
pub fn group_name(vm: &str, pid: u32) -> String {
    format!("{vm}.{pid}")
}

impl VmCgroup {
    /// Makes the VM's groups with `emulator` and `vcpu0..vcpus` children.
    pub fn create(
        hierarchy: Hierarchy,
        vm: &str,
        pid: u32,
        vcpus: u8,
        iothreads: u32,
    ) -> Result<Self, CgroupError> {
        let name = group_name(vm, pid);
        let children: Vec<String> = std::iter::once("emulator".to_string())
            .chain((0..vcpus).map(|i| format!("vcpu{i}")))
            .chain((1..=iothreads).map(|i| format!("iothread{i}")))
            .collect();
        let mut thread_groups = Vec::new();
        let mut memory_group = None;
        match &hierarchy {
            Hierarchy::V1 {
                cpu,
                cpuset,
                memory,
            } => {
                for (mount, is_cpuset) in [(cpu, false), (cpuset, true)] {
                    let Some(m) = mount else { continue };
                    let top = m.join("vmtools");
                    mkdir(&top)?;
                    let vmdir = top.join(&name);
                    if is_cpuset {
                        inherit_cpuset(&top)?;
                    }
                    mkdir(&vmdir)?;
                    if is_cpuset {
                        inherit_cpuset(&vmdir)?;
                    }
                    for c in &children {
                        let d = vmdir.join(c);
                        mkdir(&d)?;
                        if is_cpuset {
                            inherit_cpuset(&d)?;
                        }
                    }
                    thread_groups.push(vmdir);
                }
                if let Some(m) = memory {
                    let top = m.join("vmtools");
                    mkdir(&top)?;
                    let vmdir = top.join(&name);
                    mkdir(&vmdir)?;
                    memory_group = Some(vmdir);
                }
            }
            Hierarchy::V2(root) => {
                let top = root.join("vmtools");
                mkdir(&top)?;
                // Hand the cpu and cpuset controllers down where offered.
                let offered =
                    fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
                let enable: Vec<String> = ["cpu", "cpuset"]
                    .iter()
                    .filter(|c| offered.split_whitespace().any(|o| o == **c))
                    .map(|c| format!("+{c}"))
                    .collect();
                let vmdir = top.join(&name);
                mkdir(&vmdir)?;
                for c in &children {
                    let d = vmdir.join(c);
                    mkdir(&d)?;
                    write(&d.join("cgroup.type"), "threaded")?;
                }
                for dir in [root.as_path(), top.as_path(), vmdir.as_path()] {
                    for e in &enable {
                        // Best effort: a controller held elsewhere stays off.
                        let _ = fs::write(dir.join("cgroup.subtree_control"), e);
                    }
                }
                thread_groups.push(vmdir);
            }
        }
        Ok(Self {
            hierarchy,
            thread_groups,
            memory_group,
        })
    }

    /// Moves this process into the VM's groups and the calling thread
    /// into `emulator`. Call it from the main thread before any other
    /// thread exists: threads start in their creator's groups.
    ///
    /// Writing "0" names the caller. v1 moves just the calling thread
    /// (`tasks`), which the kernel does without its global threadgroup
    /// lock, so without an RCU grace period (4-17 ms each on the
    /// development host); v2 must move the whole process into the domain
    /// (`cgroup.procs`) first, which waits for one grace period.
    ///
    /// A process born in the group (see [`VmCgroup::dir`]) skips that
    /// write.
    pub fn enter(&self) -> Result<(), CgroupError> {
        match &self.hierarchy {
            Hierarchy::V1 { .. } => {
                if let Some(m) = &self.memory_group {
                    write(&m.join("tasks"), "0")?;
                }
            }
            Hierarchy::V2(root) => {
                for g in &self.thread_groups {
                    if v2_group_of("self", root).as_deref() != Some(g.as_path()) {
                        write(&g.join("cgroup.procs"), "0")?;
                    }
                }
            }
        }
        self.attach_self("emulator")
    }

    /// The VM group of a v2 hierarchy as a directory descriptor, for a
    /// child cloned into it (`CLONE_INTO_CGROUP`); None on v1.
    pub fn dir(&self) -> Option<Result<std::os::fd::OwnedFd, CgroupError>> {
        let Hierarchy::V2(_) = self.hierarchy else {
            return None;
        };
        let g = self.thread_groups.first()?;
        Some(
            fs::File::open(g)
                .map(std::os::fd::OwnedFd::from)
                .map_err(err(g)),
        )
    }

    /// The v2 VM group this process was born in (a child of
    /// [`VmCgroup::dir`]), if `group` names it: checked against the
    /// kernel's word, /proc/self/cgroup, not taken on trust.
    pub fn born_in(group: &Path) -> Option<Self> {
        let hierarchy = Hierarchy::detect()?;
        let Hierarchy::V2(root) = &hierarchy else {
            return None;
        };
        if v2_group_of("self", root).as_deref() != Some(group) {
            return None;
        }
        Some(Self {
            thread_groups: vec![group.to_path_buf()],
            hierarchy,
            memory_group: None,
        })
    }

    /// Removes the v2 groups once no process is left in them (a launcher
    /// whose child failed before its teardown could); best effort.
    pub fn remove_if_empty(&self) {
        for g in &self.thread_groups {
            if !populated(g) {
                remove_group(g);
            }
        }
    }

    /// Undoes [`VmCgroup::enter`] for a VM that failed to start: moves the
    /// calling thread (v2: the process) to each hierarchy's root and
    /// removes the VM's groups, so a failed start leaves none behind.
    /// Best effort: what cannot be undone now goes at the next start.
    pub fn leave(&self) {
        let groups = self.thread_groups.iter().chain(&self.memory_group);
        for g in groups.clone() {
            // `<mount>/vmtools/<name>.<pid>`: the root is two levels up.
            let Some(root) = g.parent().and_then(Path::parent) else {
                continue;
            };
            let file = match self.hierarchy {
                Hierarchy::V1 { .. } => "tasks",
                Hierarchy::V2(_) => "cgroup.procs",
            };
            let _ = fs::write(root.join(file), "0");
        }
        for g in groups {
            remove_group(g);
        }
    }

    /// What must happen once the VM process has exited for its groups to
    /// go: the files a process writes `0` to in order to leave them (each
    /// hierarchy's root), and the groups to remove, children first.
    pub fn exit_plan(&self) -> (Vec<PathBuf>, Vec<PathBuf>) {
        let file = match self.hierarchy {
            Hierarchy::V1 { .. } => "tasks",
            Hierarchy::V2(_) => "cgroup.procs",
        };
        let mut leave = Vec::new();
        let mut remove = Vec::new();
        for g in self.thread_groups.iter().chain(&self.memory_group) {
            // `<mount>/vmtools/<name>.<pid>`: the root is two levels up.
            if let Some(root) = g.parent().and_then(Path::parent) {
                leave.push(root.join(file));
            }
            if let Ok(children) = fs::read_dir(g) {
                let mut c: Vec<PathBuf> = children
                    .flatten()
                    .filter(|c| c.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|c| c.path())
                    .collect();
                c.sort();
                remove.extend(c);
            }
            remove.push(g.clone());
        }
        (leave, remove)
    }

    /// Moves the calling thread into `child` (`emulator`, `vcpuN`,
    /// `iothreadN`) of every thread group, without the global lock (see
    /// [`VmCgroup::enter`]).
    pub fn attach_self(&self, child: &str) -> Result<(), CgroupError> {
        let file = match self.hierarchy {
            Hierarchy::V1 { .. } => "tasks",
            Hierarchy::V2(_) => "cgroup.threads",
        };
        for g in &self.thread_groups {
            write(&g.join(child).join(file), "0")?;
        }
        Ok(())
    }
}

/// Removes the groups of VMs whose process is gone (`<name>.<pid>` with a
/// dead pid), children first, in every cgroup hierarchy mounted here: the
/// one in use and any other a VM may have used (a v1 memory group left
/// from before cpu moved to v2).
pub fn remove_stale(hierarchy: &Hierarchy, alive: impl Fn(u32) -> bool) {
    let mut tops: Vec<PathBuf> = match hierarchy {
        Hierarchy::V1 {
            cpu,
            cpuset,
            memory,
        } => [cpu, cpuset, memory]
            .into_iter()
            .flatten()
            .map(|m| m.join("vmtools"))
            .collect(),
        Hierarchy::V2(root) => vec![root.join("vmtools")],
    };
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in info.lines() {
        if line.contains(" - cgroup ") || line.contains(" - cgroup2 ") {
            if let Some(m) = line.split_whitespace().nth(4) {
                let top = Path::new(m).join("vmtools");
                if !tops.contains(&top) {
                    tops.push(top);
                }
            }
        }
    }
    for top in tops {
        let Ok(entries) = fs::read_dir(&top) else {
            continue;
        };
        let v2 = top.join("cgroup.events").exists();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(pid) = name
                .rsplit_once('.')
                .and_then(|(_, p)| p.parse::<u32>().ok())
            else {
                continue;
            };
            // A v2 group is named for the process that made it, which
            // may have exited while the VM it launched runs on.
            if alive(pid) || (v2 && populated(&e.path())) {
                continue;
            }
            remove_group(&e.path());
        }
    }
}

/// The `vmtools/<name>.<n>` group that a process (`self` or a pid) or
/// its main thread is in on the v2 hierarchy at `root`, from
/// /proc/PID/cgroup (`0::/vmtools/<name>.<n>/emulator` once placed).
fn v2_group_of(pid: &str, root: &Path) -> Option<PathBuf> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    vm_group_in(&text, root)
}

/// The `vmtools/<group>` part of a /proc/PID/cgroup text's v2 line.
fn vm_group_in(text: &str, root: &Path) -> Option<PathBuf> {
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let mut parts = path.strip_prefix('/')?.split('/');
    let (top, group) = (parts.next()?, parts.next()?);
    (top == "vmtools" && !group.is_empty() && group != "." && group != "..")
        .then(|| root.join(top).join(group))
}

/// Whether a v2 group or any group below it has a process in it.
fn populated(group: &Path) -> bool {
    fs::read_to_string(group.join("cgroup.events"))
        .map_or(true, |e| e.lines().any(|l| l == "populated 1"))
}

/// Removes a VM's group, children first; best effort (the kernel refuses
/// a group that still has tasks).
fn remove_group(dir: &Path) {
    if let Ok(children) = fs::read_dir(dir) {
        for c in children.flatten() {
            if c.path().is_dir() {
                let _ = fs::remove_dir(c.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// /proc/PID/cgroup names a VM's v2 group only as `vmtools/<group>`
    /// right under the root; anything else, or a path that climbs, is not.
    #[test]
    fn a_vm_group_is_read_from_proc_cgroup_and_nothing_else() {
        let root = Path::new("/sys/fs/cgroup");
        let g = |t: &str| vm_group_in(t, root);
        assert_eq!(
            g("0::/vmtools/web.42/emulator\n"),
            Some(root.join("vmtools/web.42"))
        );
        assert_eq!(
            g("1:cpu:/x\n0::/vmtools/web.42\n"),
            Some(root.join("vmtools/web.42"))
        );
        for hostile in [
            "",
            "0::/\n",
            "0::/vmtools\n",
            "0::/vmtools/\n",
            "0::/vmtools/..\n",
            "0::/vmtools/.\n",
            "0::/other/web.42\n",
            "0::vmtools/web.42\n",
            "4:memory:/vmtools/web.42\n",
        ] {
            assert_eq!(g(hostile), None, "{hostile:?}");
        }
    }

    #[test]
    fn weights_keep_the_defaults_and_round_trip() {
        assert_eq!(shares_to_weight(1024), 100);
        assert_eq!(shares_to_weight(512), 50);
        assert_eq!(weight_to_shares(50), 512);
        assert_eq!(shares_to_weight(2), 1, "clamped to v2's minimum");
        assert_eq!(shares_to_weight(262_144), 10_000, "and its maximum");
        for s in (256..=262_144).step_by(256) {
            assert_eq!(weight_to_shares(shares_to_weight(s)), s.min(102_400));
        }
    }
}
