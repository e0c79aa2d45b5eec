/*
 * Shared declarations of the shimgen sample kernels.
 *
 * Every sample prints a boot report, one "key=value" per line, each line starting
 * with SHIMGEN_REPORT_PREFIX, and ends it with SHIMGEN_REPORT_PREFIX
 * SHIMGEN_REPORT_DONE. The harness (shimgen/verify/boot.py) parses exactly this
 * format.
 *
 * shimgen.h is generated (build/shimgen.h, by `shimgen layout --format c`): the boot
 * modes, shimgen_boot_mode, the report strings and the isa-debug-exit port and
 * values come from shimgen itself, never typed here.
 */
#ifndef SAMPLE_H
#define SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "shimgen.h"

/* shimgen_boot_mode as linked: no shim wrote it, the image's own entry ran. */
#define MODE_UNPATCHED 0

/* Where report lines go; a line goes to every sink that is enabled. */
#define SINK_CONSOLE_IO 1u /* HYPERVISOR_console_io (dom0 only on release Xen) */
#define SINK_DEBUGCON 2u /* port 0xe9: QEMU debugcon, or Xen's "(d0) " log lines */
/* Kept in memory (out_set_backlog), for a sink found later: a PV domU reaches its console
 * ring only once it has found the ring's frame. */
#define SINK_BACKLOG 8u

extern const char sample_name[];

void out_set_sinks(unsigned sinks);
void out_char(char c);
void out_str(const char *s);
void out_hex(uint64_t value);
void out_dec(uint64_t value);
/* The buffer SINK_BACKLOG keeps lines in, and what it kept so far. */
void out_set_backlog(char *buffer, size_t size);
const char *out_backlog(size_t *len);

void report_str(const char *key, const char *value);
void report_hex(const char *key, uint64_t value);
void report_dec(const char *key, uint64_t value);
void report_version(const char *key, uint32_t major, uint32_t minor);
void report_done(void);
/* key=the enabled sinks joined by '+' (console_io, ring, debugcon), or none. */
void report_sinks(const char *key);

size_t str_len(const char *s);
uint32_t fnv1a(const void *data, uint64_t size);
int str_starts(const char *s, const char *prefix);
int cmdline_has_word(const char *cmdline, const char *word);
const char *boot_mode_name(unsigned mode);

/*
 * Test hooks chosen on the kernel command line, so one image covers every verdict:
 * sample=hang and sample=crash do not return; sample=fail returns 0; otherwise 1.
 * The action taken is reported first.
 */
int sample_run_action(const char *cmdline);
void sample_hang(void) __attribute__((noreturn));
void xen_console_drain_wait(void);
void sample_crash(void) __attribute__((noreturn));

/* gcc may emit calls to these even with -ffreestanding. */
void *memset(void *dst, int c, size_t n);
void *memcpy(void *dst, const void *src, size_t n);

#endif
