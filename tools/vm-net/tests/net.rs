//! vm-net inside network namespaces the tests make: what it makes is what
//! `ip -j link` sees, bad input changes nothing, Open vSwitch through a
//! private ovsdb-server and ovs-vswitchd on the userspace datapath.

use std::process::{Command, Output};

use test_guest::have_tool;
use test_guest::netns::Netns;

/// A network namespace for vm-net.
struct Ns(Netns);

impl Ns {
    fn new() -> Option<Self> {
        Netns::new("vmt").map(Self)
    }
    fn exec(&self, prog: &str, args: &[&str]) -> Output {
        self.0.exec(prog).args(args).output().unwrap()
    }
    /// vm-net in this namespace: (exit code, stdout, stderr).
    fn net(&self, args: &[&str]) -> (i32, String, String) {
        decode(&self.exec(env!("CARGO_BIN_EXE_vm-net"), args))
    }
    fn link(&self, name: &str) -> Option<serde_json::Value> {
        self.0.link(name)
    }
    fn names(&self) -> Vec<String> {
        self.0.link_names()
    }
}

fn decode(o: &Output) -> (i32, String, String) {
    let r = (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(!r.2.contains("panicked"), "{}", r.2);
    r
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// The single error line, which must start with "vm-net: error: ".
fn error_line(err: &str) -> &str {
    let lines: Vec<_> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(lines[0].starts_with("vm-net: error: "), "{err}");
    lines[0]
}

/// A bridge keeps the MAC it was made with while taps come and go (a
/// bridge without one takes its lowest port's, and a restored guest's
/// cached address for the host goes stale).
#[test]
fn a_bridge_keeps_its_mac_as_taps_come_and_go() {
    let Some(ns) = Ns::new() else { return };
    let (code, _, err) = ns.net(&["bridge", "add", "brm"]);
    assert_eq!(code, 0, "{err}");
    let mac = |n: &str| ns.link(n).unwrap()["address"].as_str().unwrap().to_string();
    let want = vm_host::netlink::bridge_mac("brm")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    assert_eq!(mac("brm"), want);
    for tap in ["tapm0", "tapm1", "tapm2"] {
        let (code, _, err) = ns.net(&["tap", "add", tap, "--bridge", "brm"]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(mac("brm"), want, "with {tap} on it");
        let (code, _, err) = ns.net(&["tap", "del", tap]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(mac("brm"), want, "after {tap} left");
    }
}

#[test]
fn bridges_and_taps_are_what_ip_sees() {
    let Some(ns) = Ns::new() else { return };
    let (code, out, err) = ns.net(&["bridge", "add", "br0"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["ifname"], "br0");
    let br = ns.link("br0").unwrap();
    assert_eq!(br["linkinfo"]["info_kind"], "bridge");
    assert_eq!(br["ifalias"], "vmtools");

    let (code, out, err) = ns.net(&[
        "tap", "add", "tap0", "--bridge", "br0", "--owner", "1000", "--queues", "2",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["master"], "br0");
    let tap = ns.link("tap0").unwrap();
    assert_eq!(tap["master"], "br0");
    let data = &tap["linkinfo"]["info_data"];
    assert_eq!(data["type"], "tap");
    assert_eq!(data["vnet_hdr"], true);
    assert_eq!(data["multi_queue"], true);
    assert_eq!(data["persist"], true);
    // ip prints the owner's name where it has one.
    let who = Command::new("getent")
        .args(["passwd", "1000"])
        .output()
        .unwrap();
    let name = String::from_utf8_lossy(&who.stdout)
        .split(':')
        .next()
        .unwrap_or("")
        .to_string();
    assert!(
        data["user"] == 1000 || data["user"] == name.as_str(),
        "{data}"
    );

    let (code, _, err) = ns.net(&["link", "up", "br0"]);
    assert_eq!(code, 0, "{err}");
    let flags = ns.link("br0").unwrap()["flags"].clone();
    assert!(flags.as_array().unwrap().contains(&"UP".into()), "{flags}");
    let (code, out, err) = ns.net(&["addr", "add", "br0", "192.168.122.1/24"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["addresses"][0], "192.168.122.1/24");
    let a = ns.exec("ip", &["-j", "addr", "show", "br0"]);
    let a: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    let info = &a[0]["addr_info"][0];
    assert_eq!(
        (info["local"].as_str(), info["prefixlen"].as_u64()),
        (Some("192.168.122.1"), Some(24))
    );
    assert_eq!(ns.net(&["addr", "del", "br0", "192.168.122.1/24"]).0, 0);
    let a = ns.exec("ip", &["-j", "addr", "show", "br0"]);
    assert!(!String::from_utf8_lossy(&a.stdout).contains("192.168.122.1"));
    assert_eq!(ns.net(&["link", "down", "br0"]).0, 0);
    let flags = ns.link("br0").unwrap()["flags"].clone();
    assert!(!flags.as_array().unwrap().contains(&"UP".into()), "{flags}");

    // brctl addif / delif on a link vm-net did not make.
    assert!(ns
        .exec(
            "ip",
            &["link", "add", "v0", "type", "veth", "peer", "name", "v1"]
        )
        .status
        .success());
    let (code, _, err) = ns.net(&["bridge", "attach", "br0", "v0"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(ns.link("v0").unwrap()["master"], "br0");
    let (code, out, _) = ns.net(&["bridge", "list"]);
    assert_eq!(code, 0);
    let ports = json(&out)[0]["ports"].clone();
    assert_eq!(ports, serde_json::json!(["tap0", "v0"]));
    assert_eq!(ns.net(&["bridge", "detach", "br0", "v0"]).0, 0);
    assert!(ns.link("v0").unwrap()["master"].is_null());

    // vm-net list: only what vm-net made.
    let (code, out, _) = ns.net(&["list"]);
    assert_eq!(code, 0);
    let names: Vec<_> = json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].clone())
        .collect();
    assert_eq!(names, ["br0", "tap0"]);

    assert_eq!(ns.net(&["tap", "del", "tap0"]).0, 0);
    assert_eq!(ns.net(&["bridge", "del", "br0"]).0, 0);
    let left = ns.names();
    assert!(!left.iter().any(|n| n == "br0" || n == "tap0"), "{left:?}");
    assert_eq!(json(&ns.net(&["list"]).1), serde_json::json!([]));
}

#[test]
fn idempotent_where_ovs_vsctl_is() {
    let Some(ns) = Ns::new() else { return };
    assert_eq!(ns.net(&["bridge", "add", "br0"]).0, 0);
    let (code, _, err) = ns.net(&["bridge", "add", "br0"]);
    assert_eq!(code, 1);
    assert!(error_line(&err).contains("'br0' exists"), "{err}");
    assert_eq!(ns.net(&["bridge", "add", "br0", "--may-exist"]).0, 0);
    assert_eq!(ns.net(&["tap", "add", "t0"]).0, 0);
    assert_eq!(
        ns.net(&["tap", "add", "t0", "--may-exist", "--bridge", "br0"])
            .0,
        0
    );
    assert_eq!(
        ns.link("t0").unwrap()["master"],
        "br0",
        "--may-exist still attaches"
    );
    assert_eq!(ns.net(&["tap", "del", "t0"]).0, 0);
    let (code, _, err) = ns.net(&["tap", "del", "t0"]);
    assert_eq!(code, 1);
    assert!(error_line(&err).contains("no tap named 't0'"));
    assert_eq!(ns.net(&["tap", "del", "t0", "--if-exists"]).0, 0);
    assert_eq!(ns.net(&["bridge", "del", "br0"]).0, 0);
    assert_eq!(ns.net(&["bridge", "del", "br0", "--if-exists"]).0, 0);
}

#[test]
fn bad_input_makes_nothing() {
    let Some(ns) = Ns::new() else { return };
    let before = ns.names();
    let cases: &[(&[&str], &str)] = &[
        (
            &["bridge", "add", "sixteen-bytes-xx"],
            "longer than 15 bytes",
        ),
        (
            &["tap", "add", "tap0", "--bridge", "nobridge"],
            "no bridge named 'nobridge'",
        ),
        (
            &["bridge", "attach", "nobridge", "lo"],
            "no bridge named 'nobridge'",
        ),
        (&["bridge", "attach", "lo", "lo"], "'lo' is not a bridge"),
        (&["bridge", "del", "lo"], "'lo' is not a bridge"),
        (&["tap", "del", "lo"], "'lo' is not a tap"),
        (&["tap", "add", "lo"], "'lo' exists"),
        (&["addr", "add", "lo", "10.0.0.1"], "prefix length"),
        (&["addr", "add", "lo", "10.0.0.1/33"], "0 to 32"),
        (&["addr", "add", "lo", "10.0.0.300/24"], "not an IP address"),
        (&["link", "up", "nosuch"], "no interface named 'nosuch'"),
        // The kernel would make br0 / tap0 from these and we would lose it.
        (&["bridge", "add", "br%d"], "may not contain '%'"),
        (&["tap", "add", "tap%d"], "may not contain '%'"),
        (&["bridge", "add", "br\x1b"], "control characters"),
    ];
    for (args, want) in cases {
        let (code, _, err) = ns.net(args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(error_line(&err).contains(want), "{args:?}: {err}");
    }
    assert_eq!(ns.names(), before, "nothing was made");
    // A 15-byte name is the longest allowed.
    assert_eq!(ns.net(&["bridge", "add", "fifteen-bytes-x"]).0, 0);
    // Usage errors exit 2.
    assert_eq!(ns.net(&["tap", "add"]).0, 2);
    assert_eq!(ns.net(&["mac", "--name", "web"]).0, 2);

    // Without CAP_NET_ADMIN: one line, before anything is tried.
    let o = ns.exec(
        "setpriv",
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_vm-net"),
            "bridge",
            "add",
            "brx",
        ],
    );
    let (code, _, err) = decode(&o);
    assert_eq!(code, 1, "{err}");
    assert!(error_line(&err).contains("needs CAP_NET_ADMIN"), "{err}");
    assert!(ns.link("brx").is_none());
}

#[test]
fn mac_addresses() {
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_vm-net"))
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success());
        json(&String::from_utf8_lossy(&o.stdout))["mac"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let a = run(&["mac", "--name", "web", "--index", "0"]);
    assert!(a.starts_with("52:54:00:"), "{a}");
    assert_eq!(
        a,
        run(&["mac", "--name", "web", "--index", "0"]),
        "the same every time"
    );
    assert_ne!(a, run(&["mac", "--name", "web", "--index", "1"]));
    assert_ne!(a, run(&["mac", "--name", "db", "--index", "0"]));
    let r1 = run(&["mac"]);
    assert!(r1.starts_with("52:54:00:"));
    assert_ne!(r1, run(&["mac"]), "random each time");
}

/// ovsdb-server and ovs-vswitchd of our own, in the namespace, with their
/// sockets in a temp folder (OVS_RUNDIR), stopped when dropped.
struct Ovs {
    dir: tempfile::TempDir,
}

impl Ovs {
    fn start(ns: &Ns) -> Option<Self> {
        if !have_tool("ovs", "ovs-vsctl") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_string();
        let schema = "/usr/share/openvswitch/vswitch.ovsschema";
        let sh = |cmd: &mut Command| {
            let o = cmd
                .env("OVS_RUNDIR", &d)
                .env("OVS_LOGDIR", &d)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{cmd:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        sh(Command::new("ovsdb-tool").args(["create", &format!("{d}/conf.db"), schema]));
        sh(ns.0.exec("ovsdb-server").arg(format!("{d}/conf.db")).args([
            &format!("--remote=punix:{d}/db.sock"),
            &format!("--pidfile={d}/ovsdb.pid"),
            "--detach",
            &format!("--log-file={d}/ovsdb.log"),
        ]));
        sh(Command::new("ovs-vsctl").args(["--no-wait", "init"]));
        sh(ns.0.exec("ovs-vswitchd").args([
            &format!("--pidfile={d}/vswitchd.pid"),
            "--detach",
            &format!("--log-file={d}/vswitchd.log"),
        ]));
        Some(Self { dir })
    }
    fn net(&self, ns: &Ns, args: &[&str]) -> (i32, String, String) {
        let o =
            ns.0.exec(env!("CARGO_BIN_EXE_vm-net"))
                .args(args)
                .env("OVS_RUNDIR", self.dir.path())
                .output()
                .unwrap();
        decode(&o)
    }
}

impl Drop for Ovs {
    fn drop(&mut self) {
        for pid in ["vswitchd.pid", "ovsdb.pid"] {
            if let Ok(p) = std::fs::read_to_string(self.dir.path().join(pid)) {
                let _ = Command::new("kill").arg(p.trim()).status();
            }
        }
    }
}

#[test]
fn open_vswitch_bridges_and_ports() {
    let Some(ns) = Ns::new() else { return };
    let Some(ovs) = Ovs::start(&ns) else { return };
    let (code, out, err) = ovs.net(
        &ns,
        &["ovs", "bridge", "add", "ovsbr0", "--datapath", "netdev"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        json(&out),
        serde_json::json!({"bridge": "ovsbr0", "ports": []})
    );
    assert!(
        ns.link("ovsbr0").is_some(),
        "the userspace datapath made the bridge's port"
    );
    let (code, _, err) = ovs.net(&ns, &["ovs", "bridge", "add", "ovsbr0"]);
    assert_eq!(code, 1);
    assert!(error_line(&err).contains("ovs-vsctl"), "{err}");
    assert_eq!(
        ovs.net(&ns, &["ovs", "bridge", "add", "ovsbr0", "--may-exist"])
            .0,
        0
    );
    assert_eq!(ns.net(&["tap", "add", "vnet0"]).0, 0);
    let (code, out, err) = ovs.net(&ns, &["ovs", "port", "add", "ovsbr0", "vnet0"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["ports"], serde_json::json!(["vnet0"]));
    assert_eq!(
        ovs.net(
            &ns,
            &["ovs", "port", "add", "ovsbr0", "vnet0", "--may-exist"]
        )
        .0,
        0
    );
    let (code, out, _) = ovs.net(&ns, &["ovs", "port", "del", "ovsbr0", "vnet0"]);
    assert_eq!(code, 0);
    assert_eq!(json(&out)["ports"], serde_json::json!([]));
    assert_eq!(
        ovs.net(
            &ns,
            &["ovs", "port", "del", "ovsbr0", "vnet0", "--if-exists"]
        )
        .0,
        0
    );
    assert_eq!(ovs.net(&ns, &["ovs", "bridge", "del", "ovsbr0"]).0, 0);
    assert_eq!(
        ovs.net(&ns, &["ovs", "bridge", "del", "ovsbr0", "--if-exists"])
            .0,
        0
    );
    assert!(ns.link("ovsbr0").is_none());
}
