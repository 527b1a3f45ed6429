/* A polling virtio-net driver on virtio-mmio (version 2), and the modes
 * that use it. The device is the first virtio_mmio.device on the command
 * line whose device ID is 1. Frames carry the local-experimental EtherType
 * 0x88b5 so the host's own chatter (IPv6 neighbour discovery and the like)
 * is told apart and skipped.
 *   net-send   send `count` broadcast frames ("vmtools frame N from MAC")
 *   net-recv   wait for one 0x88b5 frame, print its source and text
 *   net-ping   broadcast "ping from MAC", wait for a "pong" frame, print it
 *   net-pong   answer every "ping" frame with "pong from MAC" to its
 *              sender, printing each, until the VM is stopped
 *   net-hdr    wait for an IPv4 UDP frame, print its virtio-net header's
 *              flags and gso_type (csum=1 takes GUEST_CSUM first)
 *   net-flood  send `count` frames of `size` bytes, 16 in flight at a time
 *              (with halt=1, halt afterwards instead of ending)
 *   net-tso    send one TCP segment of `size` payload bytes as a TSO frame
 *              (GSO_TCPV4 with gso_size `mss`, checksum left to finish)
 *              from 10.9.0.2:40000 to 10.9.0.1:9 at `hostmac`
 *              (aa:bb:..), PSH without ACK; print the reset the host
 *              answers with: its ack is seq + size if the host took the
 *              whole segment */

#include "guest.h"

#define QSZ 16
#define F_NEXT 1
#define F_WRITE 2
#define HDR 12
#define BUF 1536
#define ETHERTYPE 0x88b5

struct desc { u64 addr; u32 len; u16 flags; u16 next; };
struct avail { u16 flags; u16 idx; u16 ring[QSZ]; u16 used_event; };
struct used_elem { u32 id; u32 len; };
struct used { u16 flags; u16 idx; struct used_elem ring[QSZ]; u16 avail_event; };
struct vq {
    struct desc desc[QSZ] __attribute__((aligned(16)));
    struct avail avail __attribute__((aligned(4)));
    struct used used __attribute__((aligned(4096)));
    u16 last_used;
};

static struct vq rxq, txq;
static u8 rxbuf[QSZ][HDR + BUF] __attribute__((aligned(16)));
static u8 txbuf[QSZ][HDR + BUF] __attribute__((aligned(16)));
static volatile u32 *mmio;
static u8 mac[6];

static u32 rd(u32 off) { return mmio[off / 4]; }
static void wr(u32 off, u32 v) { mmio[off / 4] = v; }

static void __attribute__((noreturn)) fail(const char *what) {
    puts("net: error ");
    puts(what);
    putc('\n');
    end(1);
}

static void setup_queue(u32 index, struct vq *q) {
    wr(0x030, index);
    if (rd(0x034) < QSZ) fail("queue too small");
    wr(0x038, QSZ);
    wr(0x080, (u32)q->desc); wr(0x084, 0);
    wr(0x090, (u32)&q->avail); wr(0x094, 0);
    wr(0x0a0, (u32)&q->used); wr(0x0a4, 0);
    wr(0x044, 1);
}

static void offer(struct vq *q, u16 id) {
    q->avail.ring[q->avail.idx % QSZ] = id;
    barrier();
    q->avail.idx++;
}

/* The next used entry of `q`, or -1 when there is none yet. */
static int take(struct vq *q, u32 *len) {
    if (*(volatile u16 *)&q->used.idx == q->last_used) return -1;
    barrier();
    struct used_elem e = q->used.ring[q->last_used % QSZ];
    q->last_used++;
    *len = e.len;
    return (int)e.id;
}

static u32 offloads;

