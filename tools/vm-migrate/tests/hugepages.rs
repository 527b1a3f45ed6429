//! A guest on huge pages from the host's pool migrates: the destination
//! takes its memory from the pool too (a hugetlbfs memfd, not the
//! anonymous memory other guests land in), and sends it on from there.

mod common;

use test_guest::rundir::{contiguous, counts_in, json};
use test_guest::{have_kvm, kvm_lock};

use common::{env, finish, listening, recv};

const POOL: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
const FREE: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages";

/// The pool's size before the test, put back when it ends.
struct Pool(String);

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = std::fs::write(POOL, &self.0);
    }
}

fn read(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The guest memory mapping in `vm`'s process is backed by 2 MiB pages.
fn on_huge_pages(env: &test_guest::rundir::RunDir, vm: &str) {
    let (code, out, err) = env.vm_run(&["status", vm]);
    assert_eq!(code, 0, "{err}");
    let pid = json(&out)["pid"].as_u64().unwrap();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let at = smaps
        .find(&format!("memfd:vmtools-{vm}"))
        .unwrap_or_else(|| panic!("{vm}: no hugetlbfs guest memory in its smaps"));
    let block: String = smaps[at..].lines().take(20).collect::<Vec<_>>().join("\n");
    assert!(block.contains("KernelPageSize:     2048 kB"), "{block}");
}

#[test]
fn hugepage_guest_moves_twice() {
    if !have_kvm() {
        return;
    }
    let _lock = kvm_lock();
    let (Some(before), Some(free)) = (read(POOL), read(FREE)) else {
        eprintln!("SKIP: no 2 MiB hugepage pool here");
        return;
    };
    let restore = Pool(before.to_string());
    // Two guests of 64 MiB side by side during a hop: 64 pages more than
    // are free now.
    let want = before + 64 - free.min(64);
    if std::fs::write(POOL, want.to_string()).is_err() || read(FREE).unwrap_or(0) < 64 {
        eprintln!("SKIP: the host could not reserve 64 free huge pages");
        return;
    }
    let env = env();
    let huge = serde_json::json!({"hugepages": "2M"});
    env.start(&env.spec("a", "memcount pages=64", &huge));
    env.wait_count("a", "round ", 2);
    on_huge_pages(&env, "a");

    // a to b over unix, then b to c over tcp: b sends from pool memory
    // it filled from a stream.
    let sock = env.path("m.sock");
    let hops = [
        ("a", "b", format!("unix:{}", sock.display())),
        ("b", "c", "tcp:127.0.0.1:0".to_string()),
    ];
    for (from, to, listen) in hops {
        let mut r = recv(&env, &listen, to);
        let addr = listening(&mut r);
        let (code, out, err) = env.run("vm-migrate", &["send", from, &addr]);
        assert_eq!(code, 0, "{from} to {to}: {err}");
        assert_eq!(json(&out)["status"], "completed");
        assert_eq!(finish(r).0, 0);
        assert_eq!(env.running(), [to]);
        on_huge_pages(&env, to);
        let seen = env.console(from);
        let last = *counts_in(&seen, "round ").last().unwrap();
        env.wait_count(to, "round ", last + 3);
        let both = seen + &env.console(to);
        assert!(!both.contains("MEMORY ERROR"), "{both}");
        contiguous(&both, "round ");
    }
    let (code, _, err) = env.vm_run(&["kill", "c"]);
    assert_eq!(code, 0, "{err}");
    drop(restore);
    assert_eq!(read(POOL), Some(before), "the pool's size was put back");
}
