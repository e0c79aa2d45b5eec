/*
 * PV entry of the start-info shim: the ENTRY note and e_entry point here.
 *
 * Entry state assumed (Xen PV64, FACTS 4): long mode, CPL 3, rsi = virtual address
 *   of start_info, rsp = top of Xen's boot stack, other GPRs 0, events masked, the
 *   hypercall page (HYPERCALL_PAGE note) filled by Xen.
 * Clobbered: rax (left 0 again), rdi, flags; memory: the u32 boot-mode variable.
 * Exit state guaranteed: jump to the kernel's original PV entry with rsi and rsp
 *   exactly as Xen set them, rdi = Xen PV mode, boot-mode variable = Xen PV mode.
 * Error path: start_info magic wrong -> message through console_io, then
 *   SCHEDOP_shutdown(crash), then spin; the kernel is never entered.
 */
	.code64
shim_start:
pv_entry:
	movabs	${SI_MAGIC_PREFIX}, %rax	/* first 8 bytes of the start_info magic */
	cmp	%rax, (%rsi)
	jne	pv_bad_magic
	movabs	${BOOT_MODE_VIRT}, %rax
	movl	${MODE_XEN_PV}, (%rax)
	mov	${MODE_XEN_PV}, %edi
	xor	%eax, %eax
	jmp	*kernel_entry_ptr(%rip)
