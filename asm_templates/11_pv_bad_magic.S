/*
 * PV error exit, shared by the PV entries of every handoff that has one.
 *
 * Entry state assumed: Xen PV64 (long mode, CPL 3), rsp = a usable stack, the
 *   hypercall page (the kernel's HYPERCALL_PAGE note, or the shim's own) filled by
 *   Xen. Reached by a jump when the start_info magic is wrong.
 * Clobbered: rax, rdx, rsi, rdi, flags, the stack (one struct sched_shutdown).
 * Exit state guaranteed: none; the kernel is never entered. The message goes out
 *   through console_io, then SCHEDOP_shutdown(crash), then a spin that never ends
 *   (a PV guest at CPL 3 has no hlt).
 */
	.code64
pv_bad_magic:
	mov	${CONSOLEIO_WRITE}, %edi
	mov	$(msg_bad_magic_end - msg_bad_magic), %esi
	lea	msg_bad_magic(%rip), %rdx
	movabs	${HCALL_CONSOLE_IO}, %rax
	call	*%rax
	push	${SHUTDOWN_CRASH}		/* struct sched_shutdown on the stack */
	mov	${SCHEDOP_SHUTDOWN}, %edi
	mov	%rsp, %rsi
	movabs	${HCALL_SCHED_OP}, %rax
	call	*%rax
pv_spin:
	jmp	pv_spin
