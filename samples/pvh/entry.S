/*
 * PVH entry of pvh-hello (32-bit, stays in 32-bit protected mode).
 *
 * PVH state (Xen's docs/misc/pvh.pandoc): flat 32-bit protected mode, paging off,
 * ebx = physical address of hvm_start_info; no stack, eax and esp unspecified.
 */
#include "xen_notes.h"

	.code32
	.section .text.entry, "ax"
	.globl _start32
	.type _start32, @function
_start32:
	cld
	movl	%ebx, entry_ebx
	movl	%eax, entry_eax
	movl	$stack_top, %esp
	pushl	%ebx
	call	pvh_main
1:	cli
	hlt
	jmp	1b
	.size _start32, . - _start32

	/* Filled through the MSR from Xen's cpuid leaf base+2 when Xen is present. */
	.section .text.hypercall_page, "ax"
	.balign 4096
	.globl hypercall_page
hypercall_page:
	.fill 4096, 1, 0xcc

	.section .bss.stack, "aw", @nobits
	.balign 16
	.skip 16384
stack_top:

/* QEMU reads this desc as 4 or 8 bytes, linux-loader and Xen as a u32. */
XEN_ELFNOTE(XEN_ELFNOTE_PHYS32_ENTRY, .long _start32)
