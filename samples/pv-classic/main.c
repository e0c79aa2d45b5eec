/*
 * pv-classic: a 64-bit PV kernel written the way PV unikernels are. It installs
 * its own trap table and callbacks, finds its frames through mfn_list and the M2P,
 * changes its page tables with mmu_update, update_va_mapping and mmuext_op, loads
 * its own GDT, takes events through its event callback and waits for a timer with
 * SCHEDOP_block. It never asks how it was booted: under PVH, shimgen's PV ABI layer
 * must answer every one of these the way Xen answers a PV guest, so this kernel is
 * that layer's test (issue 11). The only use of the boot mode is where report lines
 * go (port 0xe9 as well under PVH, as the other samples do).
 *
 * Each step reports one line, "step.NAME=ok" or why not. A step that needs an
 * earlier one which failed says "skip" rather than run into a fault nothing would
 * report; the M2P, which a boot may lack, is looked for in the kernel's L4 before it
 * is read, and read through a probe the #PF handler resumes. The report ends with
 * result=ok when every step passed; then the kernel shuts down (poweroff, or crash
 * when a step failed).
 */
#include "sample.h"
#include "arch.h"
#include "probe.h"
#include "pv_hypercall.h"
#include "start_info_rings.h"
#include <xen/callback.h>
#include <xen/event_channel.h>
#include <xen/sched.h>
#include <xen/vcpu.h>
#include <xen/version.h>

/* Kept in .data: the shim writes it before the kernel runs (see pv/main.c). */
__attribute__((section(".data"))) uint32_t shimgen_boot_mode = 0;
/* Registers at entry, saved by pv/entry.S. */
uint64_t entry_rdi, entry_rsi, entry_rdx, entry_rsp;
uint64_t trap_fixup, trap_probe_rsp;

extern char __virt_base[];

#define PAGE_BYTES (1ul << XEN_PAGE_SHIFT)
#define PAGE_ALIGNED __attribute__((aligned(PAGE_BYTES)))
#define ENTRIES_PER_TABLE (PAGE_BYTES / sizeof(uint64_t))

/* Page-table entry bits (Intel SDM vol. 3, "4-level paging"); Xen's public headers
 * leave them to the guest. */
#define PTE_PRESENT 0x1ull
#define PTE_RW 0x2ull
#define PTE_ACCESSED 0x20ull
#define PTE_DIRTY 0x40ull
#define PTE_PSE 0x80ull
#define PTE_FRAME 0x000ffffffffff000ull
#define PTE_KERNEL_RW (PTE_PRESENT | PTE_RW | PTE_ACCESSED | PTE_DIRTY)
#define PTE_KERNEL_RO (PTE_PRESENT | PTE_ACCESSED)

/* Exception vectors (Intel SDM vol. 3, "Exception and Interrupt Reference"). */
#define VECTOR_DE 0
#define VECTOR_BP 3
#define VECTOR_UD 6
#define VECTOR_GP 13
#define VECTOR_PF 14
#define RFLAGS_IF 0x200ull

/* A flat data segment, DPL 3 (base 0, limit 4 GiB, present, writable): loadable
 * by a PV kernel, whose selectors carry RPL 3. Its GDT slot 1 gives selector 0xb. */
#define GDT_FLAT_DATA_DPL3 0x00cff3000000ffffull
#define GDT_OWN_SELECTOR ((1 << 3) | 3)
#define GDT_ENTRIES (PAGE_BYTES / sizeof(uint64_t))

#define WINDOW_MARK 0x77696e646f77ull /* "window" */
#define SCRATCH_MARK 0x736372617463ull /* "scratc" */
#define TIMER_WAIT_NS 2000000ull /* the timer step's deadline: 2 ms ahead */
#define TIMER_BLOCKS 64 /* SCHEDOP_block calls before the timer step gives up */

