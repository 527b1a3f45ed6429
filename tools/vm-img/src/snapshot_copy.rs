//! `convert -l`: an internal snapshot as a convert source. The source is
//! copied beside the output, the snapshot applied to the copy (the same
//! code as `snapshot -a`), and the copy read; the source is never written.
//! The copy names its backing file by an absolute path, so it resolves as
//! the source's did, and it is removed when done, whatever happens.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use vm_image::qcow2;

/// The snapshot `-l` names: `snapshot.id=ID`, `snapshot.name=NAME`, both,
/// or a bare ID or name (an ID first, as qemu-img looks).
fn wanted(param: &str, snaps: &[qcow2::meta::Snapshot]) -> Result<String> {
    let (mut id, mut name) = (None, None);
    let items = crate::input::names::option_items(param);
    check_param(param)?;
    if param.starts_with("snapshot.") {
        for item in &items {
            match item.split_once('=') {
                Some(("snapshot.id", v)) => id = Some(v),
                Some(("snapshot.name", v)) => name = Some(v),
                // check_param refused any other key.
                _ => {}
            }
        }
    }
    let found = match (id, name) {
        (None, None) => qcow2::snapshot::find(snaps, param).map(|i| &snaps[i]),
        (id, name) => snaps
            .iter()
            .find(|s| id.is_none_or(|i| s.id == i) && name.is_none_or(|n| s.name == n)),
    };
    found
        .map(|s| s.id.clone())
        .ok_or_else(|| anyhow!("Failed to load snapshot: Can't find snapshot"))
}

/// Checks a `-l` argument as qemu-img does while reading its options,
/// before it looks at anything else: the option form takes only
/// `snapshot.id` and `snapshot.name`.
pub fn check_param(param: &str) -> Result<()> {
    if !param.starts_with("snapshot.") {
        return Ok(());
    }
    for item in crate::input::names::option_items(param) {
        let key = item.split_once('=').map_or(item.as_str(), |(k, _)| k);
        if !matches!(key, "snapshot.id" | "snapshot.name") || !item.contains('=') {
            return Err(crate::hint::Hinted::new(
                format!("Invalid parameter '{key}'"),
                vec![crate::hint::Line::Prefixed(format!(
                    "Failed in parsing snapshot param '{param}'"
                ))],
            )
            .into());
        }
    }
    Ok(())
}

/// A copy of `source` at snapshot `param`, removed on drop.
#[derive(Debug)]
pub struct SnapshotCopy {
    pub path: PathBuf,
}

impl SnapshotCopy {
    /// `source` is a qcow2 image the caller has open (and locked) for
    /// reading; the copy goes into `dir`.
    pub fn make(source: &Path, param: &str, dir: &Path) -> Result<Self> {
        let snaps = crate::cmd::snapshot::read_snapshots(source)?;
        let id = wanted(param, &snaps)?;
        let name = source
            .file_name()
            .map_or_else(|| "image".into(), |n| n.to_string_lossy().into_owned());
        let path = dir.join(format!(".{name}.snapshot-{}", std::process::id()));
        // A new file of our own (O_EXCL): a name planted there beforehand,
        // a symlink say, is refused rather than followed.
        let mut dst = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("Could not create '{}'", path.display()))?;
        let copy = Self { path };
        let mut src =
            std::fs::File::open(source).map_err(|e| crate::util::could_not_open(source, e))?;
        std::io::copy(&mut src, &mut dst)
            .with_context(|| format!("Could not copy '{}'", source.display()))?;
        drop(dst);
        let meta = qcow2::meta::Meta::open(source, std::fs::File::open(source)?)?;
        if let Some(b) = &meta.header.backing_file {
            let abs = vm_image::resolve_backing(source, b);
            let fmt = meta.header.backing_format.as_deref();
            qcow2::set_backing(&copy.path, Some(&abs.to_string_lossy()), fmt)?;
        }
        // Errors name the source, which the user gave, not the copy.
        qcow2::snapshot::apply(&copy.path, &id, None).map_err(|e| {
            let msg = e.to_string().replace(
                &copy.path.display().to_string(),
                &source.display().to_string(),
            );
            anyhow!("Failed to load snapshot: {msg}")
        })?;
        Ok(copy)
    }
}

impl Drop for SnapshotCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
