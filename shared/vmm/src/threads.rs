//! What every vCPU thread and iothread runs first, on itself.

use std::sync::Arc;

/// Which machine thread is starting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadRole {
    Vcpu(u8),
    IoThread(u32),
}

impl ThreadRole {
    /// The thread's name, as `ps` shows it (`vcpu0`, `iothread1`).
    pub fn name(self) -> String {
        match self {
            Self::Vcpu(i) => format!("vcpu{i}"),
            Self::IoThread(n) => format!("iothread{n}"),
        }
    }
}

/// Code a machine thread runs on itself before anything else (vm-run
/// moves the thread into its cgroup: a thread moving itself is cheap
/// where moving another one waits for an RCU grace period).
#[derive(Clone)]
pub struct ThreadHook(pub Arc<dyn Fn(ThreadRole) + Send + Sync>);

impl ThreadHook {
    pub(crate) fn run(hook: Option<&Self>, role: ThreadRole) {
        if let Some(h) = hook {
            (h.0)(role);
        }
    }
}

impl std::fmt::Debug for ThreadHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ThreadHook")
    }
}