/* Pages this kernel remaps: each alone in its page, in the image Xen mapped. */
static uint8_t window[PAGE_BYTES] PAGE_ALIGNED; /* mmu_update points it at scratch */
static uint8_t scratch[PAGE_BYTES] PAGE_ALIGNED;
static uint8_t hole[PAGE_BYTES] PAGE_ALIGNED; /* unmapped for the #PF */
static uint8_t shared_info_page[PAGE_BYTES] PAGE_ALIGNED; /* Xen's shared_info goes here */
static uint64_t gdt[GDT_ENTRIES] PAGE_ALIGNED;
static uint64_t l4_copy[ENTRIES_PER_TABLE] PAGE_ALIGNED; /* NEW_BASEPTR's table */
static uint8_t trap_stack[4 * PAGE_BYTES] __attribute__((aligned(16))); /* stack_switch's */

static const start_info_t *si;
static volatile struct shared_info *shared;
static volatile struct vcpu_info *vcpu;
static struct domu_rings rings;
static int all_ok = 1;

/* What each part of the kernel got working: later steps need earlier ones. */
static int traps_in, callbacks_in, m2p_ok, shared_info_in;

static void finish(int ok) __attribute__((noreturn));

/* --- the report ---------------------------------------------------------------- */

static void step_head(const char *name)
{
	out_str(SHIMGEN_REPORT_PREFIX "step.");
	out_str(name);
	out_char('=');
}

static void out_signed(long value)
{
	if (value < 0) {
		out_char('-');
		value = -value;
	}
	out_dec((uint64_t)value);
}

/* "ok" when ok, else "fail rc=RC" (when rc is not 0) and why. Returns ok. */
static int step(const char *name, int ok, long rc, const char *why)
{
	step_head(name);
	if (ok) {
		out_str("ok\n");
		return 1;
	}
	all_ok = 0;
	out_str("fail");
	if (rc) {
		out_str(" rc=");
		out_signed(rc);
	}
	if (why) {
		out_char(' ');
		out_str(why);
	}
	out_char('\n');
	return 0;
}

static int step_rc(const char *name, long rc)
{
	return step(name, rc == 0, rc, NULL);
}

static void skip(const char *name, const char *needs)
{
	all_ok = 0;
	step_head(name);
	out_str("skip (needs ");
	out_str(needs);
	out_str(")\n");
}

static void out_field(const char *name, uint64_t value)
{
	out_char(' ');
	out_str(name);
	out_char('=');
	out_hex(value);
}

/* --- frames: pfn <-> mfn <-> address, as every PV kernel does it ------------------ */

static uint64_t table_index(uint64_t va, int level)
{
	return (va >> (XEN_PAGE_SHIFT + 9 * (level - 1))) & (ENTRIES_PER_TABLE - 1);
}

static uint64_t virt_to_pfn(const void *va)
{
	return ((uint64_t)va - (uint64_t)__virt_base) >> XEN_PAGE_SHIFT;
}

static uint64_t virt_to_mfn(const void *va)
{
	return ((const uint64_t *)si->mfn_list)[virt_to_pfn(va)];
}

/* The M2P Xen maps read-only at MACH2PHYS_VIRT_START for every PV guest. */
static uint64_t mfn_to_pfn(uint64_t mfn)
{
	return ((const uint64_t *)MACH2PHYS_VIRT_START)[mfn];
}

/* Xen's initial mapping puts pfn at VIRT_BASE + (pfn << 12); NULL past the guest. */
static void *mfn_to_virt(uint64_t mfn)
{
	uint64_t pfn = mfn_to_pfn(mfn);

	return pfn < si->nr_pages ? __virt_base + (pfn << XEN_PAGE_SHIFT) : NULL;
}

/* --- traps ---------------------------------------------------------------------- */

static const char *const trap_names[] = {
	[VECTOR_DE] = "de", [VECTOR_BP] = "bp", [VECTOR_UD] = "ud", [VECTOR_GP] = "gp", [VECTOR_PF] = "pf",
};

#define NO_TRAP (~0u)

/* What the last trap's frame held (vector NO_TRAP: none since the last check). */
static struct {
	unsigned vector;
	uint64_t rcx, r11, error, rip, cs, rflags, rsp, ss, cr2;
} last_trap;

/*
 * Called by traps.S's entries with the frame Xen built: rcx, r11, [error code], rip,
 * cs (bits 32-39: the upcall mask Xen saved), rflags, rsp, ss. Reports it, then
 * resumes the probe that trapped; a trap no probe expected ends the run.
 */
