/* A polling virtio-rng driver on the virtio-mmio (version 2) transport, and
 * its mode. The device is the first entropy device (ID 4) the command line
 * announces (virtio_find).
 *   rng-read   ask for `bytes` (default 64, at most 4096) twice; print
 *              "rng: got N and M bytes, differ" (or "same", or "zero"
 *              when either is all zeroes)
 *   rng-loop   ask for 64 bytes over and over, printing "entropy N ok"
 *              (or "entropy N BAD" when the bytes are short, zero or the
 *              same as the last ones): a device that must go on serving
 *              after a save and restore or a migration
 * Prints "rng: error ..." and ends if there is no such device. */

#include "guest.h"

#define QSZ 8
#define F_WRITE 2
#define MAX 4096

struct desc { u64 addr; u32 len; u16 flags; u16 next; };
struct avail { u16 flags; u16 idx; u16 ring[QSZ]; u16 used_event; };
struct used_elem { u32 id; u32 len; };
struct used { u16 flags; u16 idx; struct used_elem ring[QSZ]; u16 avail_event; };

static struct desc descs[QSZ] __attribute__((aligned(16)));
static struct avail avail __attribute__((aligned(4)));
static struct used used __attribute__((aligned(4096)));
static u8 bufs[2][MAX] __attribute__((aligned(4096)));
static volatile u32 *mmio;

static u32 rd(u32 off) { return mmio[off / 4]; }
static void wr(u32 off, u32 v) { mmio[off / 4] = v; }

static void __attribute__((noreturn)) fail(const char *what) {
    puts("rng: error ");
    puts(what);
    putc('\n');
    end(1);
}

static void init(const char *cmdline) {
    u32 base = virtio_find(cmdline, 4);
    if (!base) fail("no virtio-rng device");
    mmio = (volatile u32 *)base;
    wr(0x070, 0);
    wr(0x070, 1);                       /* ACKNOWLEDGE */
    wr(0x070, 3);                       /* DRIVER */
    wr(0x014, 1);
    if (!(rd(0x010) & 1)) fail("device lacks VERSION_1");
    wr(0x024, 1);
    wr(0x020, 1);                       /* VERSION_1 */
    wr(0x024, 0);
    wr(0x020, 0);
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
}

/* One request for `len` bytes into bufs[i]; returns what the device gave. */
static u32 request(int i, u32 len) {
    u16 seen = used.idx;
    descs[i].addr = (u32)bufs[i];
    descs[i].len = len;
    descs[i].flags = F_WRITE;
    descs[i].next = 0;
    avail.ring[avail.idx % QSZ] = (u16)i;
    barrier();
    avail.idx++;
    barrier();
    wr(0x050, 0);
    for (u32 spin = 0; used.idx == seen; spin++) {
        if (spin > 100000000u) fail("no answer");
        barrier();
    }
    return used.ring[seen % QSZ].len;
}

static int all_zero(const u8 *b, u32 n) {
    for (u32 i = 0; i < n; i++)
        if (b[i]) return 0;
    return 1;
}

static int same(u32 n) {
    for (u32 i = 0; i < n; i++)
        if (bufs[0][i] != bufs[1][i]) return 0;
    return 1;
}

static void __attribute__((noreturn)) loop(void) {
    for (u32 n = 1;; n++) {
        int i = (int)(n % 2);
        u32 got = request(i, 64);
        int bad = got != 64 || all_zero(bufs[i], 64) || same(64);
        puts("entropy ");
        putu(n);
        puts(bad ? " BAD\n" : " ok\n");
        for (volatile u32 spin = 0; spin < 20000u; spin++) {
        }
    }
}

void rng_mode(const char *mode, const char *cmdline) {
    if (starts(mode, "rng-loop")) {
        init(cmdline);
        loop();
    }
    if (!starts(mode, "rng-read")) fail("unknown mode");
    u32 want = arg_u32(cmdline, "bytes", 64);
    if (want == 0 || want > MAX) want = 64;
    init(cmdline);
    u32 a = request(0, want);
    u32 b = request(1, want);
    puts("rng: got ");
    putu(a);
    puts(" and ");
    putu(b);
    puts(" bytes, ");
    puts(all_zero(bufs[0], want) || all_zero(bufs[1], want) ? "zero" : same(want) ? "same" : "differ");
    putc('\n');
    end(0);
}
