/* Shared by the test guest's C files. */
#ifndef GUEST_H
#define GUEST_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline void barrier(void) { __asm__ volatile("mfence" ::: "memory"); }

void putc(char c);
void puts(const char *s);
void putu(u32 v);
void puthex(u32 v);
int starts(const char *s, const char *p);
/* The value of "key=" on the command line, or 0. */
const char *arg(const char *cmdline, const char *key);
u32 arg_u32(const char *cmdline, const char *key, u32 fallback);
/* The base of the first virtio-mmio v2 device with `device_id` among the
 * virtio_mmio.device=SIZE@BASE:IRQ announcements on the command line, or 0. */
u32 virtio_find(const char *cmdline, u32 device_id);
void end(u8 code) __attribute__((noreturn));

/* The virtio-blk modes (blk.c), virtio-net modes (net.c) and the
 * virtio-rng mode (rng.c). */
void blk_mode(const char *mode, const char *cmdline) __attribute__((noreturn));
void net_mode(const char *mode, const char *cmdline) __attribute__((noreturn));
void rng_mode(const char *mode, const char *cmdline) __attribute__((noreturn));

#endif