void pv_trap(unsigned vector, uint64_t *frame, int has_error)
{
	uint64_t *iret = frame + 2 + has_error;

	last_trap.vector = vector;
	last_trap.rcx = frame[0];
	last_trap.r11 = frame[1];
	last_trap.error = has_error ? frame[2] : 0;
	last_trap.rip = iret[0];
	last_trap.cs = iret[1];
	last_trap.rflags = iret[2];
	last_trap.rsp = iret[3];
	last_trap.ss = iret[4];
	/* #PF: Xen writes the faulting address to vcpu_info, as a PV kernel cannot read CR2 */
	last_trap.cr2 = vector == VECTOR_PF && vcpu ? vcpu->arch.cr2 : 0;
	out_str(SHIMGEN_REPORT_PREFIX "trap.");
	out_str(trap_names[vector]);
	out_char('=');
	out_str("vector=");
	out_dec(vector);
	out_field("rcx", last_trap.rcx);
	out_field("r11", last_trap.r11);
	if (has_error)
		out_field("error", last_trap.error);
	out_field("rip", last_trap.rip);
	out_field("cs", last_trap.cs);
	out_field("rflags", last_trap.rflags);
	out_field("rsp", last_trap.rsp);
	out_field("ss", last_trap.ss);
	if (vector == VECTOR_PF)
		out_field("cr2", last_trap.cr2);
	out_char('\n');
	if (!trap_fixup) {
		report_str("error", "a trap no probe expected");
		finish(0);
	}
	iret[0] = trap_fixup; /* past the instruction that trapped (int3: where it was) */
	trap_fixup = 0;
}

void pv_failsafe(const uint64_t *frame)
{
	report_hex("failsafe_rsp", (uint64_t)frame);
	report_str("error", "Xen called the failsafe callback");
	finish(0);
}

static void install_traps(void)
{
	/* flags: the privilege level that may raise it with int n (3 for int3, so user
	   code could too); 0 for the others, raised only by the CPU. */
	static const trap_info_t table[] = {
		{ VECTOR_DE, 0, FLAT_KERNEL_CS, (unsigned long)trap_de },
		{ VECTOR_BP, 3, FLAT_KERNEL_CS, (unsigned long)trap_bp },
		{ VECTOR_UD, 0, FLAT_KERNEL_CS, (unsigned long)trap_ud },
		{ VECTOR_GP, 0, FLAT_KERNEL_CS, (unsigned long)trap_gp },
		{ VECTOR_PF, 0, FLAT_KERNEL_CS, (unsigned long)trap_pf },
		{ 0, 0, 0, 0 }, /* the end: address 0 */
	};

	traps_in = step_rc("set_trap_table", HYPERVISOR_set_trap_table(table));
}

/* The frame of a trap from this kernel, as Xen builds it: the kernel's flat code
 * selector with RPL 0 (create_bounce_frame marks kernel context so), its stack
 * selector, the probe's rsp and markers, and the upcall mask saved both in cs bits
 * 32-39 and as rflags.IF. */
static const char *trap_frame_error(unsigned vector, const char *rip, uint64_t error)
{
	if (last_trap.vector != vector)
		return "another vector";
	if (last_trap.rip != (uint64_t)rip)
		return "rip";
	if (last_trap.rcx != PROBE_RCX || last_trap.r11 != PROBE_R11)
		return "rcx/r11 on top of the frame";
	if (last_trap.error != error)
		return "error code";
	if ((uint16_t)last_trap.cs != (FLAT_KERNEL_CS & ~3) || (uint16_t)last_trap.ss != FLAT_KERNEL_SS)
		return "cs/ss";
	if (last_trap.rsp != trap_probe_rsp)
		return "rsp";
	if (vcpu && ((last_trap.cs >> 32) & 0xff) != vcpu->evtchn_upcall_mask)
		return "saved upcall mask in cs";
	if (vcpu && !(last_trap.rflags & RFLAGS_IF) != !!vcpu->evtchn_upcall_mask)
		return "rflags.IF";
	return NULL;
}

