/*
 * pv-classic's trap, event and failsafe entries, and the probes that trap on
 * purpose.
 *
 * Xen enters a 64-bit PV kernel's handler on the kernel's own stack with rsp at
 *     rcx, r11, [error code], rip, cs, rflags, rsp, ss
 * (xen/arch/x86/x86_64/entry.S, create_bounce_frame): the interrupted rcx and r11
 * are the two top words, because Xen's return to the guest (sysret) uses the
 * registers themselves. The handler returns by jumping to the iret hypercall's
 * stub with the frame rip, cs, rflags, rsp, ss under one word of flags; the stub
 * pushes rcx, r11 and rax on top (struct iret_context, xen-x86_64.h; flags without
 * VGCF_in_syscall, so Xen restores rcx and r11 from there).
 */
#include <xen/xen.h>
#include "probe.h"

/* The iret stub is jumped to, never called: it does not return. */
#define IRET_STUB (hypercall_page + __HYPERVISOR_iret * 32)

	.text

/* One entry: save what C may clobber, pass (vector, the PV frame, has an error
 * code) to handler, restore, and return through the iret hypercall. */
	.macro pv_entry name, handler, vector, has_error
	.globl \name
	.type \name, @function
\name:
	pushq	%rax
	pushq	%rdi
	pushq	%rsi
	pushq	%rdx
	pushq	%r8
	pushq	%r9
	pushq	%r10
	pushq	%rbx
	movq	%rsp, %rbx
	movl	$\vector, %edi
	leaq	64(%rsp), %rsi		/* the frame as Xen built it, above the 8 saved */
	movl	$\has_error, %edx
	andq	$-16, %rsp		/* the C ABI's alignment at a call */
	call	\handler
	movq	%rbx, %rsp
	popq	%rbx
	popq	%r10
	popq	%r9
	popq	%r8
	popq	%rdx
	popq	%rsi
	popq	%rdi
	popq	%rax
	jmp	pv_iret_\has_error
	.size \name, . - \name
	.endm

	pv_entry trap_de, pv_trap, 0, 0
	pv_entry trap_bp, pv_trap, 3, 0
	pv_entry trap_ud, pv_trap, 6, 0
	pv_entry trap_gp, pv_trap, 13, 1
	pv_entry trap_pf, pv_trap, 14, 1
	/* An event upcall's frame has no error code; Xen masked events on entry
	   (evtchn_upcall_mask) and the frame's rflags.IF says how they were. */
	pv_entry event_callback, pv_event, 0, 0

	/* rcx and r11 back from the frame, the frame's top (and error code) dropped. */
	.macro pv_iret has_error
pv_iret_\has_error:
	movq	(%rsp), %rcx
	movq	8(%rsp), %r11
	addq	$(16 + 8 * \has_error), %rsp
	pushq	$0			/* iret flags */
	jmp	IRET_STUB
	.endm

	pv_iret 0
	pv_iret 1

/* Xen's failsafe callback: a segment or iret frame it could not load. Nothing to
   return to: report and shut down. */
	.globl failsafe_callback
	.type failsafe_callback, @function
failsafe_callback:
	movq	%rsp, %rdi
	andq	$-16, %rsp
	call	pv_failsafe
1:	jmp	1b
	.size failsafe_callback, . - failsafe_callback

/*
 * The probes: trap_fixup says where the handler resumes, trap_probe_rsp the rsp the
 * frame must show; rcx and r11 hold markers across the trapping instruction at
 * provoke_*_at. Returns 0 when both markers came back.
 */
	.macro probe_begin name
	.globl provoke_\name
	.type provoke_\name, @function
provoke_\name:
	leaq	provoke_\name\()_resume(%rip), %rax
	movq	%rax, trap_fixup(%rip)
	movabsq	$PROBE_RCX, %rcx
	movabsq	$PROBE_R11, %r11
	movq	%rsp, trap_probe_rsp(%rip)
	.endm

	.macro probe_end name
provoke_\name\()_resume:
	movq	$0, trap_fixup(%rip)
	xorl	%eax, %eax
	movabsq	$PROBE_RCX, %rdx
	cmpq	%rdx, %rcx
	setne	%al
	movabsq	$PROBE_R11, %rdx
	cmpq	%rdx, %r11
	setne	%dl
	orb	%dl, %al
	ret
	.size provoke_\name, . - provoke_\name
	.endm

	probe_begin bp
	.globl provoke_bp_at
provoke_bp_at:
	int3				/* a trap: resumes at the next instruction */
	probe_end bp

	probe_begin ud
	.globl provoke_ud_at
provoke_ud_at:
	ud2
	nop				/* not "xen": ud2 then "xen" is Xen's forced-emulation prefix */
	probe_end ud

	probe_begin de
	xorl	%r8d, %r8d
	xorl	%edx, %edx
	movl	$1, %eax
	.globl provoke_de_at
provoke_de_at:
	divq	%r8
	probe_end de

	probe_begin gp
	movabsq	$0x8000000000000000, %rax	/* not canonical: #GP, not #PF */
	.globl provoke_gp_at
provoke_gp_at:
	movq	(%rax), %rax
	probe_end gp

	probe_begin pf
	.globl provoke_pf_at
provoke_pf_at:
	movq	(%rdi), %rax		/* rdi: a page the kernel unmapped */
	probe_end pf

/* long probe_read(const uint64_t *address, uint64_t *value) */
	.globl probe_read
	.type probe_read, @function
probe_read:
	leaq	1f(%rip), %rax
	movq	%rax, trap_fixup(%rip)
	movq	%rsp, trap_probe_rsp(%rip)
	movq	(%rdi), %rax
	movq	%rax, (%rsi)
	movq	$0, trap_fixup(%rip)
	xorl	%eax, %eax
	ret
1:	movq	$-1, %rax
	ret
	.size probe_read, . - probe_read

/* long probe_load_es(uint16_t selector): the selector read back from %es */
	.globl probe_load_es
	.type probe_load_es, @function
probe_load_es:
	leaq	1f(%rip), %rax
	movq	%rax, trap_fixup(%rip)
	movq	%rsp, trap_probe_rsp(%rip)
	movw	%di, %es
	movq	$0, trap_fixup(%rip)
	xorl	%eax, %eax
	movw	%es, %ax
	ret
1:	movq	$-1, %rax
	ret
	.size probe_load_es, . - probe_load_es
