/*
 * pv-hello / pv-highhalf: a PV kernel that reports the start_info it received.
 *
 * Unpatched it boots as a Xen PV guest (mode 1). Made universal by shimgen, the
 * shim enters the same PV entry from PVH with a synthesized start_info and the
 * mode in rdi and shimgen_boot_mode: mode 2 (PVH under Xen) must avoid PV-only
 * hypercalls, mode 3 (no Xen) must avoid hypercalls altogether.
 *
 * As a domU (start_info without SIF_INITDOMAIN) it prints through its console
 * ring and reads its name from xenstore, as PV and as PVH (lib/domu.h); a dom0
 * prints with console_io.
 */
#include "sample.h"
#include "arch.h"
#include "xen_hcall.h"
#include "start_info_rings.h"
#include <xen/physdev.h>
#include <xen/sched.h>
#include <xen/version.h>

/*
 * The shim writes the mode here before the kernel runs: keep it in .data, not
 * .bss, so it has file bytes and nothing zeroes it after the shim wrote it.
 */
__attribute__((section(".data"))) uint32_t shimgen_boot_mode = 0;

/* Registers at entry, saved by entry.S. */
uint64_t entry_rdi, entry_rsi, entry_rdx, entry_rsp;

extern char __virt_base[], _start[];

static unsigned effective_mode(void)
{
	/* An unpatched image is only ever entered by a PV loader. */
	return shimgen_boot_mode == MODE_UNPATCHED ? SHIMGEN_BOOT_MODE_XEN_PV : shimgen_boot_mode;
}

/* A guest the toolstack started: under Xen, and not the initial domain. */
static int is_domu(unsigned mode, const start_info_t *si)
{
	return (mode == SHIMGEN_BOOT_MODE_XEN_PV || mode == SHIMGEN_BOOT_MODE_XEN_PVH) && !(si->flags & SIF_INITDOMAIN);
}

static struct domu_rings rings;

static void choose_sinks(unsigned mode, const start_info_t *si)
{
	if (is_domu(mode, si)) {
		/* console_io is refused to a domU on release Xen: its console ring, and
		   under PVH port 0xe9 too (Xen logs it as "(dN) ..."). */
		domu_rings_from_start_info(&rings, si, mode == SHIMGEN_BOOT_MODE_XEN_PV);
		domu_use_console(&rings, mode == SHIMGEN_BOOT_MODE_XEN_PVH ? SINK_DEBUGCON : 0);
	} else if (mode == SHIMGEN_BOOT_MODE_XEN_PV || mode == SHIMGEN_BOOT_MODE_XEN_PVH) {
		out_set_sinks(SINK_CONSOLE_IO);
	} else {
		out_set_sinks(SINK_DEBUGCON);
	}
}

static void report_entry(unsigned mode)
{
	report_str("name", sample_name);
	report_dec("mode", mode);
	report_str("mode_name", boot_mode_name(mode));
	report_dec("boot_mode_var", shimgen_boot_mode);
	report_hex("entry_rdi", entry_rdi);
	report_hex("entry_rsi", entry_rsi);
	report_hex("entry_rdx", entry_rdx);
	report_hex("entry_rsp", entry_rsp);
	report_hex("virt_base", (uint64_t)__virt_base);
	report_hex("kernel_entry", (uint64_t)_start);
	report_sinks("console");
	if (mode != SHIMGEN_BOOT_MODE_PVH_NO_XEN) {
		long v = hypercall2(__HYPERVISOR_xen_version, XENVER_version, 0);
		report_version("xen_version", (uint32_t)v >> 16, (uint32_t)v & 0xffff);
	}
}

