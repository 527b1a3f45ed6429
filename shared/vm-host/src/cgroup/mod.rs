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

mod stale;
mod tuning;

pub use stale::remove_stale;
use stale::{populated, remove_group, v2_group_of};
pub use tuning::{shares_to_weight, weight_to_shares, CpuTuning};

#[cfg(test)]
mod tests {
    use super::stale::vm_group_in;
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
