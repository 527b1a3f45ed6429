/* A polling virtio-blk driver on the virtio-mmio (version 2) transport, and
 * the modes that use it. The device is the first block device (ID 2) the
 * command line announces (virtio_find). Interrupts stay off: the
 * driver watches the used ring.
 *   blk-read   read `count` sectors from `sector`, print their checksum and
 *              the disk's capacity, read-only flag and serial number
 *   blk-write  write a pattern (from `seed`) to `count` sectors at `sector`,
 *              flush, read it back, print the checksum and whether it matched
 *   blk-ro     try one write, print the status the device returned
 *   blk-zero   write-zeroes `count` sectors at `sector`
 *   blk-loop   over and over, read `count` sectors into one buffer, from
 *              `sector` and `sector + count` by turns, and print "pass N
 *              at=S sum=X": only the device writes the buffer, and the sum
 *              shows whether those pages are what was read
 *   blk-crash  write sector 0, 1, 2, ... each with its own pattern, flushing
 *              after each and printing "flushed N", until killed
 *   blk-bench  `count` requests of `kib` KiB each (`op=read` or `write`)
 *              in flight at once, `rounds` times; then print "bench done"
 *              and halt, so the host can read the VMM's counters
 * Every mode prints "blk: error ..." and ends if the device is missing. */

#include "guest.h"

#define QSZ 256
#define F_NEXT 1
#define F_WRITE 2
#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4
#define T_GET_ID 8
#define T_WRITE_ZEROES 13
#define SMALL_SECTORS 64
#define BENCH_BUF 0x200000u

struct desc { u64 addr; u32 len; u16 flags; u16 next; };
struct avail { u16 flags; u16 idx; u16 ring[QSZ]; u16 used_event; };
struct used_elem { u32 id; u32 len; };
struct used { u16 flags; u16 idx; struct used_elem ring[QSZ]; u16 avail_event; };
struct hdr { u32 type; u32 reserved; u64 sector; };
struct seg { u64 sector; u32 sectors; u32 flags; };

static struct desc descs[QSZ] __attribute__((aligned(16)));
static struct avail avail __attribute__((aligned(4)));
static struct used used __attribute__((aligned(4096)));
static struct hdr hdrs[QSZ / 3];
static volatile u8 status[QSZ / 3];
static u8 buf[SMALL_SECTORS * 512] __attribute__((aligned(4096)));
static u8 back[SMALL_SECTORS * 512] __attribute__((aligned(4096)));
static volatile u32 *mmio;
static u16 last_used;
static u32 cap_lo, cap_hi, read_only;

static u32 rd(u32 off) { return mmio[off / 4]; }
static void wr(u32 off, u32 v) { mmio[off / 4] = v; }

static void __attribute__((noreturn)) fail(const char *what) {
    puts("blk: error ");
    puts(what);
    putc('\n');
    end(1);
}

static void init(const char *cmdline) {
    u32 base = virtio_find(cmdline, 2);
    if (!base) fail("no virtio-mmio v2 block device on the command line");
    mmio = (volatile u32 *)base;
    wr(0x070, 0);
    wr(0x070, 1);                       /* ACKNOWLEDGE */
    wr(0x070, 3);                       /* DRIVER */
    wr(0x014, 1);
    if (!(rd(0x010) & 1)) fail("device lacks VERSION_1");
    wr(0x014, 0);
    u32 offered = rd(0x010);
    read_only = (offered >> 5) & 1;
    wr(0x024, 1);
    wr(0x020, 1);                       /* VERSION_1 */
    wr(0x024, 0);
    /* RO, BLK_SIZE, FLUSH, WRITE_ZEROES: whatever of them is offered. */
    wr(0x020, offered & ((1u << 5) | (1u << 6) | (1u << 9) | (1u << 14)));
    wr(0x070, 11);                      /* FEATURES_OK */
    if (!(rd(0x070) & 8)) fail("features refused");
    wr(0x030, 0);
    if (rd(0x034) < QSZ) fail("queue too small");
    wr(0x038, QSZ);
    wr(0x080, (u32)descs); wr(0x084, 0);
    wr(0x090, (u32)&avail); wr(0x094, 0);
    wr(0x0a0, (u32)&used); wr(0x0a4, 0);
    wr(0x044, 1);
    wr(0x070, 15);                      /* DRIVER_OK */
    cap_lo = rd(0x100);
    cap_hi = rd(0x104);
}

/* Queues a request in slot `slot` (descriptors 3*slot..3*slot+2). */
static void queue(int slot, u32 type, u64 sector, const void *data, u32 len, int device_writes) {
    u16 h = (u16)(3 * slot);
    hdrs[slot].type = type;
    hdrs[slot].reserved = 0;
    hdrs[slot].sector = sector;
    status[slot] = 0xff;
    descs[h].addr = (u32)&hdrs[slot];
    descs[h].len = sizeof(struct hdr);
    descs[h].flags = F_NEXT;
    descs[h].next = h + 1;
    u16 s = h + 1;
    if (len) {
        descs[h + 1].addr = (u32)data;
        descs[h + 1].len = len;
        descs[h + 1].flags = F_NEXT | (device_writes ? F_WRITE : 0);
        descs[h + 1].next = h + 2;
        s = h + 2;
    }
    descs[s].addr = (u32)&status[slot];
    descs[s].len = 1;
    descs[s].flags = F_WRITE;
    avail.ring[avail.idx % QSZ] = h;
    barrier();
    avail.idx++;
}

static void notify(void) { barrier(); wr(0x050, 0); }

/* Waits until `n` more requests are used. */
static void wait_used(u16 n) {
    while ((u16)(*(volatile u16 *)&used.idx - last_used) < n) __asm__ volatile("pause");
    last_used += n;
    barrier();
}

