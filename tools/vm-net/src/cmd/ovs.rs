//! Open vSwitch through ovs-vsctl (its database protocol is not ours to
//! reimplement): a clear error naming the package when it is missing.

use std::process::Command;

use anyhow::{anyhow, bail, Result};

use crate::cli::{Ovs, OvsBridge, OvsPort};

fn vsctl(args: &[&str]) -> Result<String> {
    let out = Command::new("ovs-vsctl")
        .args(["--timeout=10"])
        .args(args)
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow!(
                    "ovs-vsctl not found: install Open vSwitch (Debian package openvswitch-switch)"
                )
            } else {
                anyhow!("running ovs-vsctl: {e}")
            }
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err
            .lines()
            .map(|l| l.trim_start_matches("ovs-vsctl: "))
            .collect::<Vec<_>>()
            .join("; ");
        bail!("ovs-vsctl: {}", line.trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The bridge and its ports, as vm-net prints an Open vSwitch bridge.
fn show(bridge: &str, json: bool) -> Result<()> {
    let ports: Vec<String> = vsctl(&["list-ports", bridge])?
        .lines()
        .map(str::to_string)
        .collect();
    if json {
        println!("{}", serde_json::json!({"bridge": bridge, "ports": ports}));
    } else {
        println!(
            "{}: {}",
            vm_spec::text::escape(bridge),
            vm_spec::text::escape(&ports.join(" "))
        );
    }
    Ok(())
}

fn checked(name: &str) -> Result<&str> {
    vm_spec::check_ifname(name).map_err(|e| anyhow!("{e}"))?;
    Ok(name)
}

pub fn run(o: &Ovs, json: bool) -> Result<()> {
    match o {
        Ovs::Bridge(OvsBridge::Add {
            name,
            may_exist,
            datapath,
        }) => {
            let name = checked(name)?;
            let mut a = vec![];
            if *may_exist {
                a.push("--may-exist");
            }
            a.extend(["add-br", name]);
            let set;
            if let Some(d) = datapath {
                set = format!("datapath_type={d}");
                a.extend(["--", "set", "bridge", name, &set]);
            }
            vsctl(&a)?;
            show(name, json)
        }
        Ovs::Bridge(OvsBridge::Del { name, if_exists }) => {
            let name = checked(name)?;
            let mut a = vec![];
            if *if_exists {
                a.push("--if-exists");
            }
            a.extend(["del-br", name]);
            vsctl(&a).map(drop)
        }
        Ovs::Port(OvsPort::Add {
            bridge,
            port,
            may_exist,
        }) => {
            let (bridge, port) = (checked(bridge)?, checked(port)?);
            let mut a = vec![];
            if *may_exist {
                a.push("--may-exist");
            }
            a.extend(["add-port", bridge, port]);
            vsctl(&a)?;
            show(bridge, json)
        }
        Ovs::Port(OvsPort::Del {
            bridge,
            port,
            if_exists,
        }) => {
            let (bridge, port) = (checked(bridge)?, checked(port)?);
            let mut a = vec![];
            if *if_exists {
                a.push("--if-exists");
            }
            a.extend(["del-port", bridge, port]);
            vsctl(&a)?;
            show(bridge, json)
        }
    }
}
