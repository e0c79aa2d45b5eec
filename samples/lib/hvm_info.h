/*
 * What the samples that receive a struct hvm_start_info share (pvh-hello in 32-bit
 * code, hvm64-hello in 64-bit code): finding Xen through cpuid, filling the hypercall
 * page through Xen's MSR, choosing where report lines go, and reporting the struct.
 *
 * Both samples are linked virtual == physical, so a physical address from the struct
 * is a pointer as it is (for hvm64-hello under Xen PV, a pseudo-physical address with
 * VIRT_BASE 0 is one too).
 */
#ifndef HVM_INFO_H
#define HVM_INFO_H

#include <stdint.h>

#include "domu.h"
#include "xen_hcall.h"
#include <xen/arch-x86/hvm/start_info.h>

/* Xen's base cpuid leaf (0x40000000 + 0x100 * i), 0 when Xen is absent. */
uint32_t xen_cpuid_base(void);
/* Ask Xen to fill hypercall_page (its physical address is its address). */
void xen_setup_hypercall_page(uint32_t base);
/* xen_cpuid_base, and Xen's version and hypercall MSR when found. */
void report_xen(uint32_t base);
/* console_io when Xen accepts it from this guest (dom0), else port 0xe9. */
void choose_hvm_sinks(uint32_t xen_base, int force_debugcon);
/* PVH under Xen, not the initial domain: a guest xl started. */
int hvm_is_domu(const struct hvm_start_info *si, uint32_t xen_base);
/* A PVH domU: its rings from HVM params, report lines to the console ring and to
 * port 0xe9 (Xen logs those as "(dN) ..."). */
void hvm_domu_sinks(struct domu_rings *rings);
/* The command line, or "" when it is absent or the struct is not trustworthy. */
const char *hvm_cmdline(const struct hvm_start_info *si);
/* Every field, module 0, and the memory map summed up (asking Xen for a version-0
 * struct when have_xen). */
void report_hvm_start_info(const struct hvm_start_info *si, int have_xen);

#endif
