/*
 * PV part of the start-info shim: Xen's start_info is what the kernel takes, so
 * only the mode is recorded on the way.
 *
 * Entry state assumed: falls through from 10_pv_entry.S: Xen PV64, start_info's
 *   magic checked, rsi = start_info, rsp = Xen's boot stack.
 * Clobbered: rax (left 0 again), rdi, flags; memory: the u32 boot-mode variable.
 * Exit state guaranteed: jump to the kernel's original PV entry with rsi and rsp
 *   exactly as Xen set them, rdi = Xen PV mode, boot-mode variable = Xen PV mode.
 */
	.code64
	movabs	${BOOT_MODE_VIRT}, %rax
	movl	${MODE_XEN_PV}, (%rax)
	mov	${MODE_XEN_PV}, %edi
	xor	%eax, %eax
	jmp	*kernel_entry_ptr(%rip)
