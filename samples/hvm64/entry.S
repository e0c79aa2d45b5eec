/*
 * 64-bit entry of hvm64-hello: its only entry, and it takes a struct hvm_start_info.
 *
 * Entry ABI (shimgen's hvm-start-info handoff; samples/README.md): long mode, rdi =
 * boot mode, rsi = rbx = physical address of the struct hvm_start_info, rdx = the
 * loader's own boot struct, rsp = a usable stack, DF clear. Under Xen PV it runs at
 * CPL 3 on Xen's page tables, under PVH at CPL 0 on the shim's; the code below does
 * nothing privileged and switches to its own stack at once.
 */
#include "xen_notes.h"

	.section .text.entry, "ax"
	.globl _start
	.type _start, @function
_start:
	movq	%rdi, entry_rdi(%rip)
	movq	%rsi, entry_rsi(%rip)
	movq	%rdx, entry_rdx(%rip)
	movq	%rbx, entry_rbx(%rip)
	movq	%rsp, entry_rsp(%rip)
	leaq	stack_top(%rip), %rsp
	/* rdi (mode) and rsi (hvm_start_info) pass straight through to hvm64_main. */
	call	hvm64_main
1:	jmp	1b
	.size _start, . - _start

	/*
	 * Filled by Xen under PV (the HYPERCALL_PAGE note), by this kernel through Xen's
	 * cpuid leaves and MSR under PVH; int3 until then.
	 */
	.section .text.hypercall_page, "ax"
	.balign 4096
	.globl hypercall_page
hypercall_page:
	.fill 4096, 1, 0xcc

	.section .bss.stack, "aw", @nobits
	.balign 16
	.skip 16384
stack_top:

/*
 * The one Xen note: where Xen fills hypercall stubs for a PV guest. Not enough to
 * boot as anything (no PV loader notes, no PHYS32_ENTRY); shimgen adds the rest.
 */
XEN_ELFNOTE(XEN_ELFNOTE_HYPERCALL_PAGE, .quad hypercall_page)
