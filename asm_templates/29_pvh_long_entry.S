/*
 * PVH, first 64-bit instructions of the start-info and hvm-start-info shims: leave
 * the identity map, load data selectors and the shim's stack. It falls through into
 * the handoff's own 64-bit part (30_pvh_long.S or 31_hvm_pvh_long.S), which the
 * template set puts right after it.
 *
 * Entry state assumed: long mode with the shim's tables and GDT, CS = 64-bit code,
 *   running at the physical address of pvh_long_entry (identity mapped), ebx =
 *   hvm_start_info (physical).
 * Clobbered: rax, DS/ES/SS/FS/GS, rsp.
 * Exit state guaranteed (falls through): running at the shim's virtual address,
 *   DS/ES/SS = flat data, FS/GS = 0, rsp = top of the shim's stack (16-byte
 *   aligned), r15 = hvm_start_info (zero-extended ebx), r14 = PVH-without-Xen mode
 *   (the Xen search may change it), ebx unchanged.
 */
	.code64
pvh_long_entry:
	/* leave the identity map for the shim's own virtual address */
	movabs	$({SHIM_VIRT} + (pvh_virtual - shim_start)), %rax
	jmp	*%rax
pvh_virtual:
	mov	${SEL_DATA}, %eax
	mov	%eax, %ds
	mov	%eax, %es
	mov	%eax, %ss
	xor	%eax, %eax
	mov	%eax, %fs
	mov	%eax, %gs
	movabs	${STACK_TOP_VIRT}, %rsp
	mov	%ebx, %r15d
	mov	${MODE_PVH_NO_XEN}, %r14d