static void report_start_info(const start_info_t *si)
{
	char magic[sizeof(si->magic) + 1];

	memcpy(magic, si->magic, sizeof(si->magic));
	magic[sizeof(si->magic)] = '\0';
	report_hex("start_info", (uint64_t)si);
	report_str("magic", magic);
	report_dec("nr_pages", si->nr_pages);
	report_hex("shared_info", si->shared_info);
	report_hex("flags", si->flags);
	report_hex("store_mfn", si->store_mfn);
	report_dec("store_evtchn", si->store_evtchn);
	if (si->flags & SIF_INITDOMAIN) {
		report_hex("console_info_off", si->console.dom0.info_off);
		report_dec("console_info_size", si->console.dom0.info_size);
	} else {
		report_hex("console_mfn", si->console.domU.mfn);
		report_dec("console_evtchn", si->console.domU.evtchn);
	}
	report_hex("pt_base", si->pt_base);
	report_dec("nr_pt_frames", si->nr_pt_frames);
	report_hex("mfn_list", si->mfn_list);
	report_hex("mod_start", si->mod_start);
	report_dec("mod_len", si->mod_len);
	/* A virtual address this kernel can read, unless Xen gave a frame number. */
	if (si->mod_len && si->mod_start && !(si->flags & SIF_MOD_START_PFN))
		report_hex("module_fnv", fnv1a((const void *)si->mod_start, si->mod_len));
	report_hex("first_p2m_pfn", si->first_p2m_pfn);
	report_dec("nr_p2m_frames", si->nr_p2m_frames);
}

static void finish(unsigned mode, const start_info_t *si, int ok) __attribute__((noreturn));
static void finish(unsigned mode, const start_info_t *si, int ok)
{
	struct sched_shutdown shutdown = { .reason = ok ? SHUTDOWN_poweroff : SHUTDOWN_crash };
	uint8_t code = ok ? SHIMGEN_DEBUG_EXIT_OK : SHIMGEN_DEBUG_EXIT_FAIL;

	report_str("result", ok ? "ok" : "fail");
	report_done();
	if (is_domu(mode, si))
		domu_shutdown(ok);
	if (mode != SHIMGEN_BOOT_MODE_PVH_NO_XEN)
		xen_console_drain_wait();
	if (mode == SHIMGEN_BOOT_MODE_XEN_PV) {
		/* A PV kernel runs in ring 3: port I/O needs a virtual IOPL first. */
		struct physdev_set_iopl iopl = { .iopl = 3 };

		if (hypercall2(__HYPERVISOR_physdev_op, PHYSDEVOP_set_iopl, (unsigned long)&iopl) == 0)
			outb(SHIMGEN_DEBUG_EXIT_PORT, code);
	} else {
		outb(SHIMGEN_DEBUG_EXIT_PORT, code);
	}
	/* Still running: no isa-debug-exit device (or no I/O access). */
	if (mode != SHIMGEN_BOOT_MODE_PVH_NO_XEN)
		hypercall2(__HYPERVISOR_sched_op, SCHEDOP_shutdown, (unsigned long)&shutdown);
	sample_hang();
}

static char cmdline[MAX_GUEST_CMDLINE + 1];

void pv_main(uint64_t rdi, start_info_t *si)
{
	unsigned mode = effective_mode();
	int ok = 1;

	choose_sinks(mode, si);
	report_entry(mode);
	if (mode > SHIMGEN_BOOT_MODE_PVH_NO_XEN) {
		report_str("error", "unknown boot mode");
		finish(mode, si, 0);
	}
	report_start_info(si);
	/* Copy: the loader's string may lack its NUL, and start_info stays untouched. */
	memcpy(cmdline, si->cmd_line, sizeof(si->cmd_line));
	report_str("cmdline", cmdline);
	if (!str_starts((const char *)si->magic, "xen-3.0-x86_64")) {
		report_str("error", "bad start_info magic");
		ok = 0;
	}
	if (shimgen_boot_mode != MODE_UNPATCHED && rdi != shimgen_boot_mode) {
		report_str("error", "rdi disagrees with shimgen_boot_mode");
		ok = 0;
	}
	if (is_domu(mode, si) && !domu_report(&rings))
		ok = 0;
	if (!sample_run_action(cmdline))
		ok = 0;
	finish(mode, si, ok);
}
