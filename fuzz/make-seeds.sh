#!/usr/bin/env bash
# Makes the seed images of the qcow2 fuzz corpus with qemu-img and qemu-io:
# small (512-byte clusters where it matters), one per qcow2 feature.
set -euo pipefail
out=${1:-"$(dirname "$0")/corpus/qcow2_open"}
mkdir -p "$out"
cd "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
q() { qemu-img "$@"; }
io() { qemu-io "$@" >/dev/null; }
q create -q -f qcow2 -o cluster_size=512 empty.qcow2 1M
q create -q -f qcow2 -o cluster_size=512 data.qcow2 1M
io -c 'write -P 0x11 0 8k' -c 'write -z 64k 4k' -c 'write -P 0x22 900k 3k' data.qcow2
q create -q -f qcow2 -o cluster_size=512,compat=0.10 v2.qcow2 1M
io -c 'write -P 0x33 4k 4k' v2.qcow2
head -c 16384 /dev/zero | tr '\0' 'a' > "$tmp/txt.raw"
truncate -s 64k "$tmp/txt.raw"
q convert -c -O qcow2 -o cluster_size=4k "$tmp/txt.raw" compressed.qcow2
q create -q -f qcow2 -o cluster_size=512 snap.qcow2 256k
io -c 'write -P 0x44 0 4k' snap.qcow2
q snapshot -c s1 snap.qcow2
io -c 'write -P 0x55 2k 4k' snap.qcow2
q create -q -f qcow2 -o cluster_size=512,refcount_bits=1 rc1.qcow2 512k
io -c 'write -P 0x66 0 2k' rc1.qcow2
q create -q -f qcow2 -o cluster_size=512,lazy_refcounts=on lazy.qcow2 512k
io -c 'write -P 0x67 0 2k' lazy.qcow2
q create -q -f qcow2 -o cluster_size=512 -u -b base.raw -F raw backed.qcow2 1M
# Extended L2 entries: clusters of 16 KiB at least; data, zero and
# compressed subclusters.
q create -q -f qcow2 -o extended_l2=on,cluster_size=16k extended_l2.qcow2 256k
io -c 'write -P 1 0 1k' -c 'write -z 16k 4k' -c 'write -c -P 2 32k 16k' -c 'write -P 3 50k 1k' extended_l2.qcow2
