/*
 * PV entry of pv-hello and pv-highhalf (64-bit).
 *
 * It relies on the PV64 entry state only (xen/include/public/xen.h, start-of-day
 * memory layout): long mode, rsi = virtual address of start_info, rsp = a usable
 * stack, DF clear. A shim entering it in
 * PVH mode adds rdi = boot mode (rdx = the original boot struct) and guarantees
 * nothing else, so this code uses no privileged instruction and switches to its
 * own stack at once.
 */
#include "xen_notes.h"

	.section .text.entry, "ax"
	.globl _start
	.type _start, @function
_start:
	movq	%rdi, entry_rdi(%rip)
	movq	%rsi, entry_rsi(%rip)
	movq	%rdx, entry_rdx(%rip)
	movq	%rsp, entry_rsp(%rip)
	leaq	stack_top(%rip), %rsp
	/* rdi (mode) and rsi (start_info) pass straight through to pv_main. */
	call	pv_main
1:	jmp	1b
	.size _start, . - _start

	/* Xen fills this page with hypercall stubs (HYPERCALL_PAGE note); int3 until then. */
	.section .text.hypercall_page, "ax"
	.balign 4096
	.globl hypercall_page
hypercall_page:
	.fill 4096, 1, 0xcc

	.section .bss.stack, "aw", @nobits
	.balign 16
stack_bottom:
	.skip 16384
stack_top:

XEN_ELFNOTE(XEN_ELFNOTE_GUEST_OS, .asciz "shimgen-sample")
XEN_ELFNOTE(XEN_ELFNOTE_GUEST_VERSION, .asciz "1")
XEN_ELFNOTE(XEN_ELFNOTE_XEN_VERSION, .asciz "xen-3.0")
XEN_ELFNOTE(XEN_ELFNOTE_LOADER, .asciz "generic")
XEN_ELFNOTE(XEN_ELFNOTE_ENTRY, .quad _start)
XEN_ELFNOTE(XEN_ELFNOTE_HYPERCALL_PAGE, .quad hypercall_page)
/* Defined by the linker script: 0 for pv-hello, the high half for pv-highhalf. */
XEN_ELFNOTE(XEN_ELFNOTE_VIRT_BASE, .quad __virt_base)
/* p_paddr = p_vaddr - VIRT_BASE, so Xen's kstart = p_paddr + VIRT_BASE - 0 = p_vaddr. */
XEN_ELFNOTE(XEN_ELFNOTE_PADDR_OFFSET, .quad 0)