/* One request, waited for; returns its status. */
static u32 request(u32 type, u64 sector, const void *data, u32 len, int device_writes) {
    queue(0, type, sector, data, len, device_writes);
    notify();
    wait_used(1);
    return status[0];
}

static u32 fnv(const u8 *p, u32 len) {
    const u32 *w = (const u32 *)p;
    u32 h = 0x811c9dc5;
    for (u32 i = 0; i < len / 4; i++) { h ^= w[i]; h *= 16777619u; }
    return h;
}

static void fill(u8 *p, u32 len, u32 seed) {
    u32 *w = (u32 *)p;
    for (u32 i = 0; i < len / 4; i++) w[i] = seed ^ (i * 2654435761u);
}

static u32 small_count(const char *cmdline) {
    u32 n = arg_u32(cmdline, "count", 16);
    if (n == 0 || n > SMALL_SECTORS) fail("count must be 1..64");
    return n;
}

static void put_kv(const char *k, u32 v) { puts(k); putu(v); }
static void put_kx(const char *k, u32 v) { puts(k); puthex(v); }

static void __attribute__((noreturn)) bench(const char *cmdline) {
    const char *op = arg(cmdline, "op");
    int reading = !op || starts(op, "read");
    u32 count = arg_u32(cmdline, "count", 16);
    u32 kib = arg_u32(cmdline, "kib", 1024);
    u32 rounds = arg_u32(cmdline, "rounds", 4);
    if (count == 0 || count > QSZ / 3 || kib == 0 || kib > 1024) fail("bench arguments");
    u32 sectors = kib * 2;
    /* Fault the buffer in first, so the host's first copy into it does not
     * pay for the guest's page faults. */
    for (u32 off = 0; off < kib * 1024; off += 4096) *(volatile u8 *)(BENCH_BUF + off) = 0;
    u32 span = cap_hi ? 0xffffffffu : cap_lo;
    u64 sector = 0;
    for (u32 r = 0; r < rounds; r++) {
        for (u32 i = 0; i < count; i++) {
            if (sector + sectors > span) sector = 0;
            /* One buffer for every request: the data is not looked at. */
            queue((int)i, reading ? T_IN : T_OUT, sector, (const void *)BENCH_BUF,
                  kib * 1024, reading);
            sector += sectors;
        }
        notify();
        wait_used((u16)count);
        for (u32 i = 0; i < count; i++)
            if (status[i]) fail("bench request failed");
    }
    puts("bench done\n");
    for (;;) __asm__ volatile("cli; hlt");
}

void blk_mode(const char *mode, const char *cmdline) {
    init(cmdline);
    u32 sector = arg_u32(cmdline, "sector", 0);
    if (starts(mode, "blk-read")) {
        static char serial[21];
        u32 n = small_count(cmdline);
        u32 id = request(T_GET_ID, 0, serial, 20, 1);
        u32 st = request(T_IN, sector, buf, n * 512, 1);
        put_kv("blk-read capacity=", cap_lo);
        put_kv(" ro=", read_only);
        puts(" serial=");
        puts(id == 0 ? serial : "?");
        put_kv(" status=", st);
        put_kx(" sum=", fnv(buf, n * 512));
        putc('\n');
        end(0);
    } else if (starts(mode, "blk-write")) {
        u32 n = small_count(cmdline);
        fill(buf, n * 512, arg_u32(cmdline, "seed", 0x5eed));
        u32 st = request(T_OUT, sector, buf, n * 512, 0);
        u32 fl = request(T_FLUSH, 0, 0, 0, 0);
        u32 rs = request(T_IN, sector, back, n * 512, 1);
        u32 same = 1;
        for (u32 i = 0; i < n * 512; i++) if (buf[i] != back[i]) same = 0;
        put_kv("blk-write status=", st);
        put_kv(" flush=", fl);
        put_kv(" read=", rs);
        puts(same ? " verify=ok" : " verify=bad");
        put_kx(" sum=", fnv(back, n * 512));
        putc('\n');
        end(0);
    } else if (starts(mode, "blk-ro")) {
        fill(buf, 512, 0xbad);
        put_kv("blk-ro ro=", read_only);
        put_kv(" write status=", request(T_OUT, sector, buf, 512, 0));
        putc('\n');
        end(0);
    } else if (starts(mode, "blk-zero")) {
        static struct seg s;
        s.sector = sector;
        s.sectors = small_count(cmdline);
        s.flags = 0;
        put_kv("blk-zero status=", request(T_WRITE_ZEROES, 0, &s, sizeof(s), 0));
        put_kv(" flush=", request(T_FLUSH, 0, 0, 0, 0));
        putc('\n');
        end(0);
    } else if (starts(mode, "blk-loop")) {
        u32 n = small_count(cmdline);
        for (u32 pass = 1;; pass++) {
            u32 at = sector + (pass & 1) * n;
            if (request(T_IN, at, buf, n * 512, 1)) fail("read");
            put_kv("pass ", pass);
            put_kv(" at=", at);
            put_kx(" sum=", fnv(buf, n * 512));
            putc('\n');
        }
    } else if (starts(mode, "blk-crash")) {
        for (u32 i = 0;; i++) {
            u32 at = cap_hi ? i : i % cap_lo;
            fill(buf, 512, 0xc0de0000u + i);
            if (request(T_OUT, at, buf, 512, 0) || request(T_FLUSH, 0, 0, 0, 0)) fail("write");
            put_kv("flushed ", i);
            putc('\n');
        }
    } else if (starts(mode, "blk-bench")) {
        bench(cmdline);
    }
    fail("unknown blk mode");
}
