/*
 * pvh-hello: a PVH-only kernel that reports the hvm_start_info it received.
 *
 * With Xen present (found through cpuid) it sets up its hypercall page and prints
 * via console_io when Xen lets it (dom0), otherwise via port 0xe9. As a domU
 * (hvm_start_info without SIF_INITDOMAIN) it prints through its console ring as
 * well as port 0xe9, and reads its name from xenstore (lib/domu.h).
 */
#include "sample.h"
#include "arch.h"
#include "hvm_info.h"
#include <xen/sched.h>

__attribute__((section(".data"))) uint32_t shimgen_boot_mode = 0;

/* Registers at entry, saved by entry.S. */
uint32_t entry_ebx, entry_eax;

static struct domu_rings rings;
static int domu;

static void finish(int have_xen, int ok) __attribute__((noreturn));
static void finish(int have_xen, int ok)
{
	struct sched_shutdown shutdown = { .reason = ok ? SHUTDOWN_poweroff : SHUTDOWN_crash };

	report_str("result", ok ? "ok" : "fail");
	report_done();
	if (domu)
		domu_shutdown(ok);
	if (have_xen)
		xen_console_drain_wait();
	outb(SHIMGEN_DEBUG_EXIT_PORT, ok ? SHIMGEN_DEBUG_EXIT_OK : SHIMGEN_DEBUG_EXIT_FAIL);
	/* Still running: no isa-debug-exit device here. */
	if (have_xen)
		hypercall2(__HYPERVISOR_sched_op, SCHEDOP_shutdown, (unsigned long)&shutdown);
	sample_hang();
}

void pvh_main(const struct hvm_start_info *si)
{
	uint32_t xen_base = xen_cpuid_base();
	unsigned mode = xen_base ? SHIMGEN_BOOT_MODE_XEN_PVH : SHIMGEN_BOOT_MODE_PVH_NO_XEN;
	const char *cmdline = hvm_cmdline(si);
	int ok;

	if (xen_base)
		xen_setup_hypercall_page(xen_base);
	domu = hvm_is_domu(si, xen_base);
	if (domu)
		hvm_domu_sinks(&rings);
	else /* sample=debugcon: show how port 0xe9 output reaches the harness under Xen. */
		choose_hvm_sinks(xen_base, cmdline_has_word(cmdline, "sample=debugcon"));
	report_sinks("console");
	report_str("name", sample_name);
	report_dec("mode", mode);
	report_str("mode_name", boot_mode_name(mode));
	report_dec("boot_mode_var", shimgen_boot_mode);
	report_hex("entry_ebx", entry_ebx);
	report_hex("entry_eax", entry_eax);
	report_xen(xen_base);
	if (si->magic != XEN_HVM_START_MAGIC_VALUE) {
		/* Nothing else in the struct can be trusted. */
		report_hex("magic", si->magic);
		report_str("error", "bad hvm_start_info magic");
		finish(xen_base != 0, 0);
	}
	report_hvm_start_info(si, xen_base != 0);
	ok = 1;
	if (domu) {
		domu_report_frames(&rings);
		ok = domu_report(&rings);
	}
	if (!sample_run_action(cmdline))
		ok = 0;
	finish(xen_base != 0, ok);
}
