/* vmtools test guest. Its command line picks a mode:
 *   hello      print a greeting, then end (default)
 *   crash      triple fault
 *   reboot     print, then reset through the i8042 only (no 0xf4)
 *   heartbeat  program the PIT, print "tick N" five times a second, until
 *              Ctrl-Alt-Del arrives on the keyboard
 *   echo       copy serial input to serial output until a 'q'
 *   cli-hlt    print, then halt with interrupts off, forever
 *   fill       write a non-zero pattern over `mb=` MiB (default 16) from
 *              16 MiB up (below the 3 GiB hole), print "filled", halt; or
 *              with `dirty=` MiB, go on dirtying that many as memtouch does
 *   memcount   rewrite `pages=` pages (default 1024) at 16 MiB each round
 *              with a pattern of the round, checking the last round's
 *              first; print "round N ok", or "MEMORY ERROR" and end
 *   memtouch   write one word in each of `pages=` pages at 16 MiB, pass
 *              after pass (the pass number, checking the last pass's
 *              first): dirties pages fast; "touch N ok" every 16 passes
 *   blk-*      virtio-blk checks (blk.c)
 *   net-*      virtio-net checks (net.c)
 *   rng-*      virtio-rng checks (rng.c)
 * A run ends with a write to port 0xf4 (QEMU's isa-debug-exit) followed by
 * the i8042 reset, so both QEMU microvm and vm-run stop. */

#include "guest.h"

static u32 ticks, beats;
extern void irq0_entry(void);
extern void irq1_entry(void);
extern void idle(void) __attribute__((noreturn));

void putc(char c) { outb(0x3f8, (u8)c); }
void puts(const char *s) { while (*s) putc(*s++); }
void puthex(u32 v) {
    for (int i = 28; i >= 0; i -= 4) putc("0123456789abcdef"[(v >> i) & 15]);
}
void putu(u32 v) {
    char b[11];
    int i = 10;
    b[i] = 0;
    do { b[--i] = (char)('0' + v % 10); v /= 10; } while (v);
    puts(b + i);
}

int starts(const char *s, const char *p) {
    while (*p) if (*s++ != *p++) return 0;
    return 1;
}

const char *arg(const char *cmdline, const char *key) {
    const char *p = cmdline;
    if (!p) return 0;
    while (*p) {
        const char *k = key, *q = p;
        while (*k && *q == *k) { q++; k++; }
        if (!*k && *q == '=') return q + 1;
        while (*p && *p != ' ') p++;
        while (*p == ' ') p++;
    }
    return 0;
}

/* Decimal, or hexadecimal after 0x. */
u32 virtio_find(const char *cmdline, u32 device_id) {
    for (const char *p = cmdline; p && *p;) {
        if (starts(p, "virtio_mmio.device=")) {
            const char *v = p;
            while (*v && *v != '@' && *v != ' ') v++;
            if (starts(v, "@0x")) {
                u32 base = 0;
                for (v += 3;; v++) {
                    if (*v >= '0' && *v <= '9') base = base * 16 + (u32)(*v - '0');
                    else if (*v >= 'a' && *v <= 'f') base = base * 16 + (u32)(*v - 'a' + 10);
                    else break;
                }
                volatile u32 *m = (volatile u32 *)base;
                if (m[0] == 0x74726976 && m[1] == 2 && m[2] == device_id) return base;
            }
        }
        while (*p && *p != ' ') p++;
        while (*p == ' ') p++;
    }
    return 0;
}

u32 arg_u32(const char *cmdline, const char *key, u32 fallback) {
    const char *v = arg(cmdline, key);
    u32 n = 0;
    if (!v) return fallback;
    if (v[0] == '0' && v[1] == 'x') {
        for (v += 2;; v++) {
            if (*v >= '0' && *v <= '9') n = n * 16 + (u32)(*v - '0');
            else if (*v >= 'a' && *v <= 'f') n = n * 16 + (u32)(*v - 'a' + 10);
            else return n;
        }
    }
    while (*v >= '0' && *v <= '9') n = n * 10 + (u32)(*v++ - '0');
    return n;
}

void end(u8 code) {
    outb(0xf4, code);          /* QEMU isa-debug-exit */
    outb(0x64, 0xfe);          /* i8042: pulse reset */
    for (;;) __asm__ volatile("cli; hlt");
}

struct idt_entry { u16 lo, sel; u8 zero, type; u16 hi; } __attribute__((packed));
static struct idt_entry idt[256];
struct idt_ptr { u16 limit; u32 base; } __attribute__((packed));

static void set_gate(int vector, void (*handler)(void)) {
    u32 h = (u32)handler;
    idt[vector].lo = (u16)h;
    idt[vector].hi = (u16)(h >> 16);
    idt[vector].sel = 0x08;
    idt[vector].type = 0x8e;
}

/* Timer interrupt (20 Hz): a heartbeat line every fourth tick. */
void on_tick(void) {
    if (++ticks % 4 == 0) {
        puts("tick ");
        putu(++beats);
        putc('\n');
    }
}

/* Keyboard interrupt: Ctrl-Alt-Del (its Del make code, 0xe0 0x53) powers
 * the guest off the way a PC answers it, through the reset line. */
static u8 last_key;
void on_key(void) {
    while (inb(0x64) & 1) {
        u8 k = inb(0x60);
        if (last_key == 0xe0 && k == 0x53) {
            puts("ctrl-alt-del: going down\n");
            end(0);
        }
        last_key = k;
    }
}