static void init(const char *cmdline) {
    u32 base = virtio_find(cmdline, 1);
    if (!base) fail("no virtio-net device on the command line");
    mmio = (volatile u32 *)base;
    if (rd(0x004) != 2) fail("not a virtio-mmio v2 device");
    wr(0x070, 0);
    wr(0x070, 1);
    wr(0x070, 3);
    wr(0x014, 1);
    if (!(rd(0x010) & 1)) fail("device lacks VERSION_1");
    wr(0x024, 1);
    wr(0x020, 1);                       /* VERSION_1 */
    wr(0x024, 0);
    /* MAC; with csum=1 also GUEST_CSUM, so the host may hand us frames
     * whose checksum is left to finish (the header says so). */
    offloads = arg_u32(cmdline, "csum", 0) ? (1u << 1) : 0;
    /* tso=1: CSUM and HOST_TSO4, so we may hand the device frames to
     * checksum and segment. */
    if (arg_u32(cmdline, "tso", 0)) offloads |= (1u << 0) | (1u << 11);
    wr(0x020, (1u << 5) | offloads);
    wr(0x070, 11);
    if (!(rd(0x070) & 8)) fail("features refused");
    for (int i = 0; i < 6; i++) mac[i] = ((volatile u8 *)mmio)[0x100 + i];
    setup_queue(0, &rxq);
    setup_queue(1, &txq);
    for (u16 i = 0; i < QSZ; i++) {
        rxq.desc[i].addr = (u32)rxbuf[i];
        rxq.desc[i].len = HDR + BUF;
        rxq.desc[i].flags = F_WRITE;
        offer(&rxq, i);
    }
    wr(0x070, 15);
    barrier();
    wr(0x050, 0);
}

static void put_mac(const u8 *m) {
    for (int i = 0; i < 6; i++) {
        putc("0123456789abcdef"[m[i] >> 4]);
        putc("0123456789abcdef"[m[i] & 15]);
        if (i < 5) putc(':');
    }
}

/* Builds a frame in tx slot `slot`: destination, our source, 0x88b5, text
 * (padded to `size` bytes of frame when larger). Returns its length. */
static u32 frame(int slot, const u8 *dst, const char *text, u32 n, u32 size) {
    u8 *b = txbuf[slot];
    for (int i = 0; i < HDR; i++) b[i] = 0;
    u8 *f = b + HDR;
    for (int i = 0; i < 6; i++) { f[i] = dst[i]; f[6 + i] = mac[i]; }
    f[12] = ETHERTYPE >> 8;
    f[13] = ETHERTYPE & 0xff;
    u32 len = 14;
    while (*text && len < BUF) f[len++] = (u8)*text++;
    if (n != 0xffffffffu) {
        char d[11];
        int i = 10;
        d[i] = 0;
        do { d[--i] = (char)('0' + n % 10); n /= 10; } while (n);
        for (const char *p = d + i; *p && len < BUF; p++) f[len++] = (u8)*p;
    }
    if (size > len && size <= BUF) {
        for (; len < size; len++) f[len] = 0;
    }
    while (len < 60) f[len++] = 0;
    return len;
}

static void send_slots(u32 n, const u32 *lens) {
    for (u32 i = 0; i < n; i++) {
        txq.desc[i].addr = (u32)txbuf[i];
        txq.desc[i].len = HDR + lens[i];
        txq.desc[i].flags = 0;
        offer(&txq, (u16)i);
    }
    barrier();
    wr(0x050, 1);
    u32 got = 0, len;
    while (got < n) {
        if (take(&txq, &len) >= 0) got++;
        else __asm__ volatile("pause");
    }
}

static const u8 broadcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

#define TSO_MAX 8192
#define TSO_SEQ 0x01000000u
static u8 big[HDR + 54 + TSO_MAX] __attribute__((aligned(16)));

static void put16(u8 *p, u32 v) { p[0] = (u8)(v >> 8); p[1] = (u8)v; }
static void put16le(u8 *p, u32 v) { p[0] = (u8)v; p[1] = (u8)(v >> 8); }
static u32 get32(const u8 *p) { return (u32)p[0] << 24 | (u32)p[1] << 16 | (u32)p[2] << 8 | p[3]; }
static u32 sum16(u32 s, const u8 *p, u32 n) {
    for (u32 i = 0; i + 1 < n; i += 2) s += (u32)p[i] << 8 | p[i + 1];
    if (n & 1) s += (u32)p[n - 1] << 8;
    return s;
}
static u32 fold(u32 s) {
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return s;
}
static u32 hexdigit(char c) {
    return c >= 'a' ? (u32)(c - 'a' + 10) : (u32)(c - '0');
}

