/* Small freestanding helpers shared by every sample. */
#include "sample.h"
#include "arch.h"

void *memset(void *dst, int c, size_t n)
{
	unsigned char *d = dst;

	while (n--)
		*d++ = (unsigned char)c;
	return dst;
}

void *memcpy(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *s = src;

	while (n--)
		*d++ = *s++;
	return dst;
}

/* 32-bit FNV-1a: enough to show a module arrived byte for byte (tests hash the file). */
uint32_t fnv1a(const void *data, uint64_t size)
{
	const unsigned char *p = data;
	uint32_t hash = 0x811c9dc5;

	while (size--) {
		hash ^= *p++;
		hash *= 0x01000193;
	}
	return hash;
}

size_t str_len(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	return n;
}

int str_starts(const char *s, const char *prefix)
{
	while (*prefix)
		if (*s++ != *prefix++)
			return 0;
	return 1;
}

/* Whole-word match, words separated by spaces. */
int cmdline_has_word(const char *cmdline, const char *word)
{
	size_t n = str_len(word);

	while (*cmdline) {
		while (*cmdline == ' ')
			cmdline++;
		if (str_starts(cmdline, word) && (cmdline[n] == ' ' || cmdline[n] == '\0'))
			return 1;
		while (*cmdline && *cmdline != ' ')
			cmdline++;
	}
	return 0;
}

const char *boot_mode_name(unsigned mode)
{
	switch (mode) {
	case SHIMGEN_BOOT_MODE_XEN_PV:
		return "xen-pv";
	case SHIMGEN_BOOT_MODE_XEN_PVH:
		return "xen-pvh";
	case SHIMGEN_BOOT_MODE_PVH_NO_XEN:
		return "pvh";
	default:
		return "unknown";
	}
}

int sample_run_action(const char *cmdline)
{
	if (cmdline_has_word(cmdline, "sample=hang")) {
		report_str("action", "hang");
		sample_hang();
	}
	if (cmdline_has_word(cmdline, "sample=fail")) {
		report_str("action", "fail");
		return 0;
	}
	if (cmdline_has_word(cmdline, "sample=crash")) {
		report_str("action", "crash");
		sample_crash();
	}
	return 1;
}

/* Spin without hlt: a halted vCPU with interrupts off is a shutdown to Xen (PVH). */
void sample_hang(void)
{
	for (;;)
		cpu_relax();
}

void sample_crash(void)
{
	/* No IDT / trap table is installed, so #UD ends the guest the hard way. */
	__asm__ volatile("ud2");
	for (;;)
		;
}

/*
 * Xen queues serial output and sends it from its UART interrupt, so a guest that
 * ends QEMU (port 0xf4) right after printing loses the tail of its report. Give
 * Xen some tens of milliseconds first (TSC cycles: at least 1 GHz on anything
 * that runs Xen under QEMU, real time under TCG).
 */
void xen_console_drain_wait(void)
{
	uint64_t start = rdtsc();

	while (rdtsc() - start < 100000000ull)
		cpu_relax();
}