static void check_trap(const char *name, long markers_lost, unsigned vector, const char *rip, uint64_t error)
{
	const char *why = trap_frame_error(vector, rip, error);

	if (!why && vector == VECTOR_PF && last_trap.cr2 != (uint64_t)hole)
		why = "vcpu_info.arch.cr2 is not the address read";
	if (!why && markers_lost)
		why = "rcx/r11 after the iret hypercall";
	step(name, !why, 0, why);
	last_trap.vector = NO_TRAP; /* a probe that does not trap must not pass on this one */
}

static void provoke_traps(void)
{
	if (!traps_in) {
		skip("trap_bp", "set_trap_table");
		return;
	}
	last_trap.vector = NO_TRAP;
	check_trap("trap_bp", provoke_bp(), VECTOR_BP, provoke_bp_at + 1, 0);
	check_trap("trap_ud", provoke_ud(), VECTOR_UD, provoke_ud_at, 0);
	check_trap("trap_de", provoke_de(), VECTOR_DE, provoke_de_at, 0);
	check_trap("trap_gp", provoke_gp(), VECTOR_GP, provoke_gp_at, 0);
	if (!shared_info_in) {
		skip("trap_pf", "update_va_mapping");
		return;
	}
	/* A page of this kernel unmapped, then read: not present, a read, from the
	   kernel (Xen clears the user bit for a PV kernel's own faults): error code 0. */
	if (!step_rc("unmap_page", HYPERVISOR_update_va_mapping(hole, 0, UVMF_INVLPG)))
		return;
	check_trap("trap_pf", provoke_pf(hole), VECTOR_PF, provoke_pf_at, 0);
}

/* --- callbacks and stacks ---------------------------------------------------------- */

static void install_callbacks(void)
{
	struct callback_register event = {
		.type = CALLBACKTYPE_event,
		.address = (unsigned long)event_callback,
	};
	struct callback_register failsafe = {
		.type = CALLBACKTYPE_failsafe,
		.flags = CALLBACKF_mask_events,
		.address = (unsigned long)failsafe_callback,
	};
	long rc;

	/* The older call first (event, failsafe, no syscall entry), then the same
	   through callback_op, which later kernels use. */
	callbacks_in = step_rc("set_callbacks",
			       HYPERVISOR_set_callbacks((unsigned long)event_callback,
							(unsigned long)failsafe_callback, 0));
	rc = HYPERVISOR_callback_op(CALLBACKOP_register, &event);
	if (!rc)
		rc = HYPERVISOR_callback_op(CALLBACKOP_register, &failsafe);
	callbacks_in |= step_rc("callback_op", rc);
}

static void switch_stacks(void)
{
	/* The stack Xen puts a trap frame on when user code traps (none here). */
	step_rc("stack_switch", HYPERVISOR_stack_switch(FLAT_KERNEL_SS, trap_stack + sizeof(trap_stack)));
}

/* --- the M2P, the rings ----------------------------------------------------------- */

/* Whether the kernel's top-level table maps MACH2PHYS_VIRT_START, where Xen puts the
 * M2P in every PV guest's L4. A PV kernel may take it for granted; looking first lets
 * a boot without it fail this step, not fault before a trap handler can say so. */
static int m2p_mapped(void)
{
	const uint64_t *l4 = (const uint64_t *)si->pt_base;

	return (l4[table_index(MACH2PHYS_VIRT_START, 4)] & PTE_PRESENT) != 0;
}

/* mfn_list and the M2P agree on a page of this kernel and on its top-level table
 * (read through a probe: with the trap table in, a fault is a failed step). */
static void check_m2p(void)
{
	const void *pages[] = { window, (const void *)si->pt_base };
	uint64_t pfn = 0;

	if (!si->mfn_list) {
		step("m2p", 0, 0, "start_info.mfn_list is 0");
		return;
	}
	if (!m2p_mapped()) {
		step("m2p", 0, 0, "pt_base maps nothing at MACH2PHYS_VIRT_START");
		return;
	}
	for (unsigned i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
		uint64_t mfn = virt_to_mfn(pages[i]);

		if (probe_read((const uint64_t *)MACH2PHYS_VIRT_START + mfn, &pfn) ||
		    pfn != virt_to_pfn(pages[i])) {
			report_hex("m2p_mfn", mfn);
			step("m2p", 0, 0, "M2P[mfn_list[pfn]] is not pfn");
			return;
		}
	}
	m2p_ok = step("m2p", 1, 0, NULL);
}

