//! Finding a VM's v2 group from /proc, and removing the groups of VMs
//! that are gone.

use std::fs;
use std::path::{Path, PathBuf};

use super::Hierarchy;

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
pub(super) fn v2_group_of(pid: &str, root: &Path) -> Option<PathBuf> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    vm_group_in(&text, root)
}

/// The `vmtools/<group>` part of a /proc/PID/cgroup text's v2 line.
pub(super) fn vm_group_in(text: &str, root: &Path) -> Option<PathBuf> {
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let mut parts = path.strip_prefix('/')?.split('/');
    let (top, group) = (parts.next()?, parts.next()?);
    (top == "vmtools" && !group.is_empty() && group != "." && group != "..")
        .then(|| root.join(top).join(group))
}

/// Whether a v2 group or any group below it has a process in it.
pub(super) fn populated(group: &Path) -> bool {
    fs::read_to_string(group.join("cgroup.events"))
        .map_or(true, |e| e.lines().any(|l| l == "populated 1"))
}

/// Removes a VM's group, children first; best effort (the kernel refuses
/// a group that still has tasks).
pub(super) fn remove_group(dir: &Path) {
    if let Ok(children) = fs::read_dir(dir) {
        for c in children.flatten() {
            if c.path().is_dir() {
                let _ = fs::remove_dir(c.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}
