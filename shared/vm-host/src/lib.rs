//! Host plumbing shared by several tools.

pub mod affinity;
pub mod capabilities;
pub mod cgroup;
