//! Host storage the tests make and take down again: loop block devices
//! and small tmpfs mounts (root only; each skips with a printed reason
//! where it cannot be made).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A loop device over a file, detached when dropped.
#[derive(Debug)]
pub struct LoopDevice(pub String);

impl LoopDevice {
    pub fn attach(file: &Path) -> Option<Self> {
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(file)
            .output()
            .ok()?;
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || dev.is_empty() {
            eprintln!(
                "SKIP (block device): losetup: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Self(dev))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// A tmpfs of `size` (mount's syntax, e.g. "1m") on `dir`, unmounted
/// (lazily) when dropped, which then checks the mount is gone.
#[derive(Debug)]
pub struct SmallTmpfs(PathBuf);

impl SmallTmpfs {
    pub fn mount(dir: &Path, size: &str) -> Option<Self> {
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!(
                "SKIP: cannot mount a tmpfs on {} (needs root)",
                dir.display()
            );
            return None;
        }
        Some(Self(dir.to_path_buf()))
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        assert!(
            !mounts.contains(self.0.to_str().unwrap_or_default()),
            "{} is still mounted",
            self.0.display()
        );
    }
}
