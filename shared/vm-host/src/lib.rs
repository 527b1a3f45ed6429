//! Host plumbing shared by several tools.

pub mod capabilities;
pub mod cgroup;
