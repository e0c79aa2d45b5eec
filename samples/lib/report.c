/*
 * Report output: lines are buffered and written whole, so that Xen's own log
 * messages never split a guest line in the serial log the harness parses.
 */
#include "sample.h"
#include "arch.h"
#include "xen_hcall.h"
#include "xencons.h"

static unsigned enabled_sinks;
static char line[256];
static size_t line_len;
/* SINK_BACKLOG: the lines kept for a sink found later, in the sample's buffer (cut
 * when full). */
static char *backlog;
static size_t backlog_size, backlog_len;

void out_set_sinks(unsigned sinks)
{
	enabled_sinks = sinks;
}

static void flush_line(void)
{
	if (enabled_sinks & SINK_CONSOLE_IO)
		hypercall3(__HYPERVISOR_console_io, CONSOLEIO_write, line_len, (unsigned long)line);
	if (enabled_sinks & SINK_DEBUGCON)
		for (size_t i = 0; i < line_len; i++)
			outb(SHIMGEN_DEBUGCON_PORT, (uint8_t)line[i]);
	if (enabled_sinks & SINK_RING)
		xencons_write(line, line_len);
	if (enabled_sinks & SINK_BACKLOG)
		for (size_t i = 0; i < line_len && backlog_len < backlog_size; i++)
			backlog[backlog_len++] = line[i];
	line_len = 0;
}

void out_set_backlog(char *buffer, size_t size)
{
	backlog = buffer;
	backlog_size = size;
	backlog_len = 0;
}

const char *out_backlog(size_t *len)
{
	*len = backlog_len;
	return backlog;
}

void out_char(char c)
{
	line[line_len++] = c;
	if (c == '\n' || line_len == sizeof(line))
		flush_line();
}

void out_str(const char *s)
{
	while (*s)
		out_char(*s++);
}

void out_hex(uint64_t value)
{
	static const char digits[] = "0123456789abcdef";
	int shift = 60;

	out_str("0x");
	while (shift > 0 && ((value >> shift) & 0xf) == 0)
		shift -= 4;
	for (; shift >= 0; shift -= 4)
		out_char(digits[(value >> shift) & 0xf]);
}

/* Binary long division: a 32-bit build has no libgcc to divide 64-bit numbers. */
static uint64_t divmod10(uint64_t value, unsigned *remainder)
{
	uint64_t quotient = 0, rest = 0;

	for (int bit = 63; bit >= 0; bit--) {
		rest = (rest << 1) | ((value >> bit) & 1);
		if (rest >= 10) {
			rest -= 10;
			quotient |= (uint64_t)1 << bit;
		}
	}
	*remainder = (unsigned)rest;
	return quotient;
}

void out_dec(uint64_t value)
{
	char digits[21];
	int n = 0;
	unsigned rem;

	do {
		value = divmod10(value, &rem);
		digits[n++] = (char)('0' + rem);
	} while (value);
	while (n)
		out_char(digits[--n]);
}

static void report_key(const char *key)
{
	out_str(SHIMGEN_REPORT_PREFIX);
	out_str(key);
	out_char('=');
}

void report_str(const char *key, const char *value)
{
	report_key(key);
	/* One value per line: a newline inside it would forge a new key. */
	for (; *value; value++)
		out_char(*value == '\n' || *value == '\r' ? ' ' : *value);
	out_char('\n');
}

void report_hex(const char *key, uint64_t value)
{
	report_key(key);
	out_hex(value);
	out_char('\n');
}

void report_dec(const char *key, uint64_t value)
{
	report_key(key);
	out_dec(value);
	out_char('\n');
}

void report_version(const char *key, uint32_t major, uint32_t minor)
{
	report_key(key);
	out_dec(major);
	out_char('.');
	out_dec(minor);
	out_char('\n');
}

void report_done(void)
{
	out_str(SHIMGEN_REPORT_PREFIX SHIMGEN_REPORT_DONE "\n");
}

void report_sinks(const char *key)
{
	static const struct {
		unsigned sink;
		const char *name;
	} names[] = {
		{ SINK_CONSOLE_IO, "console_io" },
		{ SINK_RING, "ring" },
		{ SINK_DEBUGCON, "debugcon" },
	};
	const char *sep = "";

	report_key(key);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (enabled_sinks & names[i].sink) {
			out_str(sep);
			out_str(names[i].name);
			sep = "+";
		}
	if (!*sep)
		out_str("none");
	out_char('\n');
}