static int is_domu(void)
{
	return !(si->flags & SIF_INITDOMAIN);
}

/* A domU's report goes to its console ring, found through the M2P: what it printed
 * before is replayed there first. */
static void attach_console(void)
{
	unsigned also = shimgen_boot_mode == SHIMGEN_BOOT_MODE_XEN_PVH ? SINK_DEBUGCON : 0;
	const char *early;
	size_t len;

	if (!is_domu())
		return;
	if (!m2p_ok) {
		out_set_sinks(also);
		skip("console_ring", "m2p");
		return;
	}
	domu_rings_from_start_info(&rings, si, 1);
	if (rings.console) {
		xencons_attach(rings.console, rings.console_evtchn);
		early = out_backlog(&len);
		xencons_write(early, len);
	}
	domu_use_console(&rings, also);
	step("console_ring", rings.console != NULL, 0, "M2P gives no pfn of this guest");
}

/* --- page tables ------------------------------------------------------------------ */

static void map_shared_info(void)
{
	long rc = HYPERVISOR_update_va_mapping(shared_info_page, si->shared_info | PTE_KERNEL_RW, UVMF_INVLPG);

	if (!step_rc("update_va_mapping", rc))
		return;
	shared = (volatile struct shared_info *)shared_info_page;
	vcpu = &shared->vcpu_info[0];
	shared_info_in = 1;
	/* Xen starts a PV vCPU with events masked: nothing arrives before a callback. */
	step("events_masked_at_entry", vcpu->evtchn_upcall_mask == 1, 0, "evtchn_upcall_mask is 0");
	vcpu->evtchn_upcall_mask = 1;
}

/* The L1 entry mapping va, found from pt_base through each level's frame and the
 * M2P: its address here, and its machine address for mmu_update. */
static volatile uint64_t *find_l1_entry(const void *va, uint64_t *machine_address)
{
	uint64_t *table = (uint64_t *)si->pt_base;
	uint64_t mfn = 0;

	for (int level = 4; level > 1; level--) {
		uint64_t entry = table[table_index((uint64_t)va, level)];

		if (!(entry & PTE_PRESENT) || (level < 4 && (entry & PTE_PSE)))
			return NULL;
		mfn = (entry & PTE_FRAME) >> XEN_PAGE_SHIFT;
		table = mfn_to_virt(mfn);
		if (!table)
			return NULL;
	}
	*machine_address = (mfn << XEN_PAGE_SHIFT) + table_index((uint64_t)va, 1) * sizeof(uint64_t);
	return &table[table_index((uint64_t)va, 1)];
}

static long set_l1_entry(uint64_t machine_address, uint64_t value)
{
	struct mmu_update req = { .ptr = machine_address | MMU_NORMAL_PT_UPDATE, .val = value };
	unsigned done = 0;
	long rc = HYPERVISOR_mmu_update(&req, 1, &done, DOMID_SELF);

	return rc ? rc : done == 1 ? 0 : -1;
}

static long mmuext(unsigned cmd, uint64_t arg)
{
	struct mmuext_op op = { .cmd = cmd, .arg1.linear_addr = arg };

	return HYPERVISOR_mmuext_op(&op, 1, NULL, DOMID_SELF);
}

static uint64_t read_window(void)
{
	return *(volatile uint64_t *)window;
}

/* window's L1 entry pointed at scratch's frame and back, through mmu_update, with
 * INVLPG and a TLB flush so the CPU sees each change. */
