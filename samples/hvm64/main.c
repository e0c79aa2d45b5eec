/*
 * hvm64-hello: a kernel whose only entry is 64-bit and takes a struct hvm_start_info,
 * the way kernels with their own 32-to-64-bit PVH stub hand over to C. It reports the
 * struct like pvh-hello does, plus the registers it was entered with.
 *
 * Unpatched it boots nowhere. shimgen's hvm-start-info handoff makes it boot as:
 *   mode 1, Xen PV: CPL 3, a struct the shim built from start_info_t (addresses are
 *     pseudo-physical, which with VIRT_BASE 0 are this kernel's own pointers);
 *     hypercalls through the page Xen filled;
 *   mode 2, PVH under Xen: CPL 0, the loader's struct; this kernel fills its
 *     hypercall page itself;
 *   mode 3, PVH without Xen: the loader's struct, no hypercalls, port 0xe9.
 * As a domU (no SIF_INITDOMAIN in the flags) it prints through its console ring
 * (and port 0xe9 under PVH) and reads its name from xenstore (lib/domu.h): as PV it
 * finds the rings in Xen's start_info, which the handoff passes in rdx; as PVH in
 * the HVM params.
 */
#include "sample.h"
#include "arch.h"
#include "hvm_info.h"
#include "start_info_rings.h"
#include <xen/physdev.h>
#include <xen/sched.h>
#include <xen/version.h>

/* In .data, not .bss: it has file bytes, so nothing zeroes it after the shim wrote it. */
__attribute__((section(".data"))) uint32_t shimgen_boot_mode = 0;

/* Registers at entry, saved by entry.S. */
uint64_t entry_rdi, entry_rsi, entry_rdx, entry_rbx, entry_rsp;

static void report_entry(unsigned mode, uint32_t xen_base)
{
	report_str("name", sample_name);
	report_dec("mode", mode);
	report_str("mode_name", boot_mode_name(mode));
	report_dec("boot_mode_var", shimgen_boot_mode);
	report_hex("entry_rdi", entry_rdi);
	report_hex("entry_rsi", entry_rsi);
	report_hex("entry_rdx", entry_rdx);
	report_hex("entry_rbx", entry_rbx);
	report_hex("entry_rsp", entry_rsp);
	if (mode == SHIMGEN_BOOT_MODE_XEN_PV) {
		/* Xen's cpuid leaves are hidden from a PV guest: ask Xen itself. */
		long v = hypercall2(__HYPERVISOR_xen_version, XENVER_version, 0);

		report_version("xen_version", (uint32_t)v >> 16, (uint32_t)v & 0xffff);
	} else {
		report_xen(xen_base);
	}
}

static struct domu_rings rings;
static int domu;

/* Xen PV: the handoff passes Xen's start_info (virtual) in rdx. */
static const start_info_t *xen_start_info(void)
{
	return (const start_info_t *)entry_rdx;
}

/* Where report lines go: console_io for dom0 (as PV; probed as PVH), the console
 * ring for a domU (with port 0xe9 as PVH), port 0xe9 without Xen. */
static void choose_sinks(unsigned mode, uint32_t xen_base, const struct hvm_start_info *si,
			 const char *cmdline)
{
	if (mode == SHIMGEN_BOOT_MODE_XEN_PV) {
		domu = !(xen_start_info()->flags & SIF_INITDOMAIN);
		if (domu) {
			domu_rings_from_start_info(&rings, xen_start_info(), 1);
			domu_use_console(&rings, 0);
		} else {
			out_set_sinks(SINK_CONSOLE_IO);
		}
		return;
	}
	domu = hvm_is_domu(si, xen_base);
	if (domu)
		hvm_domu_sinks(&rings);
	else
		choose_hvm_sinks(xen_base, cmdline_has_word(cmdline, "sample=debugcon"));
}

static void finish(unsigned mode, int ok) __attribute__((noreturn));
static void finish(unsigned mode, int ok)
{
	struct sched_shutdown shutdown = { .reason = ok ? SHUTDOWN_poweroff : SHUTDOWN_crash };
	uint8_t code = ok ? SHIMGEN_DEBUG_EXIT_OK : SHIMGEN_DEBUG_EXIT_FAIL;
	int have_xen = mode == SHIMGEN_BOOT_MODE_XEN_PV || mode == SHIMGEN_BOOT_MODE_XEN_PVH;

	report_str("result", ok ? "ok" : "fail");
	report_done();
	if (domu)
		domu_shutdown(ok);
	if (have_xen)
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
	if (have_xen)
		hypercall2(__HYPERVISOR_sched_op, SCHEDOP_shutdown, (unsigned long)&shutdown);
	sample_hang();
}

/* What the entry registers must say, by the hvm-start-info ABI. */
static int check_entry(unsigned mode, uint32_t xen_base, const struct hvm_start_info *si)
{
	int ok = 1;

	if (si->magic != XEN_HVM_START_MAGIC_VALUE) {
		report_str("error", "bad hvm_start_info magic");
		ok = 0;
	}
	if (entry_rdi != shimgen_boot_mode) {
		report_str("error", "rdi disagrees with shimgen_boot_mode");
		ok = 0;
	}
	if (entry_rsi != entry_rbx) {
		report_str("error", "rsi and rbx differ");
		ok = 0;
	}
	if (mode != SHIMGEN_BOOT_MODE_XEN_PV &&
	    (mode == SHIMGEN_BOOT_MODE_XEN_PVH) != (xen_base != 0)) {
		report_str("error", "the mode disagrees with Xen's cpuid leaves");
		ok = 0;
	}
	return ok;
}

void hvm64_main(uint64_t rdi, const struct hvm_start_info *si)
{
	unsigned mode = (unsigned)rdi;
	uint32_t xen_base = 0;
	const char *cmdline;
	int ok;

	if (mode == SHIMGEN_BOOT_MODE_XEN_PVH || mode == SHIMGEN_BOOT_MODE_PVH_NO_XEN) {
		xen_base = xen_cpuid_base();
		if (xen_base)
			xen_setup_hypercall_page(xen_base);
	}
	cmdline = hvm_cmdline(si);
	choose_sinks(mode, xen_base, si, cmdline);
	report_entry(mode, xen_base);
	report_sinks("console");
	if (mode < SHIMGEN_BOOT_MODE_XEN_PV || mode > SHIMGEN_BOOT_MODE_PVH_NO_XEN) {
		report_str("error", "unknown boot mode");
		finish(mode, 0);
	}
	ok = check_entry(mode, xen_base, si);
	if (si->magic == XEN_HVM_START_MAGIC_VALUE)
		report_hvm_start_info(si, mode != SHIMGEN_BOOT_MODE_PVH_NO_XEN);
	if (domu) {
		domu_report_frames(&rings);
		if (!domu_report(&rings))
			ok = 0;
	}
	if (!sample_run_action(cmdline))
		ok = 0;
	finish(mode, ok);
}
