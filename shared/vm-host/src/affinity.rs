//! Thread CPU affinity (sched_setaffinity on a thread id) and the host's
//! online CPUs, which every CPU list is checked against when applied.

use std::io;

use vm_spec::CpuList;

/// CPUs the host has online (`/sys/devices/system/cpu/online`).
pub fn online_cpus() -> io::Result<CpuList> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online")?;
    text.trim()
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("online CPUs: {e}")))
}

/// Refuses a list naming CPUs the host does not have online.
pub fn check_online(list: &CpuList) -> Result<(), String> {
    let online = online_cpus().map_err(|e| e.to_string())?;
    let missing: Vec<u32> = list.iter().filter(|c| !online.contains(*c)).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "CPU {} is not online (online: {online})",
            CpuList::from_cpus(missing)
        ))
    }
}

/// The affinity of thread `tid`.
pub fn get(tid: u32) -> io::Result<CpuList> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity writes at most size_of::<cpu_set_t>() bytes
    // into the set we pass.
    let r = unsafe {
        libc::sched_getaffinity(
            tid as libc::pid_t,
            std::mem::size_of::<libc::cpu_set_t>(),
            &raw mut set,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let max = (std::mem::size_of::<libc::cpu_set_t>() * 8) as u32;
    // SAFETY: CPU_ISSET reads the set for a CPU number below its size.
    Ok(CpuList::from_cpus(
        (0..max).filter(|&c| unsafe { libc::CPU_ISSET(c as usize, &set) }),
    ))
}

/// Pins thread `tid` to `list`.
pub fn set(tid: u32, list: &CpuList) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for c in list.iter() {
        // SAFETY: CPU_SET writes the bit for a CPU below the set's size
        // (CPU lists stop below 8192 = the set's size).
        unsafe { libc::CPU_SET(c as usize, &mut set) };
    }
    // SAFETY: sched_setaffinity reads the set we pass.
    let r = unsafe {
        libc::sched_setaffinity(
            tid as libc::pid_t,
            std::mem::size_of::<libc::cpu_set_t>(),
            &raw const set,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// NUMA nodes the host has online (`/sys/devices/system/node/online`;
/// a host without that file has node 0 only).
pub fn online_nodes() -> CpuList {
    std::fs::read_to_string("/sys/devices/system/node/online")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| CpuList::from_cpus([0]))
}

/// Refuses a node set naming nodes the host does not have online.
pub fn check_nodes_online(nodes: &CpuList) -> Result<(), String> {
    let online = online_nodes();
    let missing: Vec<u32> = nodes.iter().filter(|n| !online.contains(*n)).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "NUMA node {} is not online (online: {online})",
            CpuList::from_cpus(missing)
        ))
    }
}
