//! Host plumbing shared by several tools.

pub mod affinity;
pub mod capabilities;
pub mod cgroup;
pub mod launch;
pub mod netlink;
pub mod tap;
