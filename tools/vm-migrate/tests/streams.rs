//! Migrations over several streams (`vm-migrate send --streams N`): a
//! guest that rewrites and checks 2 MiB of its memory every round (two
//! chunks, so more than one stream carries its pages) moves over three
//! streams, two, and the default one, and goes on whole; and what a
//! hostile source or a stranger sends on the further streams starts
//! nothing at the destination.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;

use common::{
    env, finish, goes_on, header, listening, page_record, record, recv, refused, wait_for_status,
};
use test_guest::rundir::{contiguous, json, RunDir};
use test_guest::{have_kvm, kvm_lock};

#[test]
fn three_two_or_one_streams_move_the_guest() {
    if !have_kvm() {
        return;
    }
    let _lock = kvm_lock();
    let env = env();
    env.start(&env.spec("a", "memcount pages=512", &serde_json::json!({})));
    env.wait_count("a", "round ", 1);
    let hops: [(&str, &str, &str, &[&str]); 3] = [
        ("a", "b", "unix", &["--streams", "3"]),
        ("b", "c", "tcp", &["--streams", "2"]),
        ("c", "d", "tcp", &[]),
    ];
    for (from, to, how, extra) in hops {
        let listen = match how {
            "unix" => format!("unix:{}", env.path(&format!("{to}.sock")).display()),
            _ => "tcp:127.0.0.1:0".to_string(),
        };
        let mut r = recv(&env, &listen, to);
        let addr = listening(&mut r);
        let mut args = vec!["send", from, &addr];
        args.extend_from_slice(extra);
        let (code, out, err) = env.run("vm-migrate", &args);
        assert_eq!(code, 0, "{from} to {to} {extra:?}: {err}");
        assert_eq!(json(&out)["status"], "completed", "{out}");
        let (code, _, err) = finish(r);
        assert_eq!(code, 0, "{err}");
        assert_eq!(env.running(), [to]);
        goes_on(&env, from, to);
    }
    // exec: carries one stream, and says so when asked for more.
    let (code, _, err) = env.run("vm-migrate", &["send", "d", "exec:cat", "--streams", "2"]);
    assert_eq!(code, 1);
    assert!(err.contains("exec: carries one stream"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(env.running(), ["d"]);
    env.vm_run(&["kill", "d"]);
}

/// A cancel while two streams crawl at 1 MiB/s: the send fails with
/// one line, the destination keeps nothing, and the guest runs on at the
/// source with its memory whole.
#[test]
fn a_cancel_over_two_streams_leaves_the_source_running() {
    if !have_kvm() {
        return;
    }
    let _lock = kvm_lock();
    let env = env();
    env.start(&env.spec("a", "memcount pages=512", &serde_json::json!({})));
    env.wait_count("a", "round ", 1);
    let mut r = recv(&env, "tcp:127.0.0.1:0", "b");
    let addr = listening(&mut r);
    let send = env
        .command("vm-migrate")
        .args(["send", "a", &addr, "--streams", "2", "--bandwidth", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_status(&env, "a", "never active", |s| {
        s["status"] == "active" && s["bytes"].as_u64() > Some(0)
    });
    let (code, _, err) = env.run("vm-migrate", &["cancel", "a"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = finish(send);
    assert_eq!(code, 1);
    assert!(err.contains("cancelled"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_ne!(finish(r).0, 0);
    assert_eq!(env.running(), ["a"]);
    let now = *env.counts("a", "round ").last().unwrap();
    env.wait_count("a", "round ", now + 2);
    let console = env.console("a");
    assert!(!console.contains("MEMORY ERROR"), "{console}");
    contiguous(&console, "round ");
    env.vm_run(&["kill", "a"]);
}

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn join(token: &str, stream: u32) -> Vec<u8> {
    let j = serde_json::json!({"token": token, "stream": stream});
    [header(), record(9, j.to_string().as_bytes())].concat()
}

fn pages(gpa: u64, n: usize) -> Vec<u8> {
    page_record(
        gpa,
        &vec![0x5a; 4096 * n],
        &vec![test_guest::crc32(&[0x5a; 4096]); n],
    )
}

/// What a further connection sends.
enum Other {
    /// These bytes at once.
    Sends(Vec<u8>),
    /// These bytes, one every 100 ms, for as long as it is let.
    Trickles(Vec<u8>),
}

/// One hostile case: the first stream opens with a hello for `streams`
/// streams and `token`, then `first`; each of `more` connects in turn
/// and sends its bytes. The destination must answer `ready` first when
/// `ready` says so, then an error naming `expect`, end, and leave no VM.
#[allow(clippy::too_many_arguments)]
fn feed(
    env: &RunDir,
    tag: &str,
    streams: u32,
    token: &str,
    first: &[u8],
    more: Vec<Other>,
    ready: bool,
    expect: &str,
) {
    let spec = serde_json::json!({
        "name": "h", "vcpus": 1, "memory": "64MiB",
        "boot": {"kernel": test_guest::GUEST_ELF},
    });
    let hello = serde_json::json!({
        "spec": spec, "cpuid": [], "disks": [], "streams": streams, "token": token,
    });
    let sock = env.path(&format!("{tag}.sock"));
    let listen = format!("unix:{}", sock.display());
    let mut r = recv(env, &listen, "h");
    listening(&mut r);
    let t0 = Instant::now();
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(&[header(), record(1, hello.to_string().as_bytes())].concat());
    // In order: the destination takes connections as they queued.
    // The connections that sent at once stay open until the end: one
    // closed early would end its stream before the case's own error.
    let _open: Vec<UnixStream> = more
        .into_iter()
        .filter_map(|other| {
            let mut c = UnixStream::connect(&sock).unwrap();
            match other {
                Other::Sends(bytes) => {
                    let _ = c.write_all(&bytes);
                    Some(c)
                }
                Other::Trickles(bytes) => {
                    std::thread::spawn(move || {
                        for b in bytes {
                            if c.write_all(&[b]).is_err() {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    });
                    None
                }
            }
        })
        .collect();
    // The first stream stays open: an error on a further stream must be
    // the one reported, not the first stream's end.
    let _ = s.write_all(first);
    refused(env, &mut s, r, ready, tag, expect);
    assert!(
        t0.elapsed() < Duration::from_secs(25),
        "{tag}: took {:?}",
        t0.elapsed()
    );
}

#[test]
fn hostile_further_streams_start_nothing() {
    if !have_kvm() {
        return;
    }
    let _lock = kvm_lock();
    let env = env();
    let end = |records: u64| {
        let e = serde_json::json!({"page_records": records, "rounds": 1});
        record(5, e.to_string().as_bytes())
    };
    // A stranger with the wrong token is turned away; the right join is
    // taken; then the first stream sends a page of chunk 1, which is the
    // second stream's.
    feed(
        &env,
        "wrong-stream",
        2,
        TOKEN,
        &pages(1 << 20, 1),
        vec![
            Other::Sends(join("ffffffffffffffffffffffffffffffff", 1)),
            Other::Sends(join(TOKEN, 1)),
        ],
        true,
        "belongs elsewhere",
    );
    // A connection that trickles a join (the right one, padded to 300
    // bytes: 30 s at its pace) is cut off after its second, and the
    // join behind it is taken; feed checks the whole case took less
    // than 25 s.
    let slow = format!("{{\"token\":\"{TOKEN}\",\"stream\":1{:300}}}", "");
    feed(
        &env,
        "trickled-join",
        2,
        TOKEN,
        &pages(1 << 20, 1),
        vec![
            Other::Trickles([header(), record(9, slow.as_bytes())].concat()),
            Other::Sends(join(TOKEN, 1)),
        ],
        true,
        "belongs elsewhere",
    );
    // A page record across the end of a chunk, on the further stream.
    feed(
        &env,
        "across-chunks",
        2,
        TOKEN,
        &[],
        vec![Other::Sends(
            [join(TOKEN, 1), pages((2 << 20) - 4096, 2)].concat(),
        )],
        true,
        "belongs elsewhere",
    );
    // The state on a further stream.
    feed(
        &env,
        "state-on-further",
        2,
        TOKEN,
        &[],
        vec![Other::Sends([join(TOKEN, 1), record(4, b"{}")].concat())],
        true,
        "only pages and the end travel here",
    );
    // A further stream whose end miscounts its pages.
    feed(
        &env,
        "miscounted",
        2,
        TOKEN,
        &[],
        vec![Other::Sends(
            [join(TOKEN, 1), pages(1 << 20, 1), end(2)].concat(),
        )],
        true,
        "its end says 2",
    );
    // Two joins for the same stream: the second is a stranger, and the
    // third stream never comes. The wait is bounded.
    feed(
        &env,
        "missing",
        3,
        TOKEN,
        &[],
        vec![Other::Sends(join(TOKEN, 1)), Other::Sends(join(TOKEN, 1))],
        false,
        "1 of the source's 3 streams did not arrive within 10 s",
    );
    // Refused before anything is taken: a token too short to guard, and
    // more streams than any source uses.
    feed(
        &env,
        "short-token",
        2,
        "ab",
        &[],
        vec![],
        false,
        "too short",
    );
    feed(
        &env,
        "too-many",
        99,
        TOKEN,
        &[],
        vec![],
        false,
        "at most 16",
    );
}

/// A source that asks for several streams of a destination reading
/// stdin (`vm-migrate recv -`, the far end of exec:) is refused with a
/// reason, before memory is made.
#[test]
fn several_streams_need_a_listener() {
    if !have_kvm() {
        return;
    }
    let env = env();
    let spec = serde_json::json!({
        "name": "h", "vcpus": 1, "memory": "64MiB",
        "boot": {"kernel": test_guest::GUEST_ELF},
    });
    let hello = serde_json::json!({
        "spec": spec, "cpuid": [], "disks": [], "streams": 2, "token": TOKEN,
    });
    let mut r = env
        .command("vm-migrate")
        .args(["recv", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = r.stdin.take().unwrap();
    stdin
        .write_all(&[header(), record(1, hello.to_string().as_bytes())].concat())
        .unwrap();
    drop(stdin);
    let (code, out, err) = finish(r);
    assert_ne!(code, 0);
    assert!(out.contains("this destination takes one"), "{out}");
    assert!(err.contains("this destination takes one"), "{err}");
    assert!(env.running().is_empty());
}