/* The TSO frame and its virtio-net header, as a Linux guest builds them. */
static u32 tso_frame(const u8 *dst, u32 size, u32 mss) {
    u8 *h = big;
    for (int i = 0; i < HDR; i++) h[i] = 0;
    h[0] = 1;                                   /* NEEDS_CSUM */
    h[1] = 1;                                   /* GSO_TCPV4 */
    put16le(h + 2, 54);                         /* hdr_len */
    put16le(h + 4, mss);                        /* gso_size */
    put16le(h + 6, 34);                         /* csum_start */
    put16le(h + 8, 16);                         /* csum_offset */
    u8 *f = h + HDR;
    for (int i = 0; i < 6; i++) { f[i] = dst[i]; f[6 + i] = mac[i]; }
    put16(f + 12, 0x0800);
    u8 *ip = f + 14;
    static const u8 ip_head[20] = {0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0,
                                   10, 9, 0, 2, 10, 9, 0, 1};
    for (int i = 0; i < 20; i++) ip[i] = ip_head[i];
    put16(ip + 2, 40 + size);
    put16(ip + 10, ~fold(sum16(0, ip, 20)) & 0xffff);
    u8 *tcp = ip + 20;
    for (int i = 0; i < 20; i++) tcp[i] = 0;
    put16(tcp, 40000);
    put16(tcp + 2, 9);
    put16(tcp + 4, TSO_SEQ >> 16);
    put16(tcp + 6, TSO_SEQ & 0xffff);
    tcp[12] = 0x50;                             /* 20-byte header */
    tcp[13] = 0x08;                             /* PSH */
    put16(tcp + 14, 0xffff);
    for (u32 i = 0; i < size; i++) tcp[20 + i] = (u8)i;
    /* The pseudo-header sum, left for the device side to finish. */
    u32 ps = sum16(0, ip + 12, 8) + 6 + 20 + size;
    put16(tcp + 16, fold(ps));
    return 54 + size;
}

/* The next received frame's buffer id (its length, header included, in
 * *len), waiting for one. */
static int rx_next(u32 *len) {
    int id;
    while ((id = take(&rxq, len)) < 0) __asm__ volatile("pause");
    return id;
}

/* Gives a receive buffer back to the device. */
static void rx_recycle(int id) {
    offer(&rxq, (u16)id);
    barrier();
    wr(0x050, 0);
}

/* Waits for a 0x88b5 frame whose text starts with `prefix`; copies its
 * source; prints it after `label`. */
static void wait_frame(const char *label, const char *prefix, u8 *src) {
    for (;;) {
        u32 len;
        int id = rx_next(&len);
        u8 *f = rxbuf[id] + HDR;
        u32 flen = len > HDR ? len - HDR : 0;
        int ok = flen > 14 && f[12] == (ETHERTYPE >> 8) && f[13] == (ETHERTYPE & 0xff)
                 && starts((const char *)f + 14, prefix);
        if (ok) {
            for (int i = 0; i < 6; i++) src[i] = f[6 + i];
            puts(label);
            puts(" src=");
            put_mac(src);
            puts(" text=");
            for (u32 i = 14; i < flen && f[i] >= 0x20 && f[i] < 0x7f; i++) putc((char)f[i]);
            putc('\n');
        }
        rx_recycle(id);
        if (ok) return;
    }
}

