//! Network namespaces for tests: made fresh, removed with everything in
//! them when dropped, never the host's own interfaces.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::available;

#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A new namespace named `{prefix}-{pid}-{n}`; None (with the skip
    /// printed, or a failure under VMTOOLS_REQUIRE=netns) when this machine
    /// cannot make one.
    pub fn new(prefix: &str) -> Option<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        available("netns", ok).then_some(Self { name })
    }

    /// `ip -n NS ARGS`.
    pub fn ip(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .expect("run ip")
    }

    /// `prog` inside the namespace (ended after two minutes, whatever
    /// happens, so a stuck guest cannot hang the test run).
    pub fn exec(&self, prog: &str) -> Command {
        let mut c = Command::new("timeout");
        c.args(["120", "ip", "netns", "exec", &self.name, prog]);
        c
    }

    /// `ip -j -d link show NAME`, or None when there is no such link.
    pub fn link(&self, name: &str) -> Option<serde_json::Value> {
        let o = self.ip(&["-j", "-d", "link", "show", name]);
        if !o.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("ip -j prints JSON");
        Some(v[0].clone())
    }

    /// Every link's name, in index order.
    pub fn link_names(&self) -> Vec<String> {
        let o = self.ip(&["-j", "link", "show"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("ip -j prints JSON");
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["ifname"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