static void update_l1_entry(void)
{
	volatile uint64_t *entry;
	uint64_t machine_address, original;

	if (!m2p_ok) {
		skip("mmu_update", "m2p");
		return;
	}
	*(volatile uint64_t *)window = WINDOW_MARK;
	*(volatile uint64_t *)scratch = SCRATCH_MARK;
	entry = find_l1_entry(window, &machine_address);
	if (!entry) {
		step("mmu_update", 0, 0, "no L1 entry for the window page");
		return;
	}
	original = *entry;
	if (!step_rc("mmu_update", set_l1_entry(machine_address, (virt_to_mfn(scratch) << XEN_PAGE_SHIFT) |
								      PTE_KERNEL_RW)))
		return;
	if (step_rc("mmuext_invlpg", mmuext(MMUEXT_INVLPG_LOCAL, (uint64_t)window)))
		step("window_shows_scratch", read_window() == SCRATCH_MARK, 0, "the old frame is still seen");
	step_rc("mmu_update_restore", set_l1_entry(machine_address, original));
	if (step_rc("mmuext_tlb_flush", mmuext(MMUEXT_TLB_FLUSH_LOCAL, 0)))
		step("window_restored", read_window() == WINDOW_MARK, 0, "the scratch frame is still seen");
}

/* A page a PV kernel gives Xen as a descriptor or page table must have no writable
 * mapping: each is remapped read-only first (and writable again after). */
static long remap(const void *va, uint64_t flags)
{
	return HYPERVISOR_update_va_mapping(va, (virt_to_mfn(va) << XEN_PAGE_SHIFT) | flags, UVMF_INVLPG);
}

static void load_gdt(void)
{
	unsigned long frames[1];
	long rc, selector;

	if (!m2p_ok) {
		skip("set_gdt", "m2p");
		return;
	}
	gdt[GDT_OWN_SELECTOR >> 3] = GDT_FLAT_DATA_DPL3;
	rc = remap(gdt, PTE_KERNEL_RO);
	if (!rc) {
		frames[0] = virt_to_mfn(gdt);
		rc = HYPERVISOR_set_gdt(frames, GDT_ENTRIES);
	}
	if (!step_rc("set_gdt", rc))
		return;
	selector = probe_load_es(GDT_OWN_SELECTOR);
	step("gdt_selector", selector == GDT_OWN_SELECTOR, 0, "selector 0xb of the new GDT does not load");
	/* Xen's flat selectors live in the GDT entries it keeps for itself. */
	selector = probe_load_es(FLAT_KERNEL_DS);
	if (selector == FLAT_KERNEL_DS)
		__asm__ volatile("movw %w0, %%ds" : : "r"(FLAT_KERNEL_DS));
	step("flat_kernel_ds", selector == FLAT_KERNEL_DS, 0, "FLAT_KERNEL_DS does not load");
}

/* Run for a moment on a copy of the top-level table: pinned as an L4 (read-only
 * first), loaded with NEW_BASEPTR, then the original back and the copy unpinned. */
static void switch_base(void)
{
	struct mmuext_op ops[2];
	uint64_t copy_mfn, base_mfn;
	unsigned done = 0;
	long rc;

	if (!m2p_ok) {
		skip("new_baseptr", "m2p");
		return;
	}
	copy_mfn = virt_to_mfn(l4_copy);
	base_mfn = virt_to_mfn((const void *)si->pt_base);
	memcpy(l4_copy, (const void *)si->pt_base, PAGE_BYTES);
	rc = remap(l4_copy, PTE_KERNEL_RO);
	if (!rc) {
		ops[0] = (struct mmuext_op){ .cmd = MMUEXT_PIN_L4_TABLE, .arg1.mfn = copy_mfn };
		ops[1] = (struct mmuext_op){ .cmd = MMUEXT_NEW_BASEPTR, .arg1.mfn = copy_mfn };
		rc = HYPERVISOR_mmuext_op(ops, 2, &done, DOMID_SELF);
	}
	if (!step("new_baseptr", rc == 0 && done == 2, rc, "pin and switch to a copy of the L4"))
		return;
	ops[0] = (struct mmuext_op){ .cmd = MMUEXT_NEW_BASEPTR, .arg1.mfn = base_mfn };
	ops[1] = (struct mmuext_op){ .cmd = MMUEXT_UNPIN_TABLE, .arg1.mfn = copy_mfn };
	done = 0;
	rc = HYPERVISOR_mmuext_op(ops, 2, &done, DOMID_SELF);
	if (!rc && done == 2)
		rc = remap(l4_copy, PTE_KERNEL_RW);
	step("new_baseptr_back", rc == 0 && done == 2, rc, "back to pt_base, copy unpinned");
}

