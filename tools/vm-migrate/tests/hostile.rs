//! Hostile input to a migration: streams made by hand fed to a
//! destination, and malformed `migrate-send` requests on a source's
//! control socket. Each is refused with one error, and nothing starts or
//! changes.

use std::os::fd::AsRawFd;
use std::time::Duration;

mod common;

use common::{env, feed_hostile, page_record, record};
use test_guest::{have_kvm, kvm_lock};

/// Hostile sources: a destination fed a stream made by hand (a spec that
/// does not parse, CPU features this host lacks, pages and zeroed ranges
/// outside guest memory, a torn page that never comes again whole, a
/// state that is not one, an end before the state, a second hello) answers with an error line, exits non-zero and
/// leaves no VM behind.
#[test]
fn hostile_streams_start_nothing() {
    if !have_kvm() {
        return;
    }
    let _lock = kvm_lock();
    let env = env();
    let spec = serde_json::json!({
        "name": "h", "vcpus": 1, "memory": "64MiB",
        "boot": {"kernel": test_guest::GUEST_ELF},
    });
    let hello = |spec: &serde_json::Value, cpuid: serde_json::Value| {
        let h = serde_json::json!({"spec": spec, "cpuid": cpuid, "disks": []});
        record(1, h.to_string().as_bytes())
    };
    let pages = |gpa: u64, n: usize| {
        page_record(
            gpa,
            &vec![0x5a; 4096 * n],
            &vec![test_guest::crc32(&[0x5a; 4096]); n],
        )
    };
    // Two pages, the second of which does not match its checksum, as if
    // the guest wrote it while the source read it.
    let torn = |gpa: u64| page_record(gpa, &[0x5a; 8192], &[test_guest::crc32(&[0x5a; 4096]), 0]);
    let zeroes = |gpa: u64, pages: u64| {
        let mut p = gpa.to_le_bytes().to_vec();
        p.extend_from_slice(&pages.to_le_bytes());
        record(3, &p)
    };
    let no_features = serde_json::json!([
        {"function": 1, "index": 0, "eax": 0, "ebx": 0, "ecx": 0x7fff_ffff, "edx": u32::MAX}
    ]);
    // vm-run start --incoming on descriptors that are not a stream.
    for (arg, expect) in [
        ("--incoming=0", "not a stream socket"),
        ("--incoming=99", "not an open descriptor"),
        ("--incoming=-1", "not an open descriptor"),
    ] {
        let (code, _, err) = env.vm_run(&["start", arg]);
        assert_eq!(code, 1, "{arg}: {err}");
        assert!(err.contains(expect), "{arg}: {err}");
    }
    let good = hello(&spec, serde_json::json!([]));
    let cases: Vec<(&str, Vec<u8>, bool, &str)> = vec![
        // (what, records after the header, whether `ready` comes first, expected error)
        (
            "a spec that does not parse",
            hello(&serde_json::json!({"name": "h"}), serde_json::json!([])),
            false,
            "arriving spec",
        ),
        (
            "missing CPU features",
            hello(&spec, no_features),
            false,
            "lacks CPU features",
        ),
        (
            "a page outside memory",
            [good.clone(), pages(1 << 40, 1)].concat(),
            true,
            "outside guest memory",
        ),
        (
            "pages across the end",
            [good.clone(), pages((64 << 20) - 4096, 2)].concat(),
            true,
            "outside guest memory",
        ),
        (
            "a stream cut short",
            [good.clone(), pages(0, 1)].concat(),
            true,
            "cut short",
        ),
        (
            "zeroes past the end",
            [good.clone(), zeroes(0, u64::MAX)].concat(),
            true,
            "too long",
        ),
        (
            "zeroes outside memory",
            [good.clone(), zeroes(1 << 40, 1)].concat(),
            true,
            "outside guest memory",
        ),
        (
            "a torn page never sent whole",
            [
                good.clone(),
                torn(0x1000),
                pages(0x3000, 1),
                record(4, b"{}"),
            ]
            .concat(),
            true,
            "at 0x2000 failed its checksum",
        ),
        (
            "a state that is not one",
            [good.clone(), record(4, b"{\"vcpus\":[]}")].concat(),
            true,
            "state",
        ),
        (
            "an end before the state",
            [
                good.clone(),
                record(5, b"{\"page_records\":0,\"rounds\":1}"),
            ]
            .concat(),
            true,
            "before the machine's state",
        ),
        (
            "a second hello",
            [good.clone(), good.clone()].concat(),
            true,
            "second hello",
        ),
        (
            "an unknown record",
            [good.clone(), record(99, b"")].concat(),
            true,
            "unknown record kind",
        ),
    ];
    for (i, (what, body, ready, expect)) in cases.into_iter().enumerate() {
        feed_hostile(&env, &format!("h{i}"), &[], &body, ready, what, expect);
    }
}

