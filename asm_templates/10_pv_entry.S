/*
 * PV entry of the start-info shim: the ENTRY note and e_entry point here.
 *
 * Entry state assumed (Xen PV64, FACTS 4): long mode, CPL 3, rsi = virtual address
 *   of start_info, rsp = top of Xen's boot stack, other GPRs 0, events masked, the
 *   hypercall page (HYPERCALL_PAGE note) filled by Xen.
 * Clobbered: rax (left 0 again), rdi, flags; memory: the u32 boot-mode variable.
 * Exit state guaranteed: jump to the kernel's original PV entry with rsi and rsp
 *   exactly as Xen set them, rdi = Xen PV mode, boot-mode variable = Xen PV mode.
 * Error paths (the kernel is never entered):
 *   - reached in 32-bit mode (a loader that took e_entry for a 32-bit entry): the
 *     mode guard below branches to pv_in_32bit_mode (22_wrong_mode.S);
 *   - start_info magic wrong: message through console_io, SCHEDOP_shutdown(crash),
 *     then spin (11_pv_bad_magic.S).
 */
	.code64
shim_start:
pv_entry:
	/* mode guard, the bytes 80_single_entry.S explains: in 64-bit mode rax = 0 and
	   the branch falls through; in 32-bit mode 0x48 is dec %eax and it is taken */
	xor	%eax, %eax
	test	%rax, %rax
	jnz	pv_in_32bit_mode
pv_checked:
	movabs	${SI_MAGIC_PREFIX}, %rax	/* first 8 bytes of the start_info magic */
	cmp	%rax, (%rsi)
	jne	pv_bad_magic
	movabs	${BOOT_MODE_VIRT}, %rax
	movl	${MODE_XEN_PV}, (%rax)
	mov	${MODE_XEN_PV}, %edi
	xor	%eax, %eax
	jmp	*kernel_entry_ptr(%rip)
