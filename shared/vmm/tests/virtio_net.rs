//! virtio-net against queues a guest (or an attacker) could build: a
//! well-formed frame each way and a VQ_PAIRS_SET, then the fuzz corpus
//! replayed and a bounded run of seeded mutations (VMTOOLS_FUZZ_SECONDS,
//! default 5): the device must never panic, and no pass may serve more
//! than one ring's worth. A failing input is saved under target/ to join
//! the corpus.

use std::path::{Path, PathBuf};

use test_guest::fuzz::{bounded, guarded, Rng};
use vm_memory::{Bytes, GuestAddress};
use vmm::fuzzing::net::{run, Harness, Layout, HEAD, MEM_SIZE};

const NEXT: u16 = 1;
const WRITE: u16 = 2;
const DESC: u64 = 0x0;
const AVAIL: u64 = 0x1000;
const USED: u64 = 0x2000;
const BUF: u64 = 0x4000;
/// virtio_net_hdr_v1.
const HDR: usize = 12;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/virtio_net")
}

fn layout(queue: usize, two_pairs: bool, frames: u8) -> Layout {
    Layout {
        size: 16,
        two_pairs,
        queue,
        desc: DESC,
        avail: AVAIL,
        used: USED,
        frames,
        frame_len: 64,
    }
}

fn used(h: &Harness) -> (u16, u32) {
    (
        h.mem.read_obj(GuestAddress(USED + 2)).unwrap(),
        h.mem.read_obj(GuestAddress(USED + 8)).unwrap(),
    )
}

/// The harness's memory as a fuzz input.
fn input(l: Layout, h: &Harness) -> Vec<u8> {
    let mut all = vec![0u8; MEM_SIZE];
    h.mem.read_slice(&mut all, GuestAddress(0)).unwrap();
    let end = all.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    let mut out = l.to_bytes().to_vec();
    out.extend_from_slice(&all[..end.max(USED as usize + 4 + 16 * 8)]);
    out
}

/// A frame the guest sends: header and 60 bytes in one buffer.
fn transmit() -> (Layout, Harness) {
    let l = layout(1, false, 0);
    let h = Harness::new(&l).unwrap();
    h.mem
        .write_slice(&[0xab; 60], GuestAddress(BUF + HDR as u64))
        .unwrap();
    h.set_desc(0, (BUF, (HDR + 60) as u32, 0, 0));
    h.offer(&[0]);
    (l, h)
}

/// A buffer for a frame waiting on the host side: header, then data split
/// over a second buffer.
fn receive() -> (Layout, Harness) {
    let l = layout(0, false, 1);
    let h = Harness::new(&l).unwrap();
    h.set_desc(0, (BUF, 40, WRITE | NEXT, 1));
    h.set_desc(1, (BUF + 0x100, 1500, WRITE, 0));
    h.offer(&[0]);
    (l, h)
}

/// VIRTIO_NET_CTRL_MQ (4), VQ_PAIRS_SET (0), 2 pairs; then the ack.
fn control() -> (Layout, Harness) {
    let l = layout(4, true, 0);
    let h = Harness::new(&l).unwrap();
    h.mem.write_slice(&[4, 0, 2, 0], GuestAddress(BUF)).unwrap();
    h.mem.write_obj(0xffu8, GuestAddress(BUF + 0x10)).unwrap();
    h.set_desc(0, (BUF, 4, NEXT, 1));
    h.set_desc(1, (BUF + 0x10, 1, WRITE, 0));
    h.offer(&[0]);
    (l, h)
}

#[test]
fn a_frame_each_way_and_a_pairs_set() {
    let (_, mut h) = transmit();
    assert!(h.process().interrupt);
    let mut frame = [0u8; 2048];
    let n = h.peers[0].recv(&mut frame).unwrap();
    assert_eq!(n, HDR + 60, "the header and the frame reach the tap");
    assert!(frame[HDR..n].iter().all(|&b| b == 0xab));
    assert_eq!(used(&h).0, 1);

    let (_, mut h) = receive();
    h.peers[0].send(&[0x5a; 100]).unwrap();
    assert!(h.frames_arrived().interrupt);
    let (idx, len) = used(&h);
    assert_eq!((idx, len), (1, 100), "the frame as the tap gave it");
    let mut got = [0u8; 100];
    h.mem.read_slice(&mut got[..40], GuestAddress(BUF)).unwrap();
    h.mem
        .read_slice(&mut got[40..], GuestAddress(BUF + 0x100))
        .unwrap();
    assert!(got[HDR..].iter().all(|&b| b == 0x5a), "split over both");
    assert_eq!(got[10], 1, "num_buffers is 1");

    let (_, mut h) = control();
    h.process();
    let ack: u8 = h.mem.read_obj(GuestAddress(BUF + 0x10)).unwrap();
    assert_eq!(ack, 0, "VIRTIO_NET_OK");
    // A third pair does not exist.
    h.mem.write_slice(&[4, 0, 3, 0], GuestAddress(BUF)).unwrap();
    h.offer(&[0]);
    h.process();
    let ack: u8 = h.mem.read_obj(GuestAddress(BUF + 0x10)).unwrap();
    assert_eq!(ack, 1, "VIRTIO_NET_ERR");
}

