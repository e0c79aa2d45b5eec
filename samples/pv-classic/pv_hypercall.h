/*
 * Hypercalls the way PV kernels make them: `call hypercall_page + N * 32` with N
 * known when the kernel is built (Xen's public xen.h: one 32-byte stub per
 * hypercall). Such call sites are what shimgen's scan reads to learn which
 * hypercalls a kernel makes (the samples' lib/xen_hcall.h calls through a register,
 * which no scan sees). 64-bit arguments go in rdi, rsi, rdx, r10, r8; Xen's stub
 * keeps rcx and r11, and may change the argument registers
 * (xen/include/public/arch-x86/xen-x86_64.h).
 */
#ifndef PV_HYPERCALL_H
#define PV_HYPERCALL_H

#include "xen_hcall.h"

/* clang-format off */
#define PV_HYPERCALL4(nr, a1, a2, a3, a4) ({					\
	unsigned long v1_ = (unsigned long)(a1), v2_ = (unsigned long)(a2);	\
	unsigned long v3_ = (unsigned long)(a3), v4_ = (unsigned long)(a4);	\
	register unsigned long rdi_ __asm__("rdi") = v1_;			\
	register unsigned long rsi_ __asm__("rsi") = v2_;			\
	register unsigned long rdx_ __asm__("rdx") = v3_;			\
	register unsigned long r10_ __asm__("r10") = v4_;			\
	long ret_;								\
	__asm__ volatile("call hypercall_page + %c[offset]"			\
			 : "=a"(ret_), "+r"(rdi_), "+r"(rsi_), "+r"(rdx_), "+r"(r10_) \
			 : [offset] "i"((nr) * 32)				\
			 : "rcx", "r8", "r11", "memory");			\
	ret_;									\
})
/* clang-format on */

#define HYPERVISOR_set_trap_table(table) PV_HYPERCALL4(__HYPERVISOR_set_trap_table, table, 0, 0, 0)
#define HYPERVISOR_mmu_update(req, count, done, domid) \
	PV_HYPERCALL4(__HYPERVISOR_mmu_update, req, count, done, domid)
#define HYPERVISOR_set_gdt(frames, entries) PV_HYPERCALL4(__HYPERVISOR_set_gdt, frames, entries, 0, 0)
#define HYPERVISOR_stack_switch(ss, sp) PV_HYPERCALL4(__HYPERVISOR_stack_switch, ss, sp, 0, 0)
#define HYPERVISOR_set_callbacks(event, failsafe, syscall) \
	PV_HYPERCALL4(__HYPERVISOR_set_callbacks, event, failsafe, syscall, 0)
#define HYPERVISOR_set_timer_op(deadline) PV_HYPERCALL4(__HYPERVISOR_set_timer_op, deadline, 0, 0, 0)
#define HYPERVISOR_update_va_mapping(va, pte, flags) \
	PV_HYPERCALL4(__HYPERVISOR_update_va_mapping, va, pte, flags, 0)
#define HYPERVISOR_xen_version(cmd, arg) PV_HYPERCALL4(__HYPERVISOR_xen_version, cmd, arg, 0, 0)
#define HYPERVISOR_vcpu_op(cmd, vcpu, arg) PV_HYPERCALL4(__HYPERVISOR_vcpu_op, cmd, vcpu, arg, 0)
#define HYPERVISOR_mmuext_op(ops, count, done, domid) \
	PV_HYPERCALL4(__HYPERVISOR_mmuext_op, ops, count, done, domid)
#define HYPERVISOR_callback_op(cmd, arg) PV_HYPERCALL4(__HYPERVISOR_callback_op, cmd, arg, 0, 0)
#define HYPERVISOR_event_channel_op(cmd, arg) PV_HYPERCALL4(__HYPERVISOR_event_channel_op, cmd, arg, 0, 0)
#define HYPERVISOR_sched_op(cmd, arg) PV_HYPERCALL4(__HYPERVISOR_sched_op, cmd, arg, 0, 0)

#endif