/* --- events and time --------------------------------------------------------------- */

static volatile unsigned upcalls, loop_events, timer_events;
static evtchn_port_t loop_port, timer_port;

/* Called from traps.S's event_callback (Xen masked events on the way in): takes
 * every pending, unmasked port, as the 2-level event ABI of xen.h describes. */
void pv_event(unsigned vector, uint64_t *frame, int has_error)
{
	xen_ulong_t words;

	(void)vector, (void)frame, (void)has_error;
	upcalls++;
	vcpu->evtchn_upcall_pending = 0;
	words = __atomic_exchange_n(&vcpu->evtchn_pending_sel, 0, __ATOMIC_SEQ_CST);
	while (words) {
		unsigned word = (unsigned)__builtin_ctzl(words);
		xen_ulong_t ports = shared->evtchn_pending[word] & ~shared->evtchn_mask[word];

		words &= words - 1;
		while (ports) {
			unsigned bit = (unsigned)__builtin_ctzl(ports);
			evtchn_port_t port = word * sizeof(xen_ulong_t) * 8 + bit;

			ports &= ports - 1;
			__atomic_fetch_and(&shared->evtchn_pending[word], ~((xen_ulong_t)1 << bit), __ATOMIC_SEQ_CST);
			if (port == loop_port)
				loop_events++;
			else if (port == timer_port)
				timer_events++;
		}
	}
}

static void unmask_port(evtchn_port_t port)
{
	unsigned bits = sizeof(xen_ulong_t) * 8;

	__atomic_fetch_and(&shared->evtchn_mask[port / bits], ~((xen_ulong_t)1 << (port % bits)),
			   __ATOMIC_SEQ_CST);
}

/* A hypercall made with events unmasked and one pending delivers it on the way
 * back (Mini-OS's and Linux's force_evtchn_callback use xen_version). */
static void enable_events(void)
{
	vcpu->evtchn_upcall_mask = 0;
	__asm__ volatile("" ::: "memory");
	if (vcpu->evtchn_upcall_pending)
		HYPERVISOR_xen_version(XENVER_version, 0);
}

/* A channel from this domain to itself: send on one end while events are masked
 * (pending, not delivered), then unmask: the callback takes it. */
static void loopback_event(void)
{
	struct evtchn_alloc_unbound alloc = { .dom = DOMID_SELF, .remote_dom = DOMID_SELF };
	struct evtchn_bind_interdomain bind = { .remote_dom = DOMID_SELF };
	struct evtchn_send send;
	long rc;

	if (!shared_info_in || !callbacks_in) {
		skip("event_channel", shared_info_in ? "set_callbacks" : "update_va_mapping");
		return;
	}
	rc = HYPERVISOR_event_channel_op(EVTCHNOP_alloc_unbound, &alloc);
	if (!rc) {
		loop_port = alloc.port;
		bind.remote_port = alloc.port;
		rc = HYPERVISOR_event_channel_op(EVTCHNOP_bind_interdomain, &bind);
	}
	if (!rc) {
		unmask_port(loop_port);
		unmask_port(bind.local_port);
		send.port = bind.local_port;
		rc = HYPERVISOR_event_channel_op(EVTCHNOP_send, &send);
	}
	if (!step_rc("event_channel", rc))
		return;
	report_dec("event_port", loop_port);
	if (!step("event_held_while_masked", loop_events == 0 && vcpu->evtchn_upcall_pending, 0,
		  loop_events ? "delivered while masked" : "evtchn_upcall_pending not set"))
		return;
	enable_events();
	vcpu->evtchn_upcall_mask = 1;
	step("event_callback", loop_events == 1, 0, "the callback did not take the event once");
}

/* Xen's system time now, in ns: the vcpu_time_info formula of xen.h, read again
 * while Xen is updating it (odd or changed version). */
static uint64_t system_time_ns(void)
{
	volatile struct vcpu_time_info *t = &vcpu->time;
	uint32_t version;
	uint64_t ns;

	do {
		version = t->version;
		__asm__ volatile("" ::: "memory");
		uint64_t delta = rdtsc() - t->tsc_timestamp;

		delta = t->tsc_shift >= 0 ? delta << t->tsc_shift : delta >> -t->tsc_shift;
		ns = t->system_time + (uint64_t)(((unsigned __int128)delta * t->tsc_to_system_mul) >> 32);
		__asm__ volatile("" ::: "memory");
	} while ((version & 1) || version != t->version);
	return ns;
}

