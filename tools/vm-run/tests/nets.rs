//! virtio-net end to end, inside network namespaces the tests make: two
//! test guests on one bridge exchange frames, a frame the host puts on a
//! tap reaches the guest and its answer is captured on the tap, a tap
//! vm-run made for a bridge goes away with its VM, bad input is refused.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use test_guest::netns::Netns;
use test_guest::{have_kvm, have_tool, kvm_lock, GUEST_ELF};

/// A network namespace with its own run folder and a bridge; the VMs in
/// it are killed when it is dropped, then the namespace goes.
struct Ns {
    ns: Netns,
    dir: tempfile::TempDir,
}

impl Ns {
    fn new() -> Option<Self> {
        if !have_kvm() {
            return None;
        }
        let ns = Self {
            ns: Netns::new("vmtn")?,
            dir: tempfile::tempdir().unwrap(),
        };
        // A bridge, up, as the guide's host has.
        assert!(ns
            .ip(&["link", "add", "br0", "type", "bridge"])
            .status
            .success());
        assert!(ns.ip(&["link", "set", "br0", "up"]).status.success());
        Some(ns)
    }
    fn ip(&self, args: &[&str]) -> Output {
        self.ns.ip(args)
    }
    /// Makes tap `name` (with vnet headers), with `addr` on it if given.
    fn tap(&self, name: &str, addr: Option<&str>) {
        let o = self.ip(&["tuntap", "add", "dev", name, "mode", "tap", "vnet_hdr"]);
        assert!(o.status.success(), "{o:?}");
        if let Some(a) = addr {
            let o = self.ip(&["addr", "add", a, "dev", name]);
            assert!(o.status.success(), "{o:?}");
        }
    }
    fn in_ns(&self, prog: &str) -> Command {
        let mut c = self.ns.exec(prog);
        c.env("VMTOOLS_RUN_DIR", self.dir.path().join("run"))
            .env("VMTOOLS_CONFIG_DIR", self.dir.path().join("defs"))
            .stdin(Stdio::null());
        c
    }
    fn vm_run(&self, args: &[&str]) -> (i32, String, String) {
        let o = self
            .in_ns(env!("CARGO_BIN_EXE_vm-run"))
            .args(args)
            .output()
            .unwrap();
        let r = (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        );
        assert!(!r.2.contains("panicked"), "{}", r.2);
        r
    }
    fn spec(&self, name: &str, mode: &str, nets: &serde_json::Value) -> String {
        let v = json!({"name": name, "vcpus": 1, "memory": "32MiB",
            "boot": {"kernel": GUEST_ELF, "cmdline": format!("mode={mode}")},
            "on_reboot": "destroy", "nets": nets});
        let p = self.dir.path().join(format!("{name}.json"));
        std::fs::write(&p, v.to_string()).unwrap();
        p.to_str().unwrap().to_string()
    }
    fn console(&self, vm: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("run").join(vm).join("console.log"))
            .unwrap_or_default()
    }
    fn wait_console(&self, vm: &str, what: &str) -> String {
        let t0 = Instant::now();
        loop {
            let c = self.console(vm);
            if c.contains(what) {
                return c;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "no '{what}' from {vm}: {c}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    fn link(&self, name: &str) -> Option<serde_json::Value> {
        self.ns.link(name)
    }
    fn link_names(&self) -> Vec<String> {
        self.ns.link_names()
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(self.dir.path().join("run")) {
            for e in entries.flatten() {
                if let Ok(st) = vm_control::read_state(&e.path()) {
                    // SAFETY: killing a VM process this test started.
                    unsafe { libc::kill(st.pid as i32, libc::SIGKILL) };
                }
            }
        }
        // The namespace itself goes when `ns` drops, after this.
    }
}

fn json_of(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[test]
fn two_guests_on_a_bridge_exchange_frames() {
    let Some(ns) = Ns::new() else { return };
    let _l = kvm_lock();
    let pong = ns.spec(
        "pong",
        "net-pong",
        &json!([{"id": "net0", "bridge": "br0", "queues": 2}]),
    );
    let (code, out, err) = ns.vm_run(&["start", "--detach", &pong]);
    assert_eq!(code, 0, "{err}");
    let st = json_of(&out);
    let tap = st["nets"][0]["tap"].as_str().unwrap().to_string();
    let mac = st["nets"][0]["mac"].as_str().unwrap().to_string();
    assert_eq!(
        mac,
        vm_spec::MacAddr::for_nic("pong", 0).to_string(),
        "generated, stable"
    );
    // vm-run's tap: on the bridge, up, multiqueue with a vnet header.
    let l = ns.link(&tap).unwrap();
    assert_eq!(l["master"], "br0");
    let data = &l["linkinfo"]["info_data"];
    assert_eq!(
        (data["vnet_hdr"].as_bool(), data["multi_queue"].as_bool()),
        (Some(true), Some(true))
    );
    assert!(l["flags"].as_array().unwrap().contains(&"UP".into()), "{l}");
    ns.wait_console("pong", "net-pong ready");

    let ping = ns.spec(
        "ping",
        "net-ping",
        &json!([{"id": "net0", "bridge": "br0", "mac": "52:54:00:00:00:01"}]),
    );
    let (code, out, err) = ns.vm_run(&["start", &ping]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("net-ping got src={mac} text=pong from {mac}")),
        "{out}"
    );
    let c = ns.wait_console("pong", "net-pong got");
    assert!(c.contains("text=ping from 52:54:00:00:00:01"), "{c}");

    // domifstat and domiflist.
    let (code, out, _) = ns.vm_run(&["stats", "pong", "--iface", "net0", "--json"]);
    assert_eq!(code, 0);
    let s = &json_of(&out)["nets"][0];
    assert!(s["rx_packets"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["tx_packets"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["tx_errs"], 0);
    let (code, out, _) = ns.vm_run(&["ifaces", "pong", "--json"]);
    assert_eq!(code, 0);
    let i = &json_of(&out)[0];
    assert_eq!(
        (i["interface"].as_str(), i["source"].as_str()),
        (Some(tap.as_str()), Some("br0"))
    );
    assert_eq!(i["state"], "up", "{i}");

    // The tap vm-run made goes away with the VM, even on kill -9.
    let pid = st["pid"].as_i64().unwrap() as i32;
    // SAFETY: killing the VM this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let t0 = Instant::now();
    while ns.link(&tap).is_some() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{tap} outlived its VM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(ns.link_names(), ["lo", "br0"]);
}

/// Sends a "ping from host" frame on `iface` and prints the "pong" frame
/// that comes back: `src text`.
const PING_ON_TAP: &str = r#"
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))
s.bind((sys.argv[1], 0))
s.settimeout(60)
f = b"\xff" * 6 + bytes.fromhex("020000000042") + b"\x88\xb5" + b"ping from host"
s.send(f + b"\0" * (60 - len(f)))
while True:
    f = s.recv(2048)
    if f[12:14] == b"\x88\xb5" and f[14:18] == b"pong":
        print(f[6:12].hex(":"), f[14:].split(b"\0")[0].decode().strip())
        break
"#;

#[test]
fn a_frame_on_the_tap_reaches_the_guest_and_its_answer_is_captured() {
    let Some(ns) = Ns::new() else { return };
    if !have_tool("python3", "python3") {
        return;
    }
    let _l = kvm_lock();
    // A persistent tap, as `vm-net tap add tap0` (or ip tuntap) makes it.
    ns.tap("tap0", None);
    let s = ns.spec("echo", "net-pong", &json!([{"id": "net0", "tap": "tap0"}]));
    let (code, out, err) = ns.vm_run(&["start", "--detach", &s]);
    assert_eq!(code, 0, "{err}");
    let mac = json_of(&out)["nets"][0]["mac"]
        .as_str()
        .unwrap()
        .to_string();
    ns.wait_console("echo", "net-pong ready");
    let o = ns
        .in_ns("python3")
        .args(["-c", PING_ON_TAP, "tap0"])
        .output()
        .unwrap();
    let got = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{got}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(got.trim(), format!("{mac} pong from {mac}"));
    assert!(ns.console("echo").contains("text=ping from host"));

    // The tap is in use: a second VM is refused and makes nothing.
    let s2 = ns.spec(
        "second",
        "net-pong",
        &json!([{"id": "net0", "tap": "tap0"}]),
    );
    let (code, _, err) = ns.vm_run(&["start", &s2]);
    assert_eq!(code, 1);
    assert!(err.contains("tap tap0 is in use"), "{err}");
    assert_eq!(ns.vm_run(&["kill", "echo"]).0, 0);
    // A persistent tap stays for the next VM.
    assert!(ns.link("tap0").is_some());
}

/// Sends one UDP datagram to 10.9.0.2 (port 9) from the namespace.
const SEND_UDP: &str = r#"
import socket
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x" * 100, ("10.9.0.2", 9))
"#;

#[test]
fn checksum_offload_reaches_the_guest_only_when_it_takes_it() {
    let Some(ns) = Ns::new() else { return };
    if !have_tool("python3", "python3") {
        return;
    }
    let _l = kvm_lock();
    ns.tap("tapo", Some("10.9.0.1/24"));
    // (csum argument, the header flags the guest must see): with
    // GUEST_CSUM taken, the tap hands over the host's UDP datagram with its
    // checksum left to finish (VIRTIO_NET_HDR_F_NEEDS_CSUM); without it,
    // the kernel finishes the checksum itself.
    for (csum, flags) in [(1, "1"), (0, "0")] {
        let s = ns.spec(
            "hdr",
            &format!("net-hdr csum={csum}"),
            &json!([{"id": "net0", "tap": "tapo"}]),
        );
        let (code, out, err) = ns.vm_run(&["start", "--detach", &s]);
        assert_eq!(code, 0, "{err}");
        let mac = json_of(&out)["nets"][0]["mac"]
            .as_str()
            .unwrap()
            .to_string();
        ns.wait_console("hdr", "net-hdr ready");
        let _ = ns.ip(&["neigh", "del", "10.9.0.2", "dev", "tapo"]);
        assert!(ns
            .ip(&[
                "neigh",
                "add",
                "10.9.0.2",
                "lladdr",
                &mac,
                "dev",
                "tapo",
                "nud",
                "permanent"
            ])
            .status
            .success());
        let o = ns.in_ns("python3").args(["-c", SEND_UDP]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let c = ns.wait_console("hdr", "net-hdr flags=");
        let line = c.lines().find(|l| l.contains("net-hdr flags=")).unwrap();
        assert!(
            line.contains(&format!("flags={flags} ")),
            "csum={csum}: {line}"
        );
        let _ = ns.vm_run(&["kill", "hdr"]);
    }
}

/// Reads the first IPv4 TCP frame arriving on tap `tapt` with the
/// virtio-net header the kernel keeps for it (PACKET_VNET_HDR) and prints
/// flags, gso_type, hdr_len, gso_size, csum_start, csum_offset and the
/// frame's length; "ready" once listening.
const SNIFF_VNET_HDR: &str = r#"
import socket, struct
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.setsockopt(263, 15, 1)  # SOL_PACKET, PACKET_VNET_HDR
s.bind(("tapt", 0))
s.settimeout(60)
print("ready", flush=True)
while True:
    try:
        d = s.recv(70000)
    except OSError as e:
        if e.errno == 100:  # ENETDOWN: the tap came up after the bind
            continue
        raise
    f = d[10:]
    if len(f) > 34 and f[23] == 6:
        print(*struct.unpack("<BBHHHH", d[:10]), len(f), flush=True)
        break
"#;

/// TSO from the guest: one 3000-byte TCP segment handed to the device as
/// a GSO frame (gso_size 1000, checksum left to finish, as a Linux guest
/// with HOST_TSO4 sends them) reaches the host with its GSO header as the
/// guest wrote it (the tap's packet socket shows it), and the host stack
/// takes it whole: nothing listens on the port, so the host resets,
/// acknowledging seq + 3000.
#[test]
fn a_tso_frame_from_the_guest_reaches_the_host_whole() {
    let Some(ns) = Ns::new() else { return };
    if !have_tool("python3", "python3") {
        return;
    }
    let _l = kvm_lock();
    ns.tap("tapt", Some("10.9.0.1/24"));
    let host_mac = ns
        .in_ns("cat")
        .arg("/sys/class/net/tapt/address")
        .output()
        .unwrap();
    let host_mac = String::from_utf8_lossy(&host_mac.stdout).trim().to_string();
    assert_eq!(host_mac.len(), 17, "{host_mac}");
    // The reset goes back to the guest without an ARP round (the test
    // guest does not answer ARP, and sends as soon as it boots).
    let mac = "52:54:00:7e:50:01";
    let neigh = [
        "neigh",
        "replace",
        "10.9.0.2",
        "lladdr",
        mac,
        "dev",
        "tapt",
        "nud",
        "permanent",
    ];
    assert!(ns.ip(&neigh).status.success());
    let mut sniff = ns
        .in_ns("python3")
        .args(["-c", SNIFF_VNET_HDR])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(sniff.stdout.take().unwrap());
    let mut ready = String::new();
    std::io::BufRead::read_line(&mut out, &mut ready).unwrap();
    assert_eq!(ready.trim(), "ready");
    let s = ns.spec(
        "tso",
        &format!("net-tso tso=1 size=3000 mss=1000 hostmac={host_mac}"),
        &json!([{"id": "net0", "tap": "tapt", "mac": mac}]),
    );
    let (code, _, err) = ns.vm_run(&["start", "--detach", &s]);
    assert_eq!(code, 0, "{err}");
    let mut hdr = String::new();
    std::io::BufRead::read_line(&mut out, &mut hdr).unwrap();
    let _ = sniff.wait();
    // NEEDS_CSUM, GSO_TCPV4, (hdr_len: the kernel reports its own linear
    // length), gso_size 1000, csum_start 34, csum_offset 16; one frame of
    // 14 + 20 + 20 + 3000 bytes.
    let f: Vec<&str> = hdr.split_whitespace().collect();
    assert_eq!(f.len(), 7, "the host saw: {hdr}");
    assert_eq!(
        [f[0], f[1], f[3], f[4], f[5], f[6]],
        ["1", "1", "1000", "34", "16", "3054"],
        "the host saw: {hdr}"
    );
    let c = ns.wait_console("tso", "net-tso rst ack=");
    let line = c.lines().find(|l| l.contains("net-tso rst")).unwrap();
    assert_eq!(
        line.trim().trim_start_matches("vmtools test guest: "),
        format!("net-tso rst ack={}", 0x0100_0000 + 3000),
        "{c}"
    );
    let _ = ns.vm_run(&["kill", "tso"]);
}

#[test]
fn missing_taps_and_bridges_are_refused() {
    let Some(ns) = Ns::new() else { return };
    let _l = kvm_lock();
    let before = ns.link_names();
    for (nets, want) in [
        (
            json!([{"id": "net0", "tap": "nosuchtap"}]),
            "no tap named 'nosuchtap'",
        ),
        (
            json!([{"id": "net0", "bridge": "nosuchbr"}]),
            "no bridge named 'nosuchbr'",
        ),
        (
            json!([{"id": "net0", "bridge": "lo"}]),
            "'lo' is not a bridge",
        ),
        (json!([{"id": "net0", "tap": "lo"}]), "'lo' is not a tap"),
        (
            json!([{"id": "net0", "tap": "sixteen-bytes-xx"}]),
            "longer than 15 bytes",
        ),
        (
            json!([{"id": "net0", "tap": "t", "bridge": "br0"}]),
            "exactly one of tap and bridge",
        ),
    ] {
        let s = ns.spec("bad", "net-send", &nets);
        let (code, _, err) = ns.vm_run(&["start", &s]);
        assert_eq!(code, 1, "{nets}: {err}");
        let lines: Vec<_> = err
            .lines()
            .filter(|l| l.starts_with("vm-run: error: "))
            .collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(lines[0].contains(want), "{nets}: {err}");
        assert_eq!(ns.link_names(), before, "{nets}: nothing made");
    }
    // Root without CAP_NET_ADMIN: one line, and no tap.
    let s = ns.spec(
        "nocap",
        "net-send",
        &json!([{"id": "net0", "bridge": "br0"}]),
    );
    let o = ns
        .in_ns("setpriv")
        .args(["--inh-caps=-net_admin", "--bounding-set=-net_admin"])
        .args([env!("CARGO_BIN_EXE_vm-run"), "start", &s])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("vm-run: error: ") && l.contains("needs CAP_NET_ADMIN")),
        "{err}"
    );
    assert_eq!(
        ns.link_names(),
        before,
        "nothing made without the capability"
    );
}