/// Buffers in the wrong direction, too short for a header, or outside
/// guest memory: each is used with an error counted, and the queue goes
/// on. A chain that loops ends at the queue size, as virtio-blk's does.
#[test]
fn hostile_chains_fail_cleanly() {
    let (_, mut h) = transmit();
    h.set_desc(0, (BUF, (HDR + 60) as u32, WRITE, 0));
    h.process();
    let (_, mut h2) = receive();
    h2.set_desc(0, (BUF, 4, WRITE, 0));
    h2.peers[0].send(&[1; 60]).unwrap();
    h2.frames_arrived();
    let (_, mut h3) = transmit();
    h3.set_desc(0, (MEM_SIZE as u64 - 8, 64, 0, 0));
    h3.process();
    let (_, mut h4) = transmit();
    h4.set_desc(0, (BUF, 16, NEXT, 1));
    h4.set_desc(1, (BUF, 16, NEXT, 0));
    h4.process();
    for (what, h) in [("direction", &h), ("short", &h2), ("outside", &h3)] {
        assert_eq!(used(h).0, 1, "{what}: the chain was used");
        let c = &h.counters;
        let errs = c.tx_errs.load(std::sync::atomic::Ordering::Relaxed)
            + c.rx_errs.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(errs, 1, "{what}: counted as an error");
    }
    let mut frame = [0u8; 4096];
    assert!(h.peers[0].recv(&mut frame).is_err(), "nothing was sent");
    assert_eq!(used(&h4).0, 1, "loop: the chain was used");
    let n = h4.peers[0].recv(&mut frame).unwrap();
    assert_eq!(
        n,
        16 * 16,
        "loop: sixteen descriptors (the queue size), no more"
    );
}

fn seeds() -> Vec<Vec<u8>> {
    [transmit(), receive(), control()]
        .iter()
        .map(|(l, h)| input(*l, h))
        .collect()
}

fn run_guarded(what: &str, data: &[u8]) {
    guarded("virtio-net", what, data, run);
}

#[test]
fn corpus_replays_without_panics() {
    // VMTOOLS_REGENERATE=1 writes the seeds as the fuzz target's corpus.
    if std::env::var_os("VMTOOLS_REGENERATE").is_some() {
        std::fs::create_dir_all(corpus_dir()).unwrap();
        for (i, d) in seeds().iter().enumerate() {
            std::fs::write(corpus_dir().join(format!("seed-{i}")), d).unwrap();
        }
    }
    let mut n = 0;
    for e in std::fs::read_dir(corpus_dir()).expect("fuzz corpus is committed") {
        let p = e.unwrap().path();
        run_guarded(&p.display().to_string(), &std::fs::read(&p).unwrap());
        n += 1;
    }
    assert!(n >= 3, "the corpus has its seeds");
}

fn mutate(rng: &mut Rng, d: &mut [u8]) {
    let i = rng.below(d.len());
    match rng.below(5) {
        0 => d[i] = rng.next() as u8,
        1 => d[i] = d[i].wrapping_add(1),
        2 => d[i] = [0, 1, 2, 3, 0x7f, 0x80, 0xff][rng.below(7)],
        // The layout: queue, pairs, ring places, frames.
        3 => d[rng.below(HEAD)] = rng.next() as u8,
        _ => {
            let end = (i + 8).min(d.len());
            let v = rng.next().to_le_bytes();
            d[i..end].copy_from_slice(&v[..end - i]);
        }
    }
}

#[test]
fn bounded_random_mutations() {
    let base = seeds();
    bounded("queues", 5, 0x0e7_5eed, |rng, seed, run| {
        let mut d = base[rng.below(base.len())].clone();
        for _ in 0..=rng.below(8) {
            mutate(rng, &mut d);
        }
        run_guarded(&format!("seed {seed} run {run}"), &d);
    });
}