/* The periodic tick stopped so that only set_timer_op's one-shot sends VIRQ_TIMER,
 * bound to a port; then SCHEDOP_block (which unmasks events, sched.h) until the
 * callback has taken it, and Xen's clock (vcpu_time_info) past the deadline. */
static void timer(void)
{
	struct evtchn_bind_virq bind = { .virq = VIRQ_TIMER, .vcpu = 0 };
	uint64_t deadline, woke;
	unsigned blocks = 0;
	long rc;

	if (!shared_info_in || !callbacks_in) {
		skip("timer", shared_info_in ? "set_callbacks" : "update_va_mapping");
		return;
	}
	/* The tick first: one that fired after the bind would be taken for the timer. */
	HYPERVISOR_vcpu_op(VCPUOP_stop_periodic_timer, 0, 0);
	rc = HYPERVISOR_event_channel_op(EVTCHNOP_bind_virq, &bind);
	if (!step_rc("bind_virq_timer", rc))
		return;
	timer_port = bind.port;
	unmask_port(timer_port);
	timer_events = 0;
	deadline = system_time_ns() + TIMER_WAIT_NS;
	if (!step_rc("set_timer_op", HYPERVISOR_set_timer_op(deadline)))
		return;
	while (!timer_events && blocks++ < TIMER_BLOCKS) {
		rc = HYPERVISOR_sched_op(SCHEDOP_block, 0);
		vcpu->evtchn_upcall_mask = 1;
	}
	woke = system_time_ns();
	report_dec("timer_blocks", blocks);
	if (!step("sched_block", timer_events > 0, rc, "no timer event"))
		return;
	if (woke < deadline)
		report_dec("timer_early_ns", deadline - woke);
	step("timer_deadline", woke >= deadline, 0, "woken before the deadline");
}

/* --- start and end ---------------------------------------------------------------- */

/* dom0 prints with console_io; a domU keeps its lines until it has found its console
 * ring (under PVH they go to port 0xe9 at once as well). */
static void choose_sinks(void)
{
	static char early[4096]; /* the lines before the console ring: fewer than 40 */

	out_set_backlog(early, sizeof(early));
	if (!is_domu())
		out_set_sinks(SINK_CONSOLE_IO);
	else if (shimgen_boot_mode == SHIMGEN_BOOT_MODE_XEN_PVH)
		out_set_sinks(SINK_BACKLOG | SINK_DEBUGCON);
	else
		out_set_sinks(SINK_BACKLOG);
}

static void finish(int ok)
{
	struct sched_shutdown shutdown = { .reason = ok ? SHUTDOWN_poweroff : SHUTDOWN_crash };

	report_str("result", ok ? "ok" : "fail");
	report_done();
	if (is_domu())
		xencons_drain(); /* xenconsoled takes the report's tail before the end */
	HYPERVISOR_sched_op(SCHEDOP_shutdown, &shutdown);
	/* Still here: Xen refused. A PV kernel cannot hlt; spin. */
	for (;;)
		__asm__ volatile("jmp ." ::: "memory");
}

void pv_main(uint64_t rdi, start_info_t *start_info)
{
	(void)rdi;
	si = start_info;
	choose_sinks();
	report_str("name", sample_name);
	report_dec("mode", shimgen_boot_mode == MODE_UNPATCHED ? SHIMGEN_BOOT_MODE_XEN_PV : shimgen_boot_mode);
	report_dec("nr_pages", si->nr_pages);
	install_traps();
	install_callbacks();
	switch_stacks();
	check_m2p();
	attach_console();
	report_sinks("console");
	map_shared_info();
	update_l1_entry();
	load_gdt();
	switch_base();
	provoke_traps();
	loopback_event();
	timer();
	if (is_domu() && rings.store)
		step("xenstore", domu_report(&rings), 0, "xenstore read of name failed");
	finish(all_ok);
}