void net_mode(const char *mode, const char *cmdline) {
    init(cmdline);
    static char text[64];
    char *t = text;
    for (const char *p = " from "; *p; p++) *t++ = *p;
    for (int i = 0; i < 6; i++) {
        *t++ = "0123456789abcdef"[mac[i] >> 4];
        *t++ = "0123456789abcdef"[mac[i] & 15];
        if (i < 5) *t++ = ':';
    }
    *t++ = ' ';
    *t = 0;
    u8 src[6];
    if (starts(mode, "net-send")) {
        u32 count = arg_u32(cmdline, "count", 1);
        for (u32 i = 0; i < count; i++) {
            static char msg[80];
            char *m = msg;
            for (const char *p = "vmtools frame"; *p; p++) *m++ = *p;
            for (const char *p = text; *p; p++) *m++ = *p;
            *m = 0;
            u32 len = frame(0, broadcast, msg, i, 0);
            send_slots(1, &len);
        }
        puts("net-send mac=");
        put_mac(mac);
        puts(" sent=");
        putu(count);
        putc('\n');
        end(0);
    } else if (starts(mode, "net-recv")) {
        puts("net-recv mac=");
        put_mac(mac);
        putc('\n');
        wait_frame("net-recv got", "", src);
        end(0);
    } else if (starts(mode, "net-ping")) {
        static char msg[80] = "ping";
        char *m = msg + 4;
        for (const char *p = text; *p; p++) *m++ = *p;
        *m = 0;
        u32 len = frame(0, broadcast, msg, 0xffffffffu, 0);
        send_slots(1, &len);
        wait_frame("net-ping got", "pong", src);
        end(0);
    } else if (starts(mode, "net-pong")) {
        puts("net-pong ready mac=");
        put_mac(mac);
        putc('\n');
        static char msg[80] = "pong";
        char *m = msg + 4;
        for (const char *p = text; *p; p++) *m++ = *p;
        *m = 0;
        for (;;) {
            wait_frame("net-pong got", "ping", src);
            u32 len = frame(0, src, msg, 0xffffffffu, 0);
            send_slots(1, &len);
        }
    } else if (starts(mode, "net-hdr")) {
        puts("net-hdr ready mac=");
        put_mac(mac);
        putc('\n');
        for (;;) {
            u32 len;
            int id = rx_next(&len);
            u8 *h = rxbuf[id];
            u8 *f = h + HDR;
            if (len > HDR + 34 && f[12] == 0x08 && f[13] == 0x00 && f[23] == 17) {
                puts("net-hdr flags=");
                putu(h[0]);
                puts(" gso=");
                putu(h[1]);
                puts(" csum_start=");
                putu((u32)h[6] | (u32)h[7] << 8);
                putc('\n');
                /* Stay up: the host reads the console, then stops us. */
                for (;;) __asm__ volatile("cli; hlt");
            }
            rx_recycle(id);
        }
    } else if (starts(mode, "net-flood")) {
        u32 count = arg_u32(cmdline, "count", 1000);
        u32 size = arg_u32(cmdline, "size", 60);
        static u32 lens[QSZ];
        for (int i = 0; i < QSZ; i++) lens[i] = frame(i, broadcast, "flood", 0xffffffffu, size);
        for (u32 sent = 0; sent < count;) {
            u32 n = count - sent < QSZ ? count - sent : QSZ;
            send_slots(n, lens);
            sent += n;
        }
        puts("net-flood sent=");
        putu(count);
        putc('\n');
        /* halt=1: stay up, so the host can read the VMM's counters. */
        if (arg_u32(cmdline, "halt", 0))
            for (;;) __asm__ volatile("cli; hlt");
        end(0);
    } else if (starts(mode, "net-tso")) {
        u32 size = arg_u32(cmdline, "size", 3000);
        u32 mss = arg_u32(cmdline, "mss", 1000);
        const char *hm = arg(cmdline, "hostmac");
        if (!hm || size > TSO_MAX || mss == 0) fail("tso arguments");
        u8 host[6];
        for (int i = 0; i < 6; i++, hm += 3) host[i] = (u8)(hexdigit(hm[0]) << 4 | hexdigit(hm[1]));
        u32 len = tso_frame(host, size, mss);
        txq.desc[0].addr = (u32)big;
        txq.desc[0].len = HDR + len;
        txq.desc[0].flags = 0;
        offer(&txq, 0);
        barrier();
        wr(0x050, 1);
        puts("net-tso sent size=");
        putu(size);
        putc('\n');
        for (;;) {
            u32 rlen;
            int id = rx_next(&rlen);
            u8 *f = rxbuf[id] + HDR;
            /* IPv4, TCP, from 10.9.0.1, RST */
            if (rlen >= HDR + 54 && f[12] == 0x08 && f[13] == 0x00 && f[23] == 6 &&
                f[26] == 10 && f[29] == 1 && (f[47] & 0x04)) {
                puts("net-tso rst ack=");
                putu(get32(f + 42));
                putc('\n');
                for (;;) __asm__ volatile("cli; hlt");
            }
            rx_recycle(id);
        }
    }
    fail("unknown net mode");
}