/// Hostile `migrate-send` requests on the control socket: no descriptor,
/// two, a regular file, a datagram socket, a downtime budget of 0, a
/// bandwidth cap of 0 (which once crashed the VM: a division by zero in
/// the pace); and `migrate-set` with no migration. Each gets an error
/// reply, and the VM runs on with no migration in progress.
#[test]
fn hostile_migrate_requests_change_nothing() {
    if !have_kvm() {
        return;
    }
    let _lock = kvm_lock();
    let env = env();
    env.start(&env.spec("a", "memcount pages=64", &serde_json::json!({})));
    env.wait_count("a", "round ", 1);
    let sock = env.run_dir().join("a/control.sock");
    let send = |options: vm_control::MigrateOptions, fds: &[i32]| {
        vm_control::Session::connect(&sock)
            .unwrap()
            .call(
                &vm_control::Request::MigrateSend { options },
                fds,
                Some(Duration::from_secs(30)),
            )
            .unwrap()
    };
    let file = std::fs::File::create(env.path("plain")).unwrap();
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let dgram = std::os::unix::net::UnixDatagram::unbound().unwrap();
    let zero = vm_control::MigrateOptions {
        max_downtime_ms: 0,
        ..vm_control::MigrateOptions::default()
    };
    let no_bandwidth = vm_control::MigrateOptions {
        bandwidth_mib: Some(0),
        ..vm_control::MigrateOptions::default()
    };
    for (what, opts, fds, expect) in [
        (
            "no descriptor",
            vm_control::MigrateOptions::default(),
            vec![],
            "1 to 16 descriptors",
        ),
        (
            "a second stream that is a file",
            vm_control::MigrateOptions::default(),
            vec![a.as_raw_fd(), file.as_raw_fd()],
            "not a stream socket",
        ),
        (
            "a file",
            vm_control::MigrateOptions::default(),
            vec![file.as_raw_fd()],
            "not a stream socket",
        ),
        (
            "a datagram socket",
            vm_control::MigrateOptions::default(),
            vec![dgram.as_raw_fd()],
            "not a stream socket",
        ),
        ("no downtime", zero, vec![a.as_raw_fd()], "cannot be met"),
        (
            "no bandwidth",
            no_bandwidth,
            vec![a.as_raw_fd()],
            "moves nothing",
        ),
    ] {
        let r = send(opts, &fds);
        assert!(!r.ok, "{what}: accepted");
        assert!(
            r.error.as_deref().unwrap_or("").contains(expect),
            "{what}: {r:?}"
        );
        let (code, _, err) = env.run("vm-migrate", &["status", "a"]);
        assert_eq!(code, 1, "{what}");
        assert!(err.contains("no migration"), "{what}: {err}");
        let (_, out, _) = env.vm_run(&["state", "a"]);
        assert!(out.contains("running"), "{what}: {out}");
    }
    let set = vm_control::Request::MigrateSet {
        max_downtime_ms: Some(0),
        bandwidth_mib: Some(0),
    };
    let r = vm_control::Session::connect(&sock)
        .unwrap()
        .call(&set, &[], Some(Duration::from_secs(30)))
        .unwrap();
    assert!(
        !r.ok && r.error.as_deref() == Some("no migration in progress"),
        "{r:?}"
    );
    let now = *env.counts("a", "round ").last().unwrap();
    env.wait_count("a", "round ", now + 2);
    assert!(!env.console("a").contains("MEMORY ERROR"));
    env.vm_run(&["kill", "a"]);
}
