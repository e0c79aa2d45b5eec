/* Shared by the samples that receive a struct hvm_start_info; see hvm_info.h. */
#include "hvm_info.h"
#include "sample.h"
#include "arch.h"
#include <xen/memory.h>

/* Xen's e820 entry as XENMEM_memory_map returns it (packed, 20 bytes). */
struct e820_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
} __attribute__((packed));

#define E820_RAM 1
#define MAX_MEMMAP 64

struct memmap_summary {
	const char *source;
	uint32_t entries;
	uint32_t ram_entries;
	uint64_t ram_bytes;
};

/* Xen's leaves sit at 0x40000000 + 0x100 * i, behind other hypervisors' leaves. */
uint32_t xen_cpuid_base(void)
{
	for (uint32_t base = 0x40000000; base < 0x40010000; base += 0x100) {
		uint32_t eax, ebx, ecx, edx;

		cpuid(base, &eax, &ebx, &ecx, &edx);
		/* "XenVMMXenVMM" */
		if (ebx == 0x566e6558 && ecx == 0x65584d4d && edx == 0x4d4d566e && eax >= base + 2)
			return base;
	}
	return 0;
}

void xen_setup_hypercall_page(uint32_t base)
{
	uint32_t eax, ebx, ecx, edx;

	cpuid(base + 2, &eax, &ebx, &ecx, &edx);
	/* Linked virtual == physical: the page's address is its physical address. */
	wrmsr(ebx, (uintptr_t)hypercall_page);
}

void report_xen(uint32_t base)
{
	uint32_t eax, ebx, ecx, edx;

	report_hex("xen_cpuid_base", base);
	if (!base)
		return;
	cpuid(base + 1, &eax, &ebx, &ecx, &edx);
	report_version("xen_version", eax >> 16, eax & 0xffff);
	cpuid(base + 2, &eax, &ebx, &ecx, &edx);
	report_hex("hypercall_msr", ebx);
}

void choose_hvm_sinks(uint32_t xen_base, int force_debugcon)
{
	static char probe;

	if (!xen_base || force_debugcon) {
		out_set_sinks(SINK_DEBUGCON);
		return;
	}
	/* A zero-length write tells whether Xen accepts console_io from us (dom0). */
	if (hypercall3(__HYPERVISOR_console_io, CONSOLEIO_write, 0, (unsigned long)&probe) == 0)
		out_set_sinks(SINK_CONSOLE_IO);
	else
		out_set_sinks(SINK_DEBUGCON);
}

int hvm_is_domu(const struct hvm_start_info *si, uint32_t xen_base)
{
	return xen_base && si->magic == XEN_HVM_START_MAGIC_VALUE && !(si->flags & SIF_INITDOMAIN);
}

void hvm_domu_sinks(struct domu_rings *rings)
{
	domu_rings_from_hvm_params(rings);
	domu_use_console(rings, SINK_DEBUGCON);
}

const char *hvm_cmdline(const struct hvm_start_info *si)
{
	if (si->magic != XEN_HVM_START_MAGIC_VALUE || !si->cmdline_paddr)
		return "";
	return (const char *)(uintptr_t)si->cmdline_paddr;
}

static void summarize(struct memmap_summary *sum, uint64_t size, uint32_t type)
{
	sum->entries++;
	if (type == E820_RAM) {
		sum->ram_entries++;
		sum->ram_bytes += size;
	}
}

/* Version 1 carries the map; a Xen PVH dom0 gets version 0 and must ask Xen. */
static void read_memmap(const struct hvm_start_info *si, int have_xen, struct memmap_summary *sum)
{
	static struct e820_entry map[MAX_MEMMAP];

	if (si->version >= 1 && si->memmap_paddr) {
		const struct hvm_memmap_table_entry *e =
			(const void *)(uintptr_t)si->memmap_paddr;

		sum->source = "hvm_start_info";
		for (uint32_t i = 0; i < si->memmap_entries; i++)
			summarize(sum, e[i].size, e[i].type);
	} else if (have_xen) {
		struct xen_memory_map req = { .nr_entries = MAX_MEMMAP };

		set_xen_guest_handle(req.buffer, map);
		sum->source = "XENMEM_memory_map";
		if (hypercall2(__HYPERVISOR_memory_op, XENMEM_memory_map, (unsigned long)&req) != 0)
			return;
		for (uint32_t i = 0; i < req.nr_entries; i++)
			summarize(sum, map[i].size, map[i].type);
	} else {
		sum->source = "none";
	}
}

void report_hvm_start_info(const struct hvm_start_info *si, int have_xen)
{
	struct memmap_summary sum = { 0 };

	report_hex("start_info", (uintptr_t)si);
	report_hex("magic", si->magic);
	report_dec("version", si->version);
	report_hex("flags", si->flags);
	report_dec("nr_modules", si->nr_modules);
	report_hex("modlist_paddr", si->modlist_paddr);
	if (si->nr_modules && si->modlist_paddr) {
		const struct hvm_modlist_entry *mod = (const void *)(uintptr_t)si->modlist_paddr;

		report_hex("module0_paddr", mod->paddr);
		report_dec("module0_size", mod->size);
		report_hex("module_fnv", fnv1a((const void *)(uintptr_t)mod->paddr, mod->size));
	}
	report_hex("rsdp_paddr", si->rsdp_paddr);
	report_hex("cmdline_paddr", si->cmdline_paddr);
	report_str("cmdline", hvm_cmdline(si));
	read_memmap(si, have_xen, &sum);
	report_str("memmap_source", sum.source);
	report_dec("memmap_entries", sum.entries);
	report_dec("ram_entries", sum.ram_entries);
	report_dec("ram_bytes", sum.ram_bytes);
}