/* The word at index i of round r: any change of either shows. */
static u32 pattern(u32 round, u32 i) {
    u32 x = round * 0x9e3779b1u ^ i * 0x85ebca6bu;
    x ^= x >> 15;
    return x * 0xc2b2ae35u + 1;
}

static void __attribute__((noreturn)) memcount(const char *cmdline) {
    volatile u32 *mem = (volatile u32 *)0x1000000;
    u32 words = arg_u32(cmdline, "pages", 1024) * 1024;
    for (u32 round = 1;; round++) {
        for (u32 i = 0; i < words; i++) {
            if (round > 1 && mem[i] != pattern(round - 1, i)) {
                puts("MEMORY ERROR at word ");
                putu(i);
                puts(" in round ");
                putu(round);
                putc('\n');
                end(1);
            }
            mem[i] = pattern(round, i);
        }
        puts("round ");
        putu(round);
        puts(" ok\n");
    }
}

static void __attribute__((noreturn)) touch_loop(u32 pages) {
    volatile u32 *mem = (volatile u32 *)0x1000000;
    for (u32 pass = 1;; pass++) {
        for (u32 p = 0; p < pages; p++) {
            if (pass > 1 && mem[p * 1024] != pass - 1) {
                puts("MEMORY ERROR at page ");
                putu(p);
                puts(" in pass ");
                putu(pass);
                putc('\n');
                end(1);
            }
            mem[p * 1024] = pass;
        }
        if (pass % 16 == 0) {
            puts("touch ");
            putu(pass / 16);
            puts(" ok\n");
        }
    }
}

static void __attribute__((noreturn)) memtouch(const char *cmdline) {
    touch_loop(arg_u32(cmdline, "pages", 1024));
}

static void __attribute__((noreturn)) fill(const char *cmdline) {
    u32 mb = arg_u32(cmdline, "mb", 16);
    if (mb > 3056) mb = 3056;  /* 16 MiB + this stays below the 3 GiB hole */
    u32 *p = (u32 *)0x1000000;
    u32 count = mb << 18;      /* words */
    __asm__ volatile("cld; rep stosl" : "+D"(p), "+c"(count) : "a"(0x5a5aa5a5u) : "memory");
    puts("filled\n");
    u32 dirty = arg_u32(cmdline, "dirty", 0);  /* MiB to dirty in a loop */
    if (dirty) touch_loop(dirty << 8);
    for (;;) __asm__ volatile("cli; hlt");
}

static void __attribute__((noreturn)) heartbeat(void) {
    set_gate(0x20, irq0_entry);
    set_gate(0x21, irq1_entry);
    struct idt_ptr p = { sizeof(idt) - 1, (u32)idt };
    __asm__ volatile("lidt %0" : : "m"(p));
    /* 8259: vectors 0x20.. and 0x28.., only IRQ0 and IRQ1 unmasked. */
    outb(0x20, 0x11); outb(0xa0, 0x11);
    outb(0x21, 0x20); outb(0xa1, 0x28);
    outb(0x21, 0x04); outb(0xa1, 0x02);
    outb(0x21, 0x01); outb(0xa1, 0x01);
    outb(0x21, 0xfc); outb(0xa1, 0xff);
    /* PIT channel 0, rate generator, 20 Hz. */
    outb(0x43, 0x34);
    outb(0x40, 59659 & 0xff);
    outb(0x40, 59659 >> 8);
    idle();
}

void guest_main(u32 start_info) {
    /* hvm_start_info: magic at 0, cmdline_paddr at 24. */
    const u32 *si = (const u32 *)start_info;
    const char *cmdline = si && si[0] == 0x336ec578 ? (const char *)si[6] : 0;
    const char *mode = arg(cmdline, "mode");
    if (!mode) mode = "hello";
    puts("vmtools test guest: ");
    if (starts(mode, "crash")) {
        puts("crashing\n");
        struct idt_ptr p = { 0, 0 };
        __asm__ volatile("lidt %0; int3" : : "m"(p));
    } else if (starts(mode, "reboot")) {
        puts("rebooting\n");
        outb(0x64, 0xfe);
        for (;;) __asm__ volatile("cli; hlt");
    } else if (starts(mode, "heartbeat")) {
        puts("heartbeat\n");
        heartbeat();
    } else if (starts(mode, "echo")) {
        /* Serial input comes back out; 'q' ends the run. */
        puts("echo\n");
        for (;;) {
            if (inb(0x3fd) & 1) {
                char c = (char)inb(0x3f8);
                if (c == 'q') {
                    puts("bye\n");
                    end(0);
                }
                putc(c);
            }
        }
    } else if (starts(mode, "blk-")) {
        blk_mode(mode, cmdline);
    } else if (starts(mode, "net-")) {
        net_mode(mode, cmdline);
    } else if (starts(mode, "rng-")) {
        rng_mode(mode, cmdline);
    } else if (starts(mode, "fill")) {
        puts("fill\n");
        fill(cmdline);
    } else if (starts(mode, "memtouch")) {
        puts("memtouch\n");
        memtouch(cmdline);
    } else if (starts(mode, "memcount")) {
        puts("memcount\n");
        memcount(cmdline);
    } else if (starts(mode, "cli-hlt")) {
        puts("halting\n");
        for (;;) __asm__ volatile("cli; hlt");
    }
    puts("hello\n");
    (void)inb(0x64);
    end(0);
}
