/*
 * PV entry of the start-info and hvm-start-info shims: the ENTRY note and e_entry
 * point here. It checks what every PV path relies on and falls through into the
 * handoff's own PV part (13_pv_start_info.S or 12_hvm_pv_entry.S), which the
 * template set puts right after it.
 *
 * Entry state assumed (Xen PV64: xen/include/public/xen.h, start-of-day memory
 *   layout; arch-x86/xen-x86_64.h): long mode, CPL 3, rsi = virtual address
 *   of start_info, rsp = top of Xen's boot stack, other GPRs 0, events masked, the
 *   hypercall page (HYPERCALL_PAGE note, or the shim's own) filled by Xen.
 * Clobbered: rax, flags.
 * Exit state guaranteed (falls through): still long mode, start_info's magic
 *   checked, rsi and rsp exactly as Xen set them.
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
