/*
 * PVH, 64-bit part of the hvm-start-info shim: Xen detection, then the kernel's
 * 64-bit entry with the loader's own hvm_start_info.
 *
 * Entry state assumed: falls through from 29_pvh_long_entry.S: long mode with the
 *   shim's tables and GDT, running at the shim's virtual address, rsp = the shim's
 *   stack, r15 = hvm_start_info (physical), r14 = PVH-without-Xen mode.
 * Clobbered: rax (left 0), rcx, r12, r14, flags; memory: the stack, the u32
 *   boot-mode variable.
 * Exit state guaranteed: jump to the kernel's 64-bit entry, long mode, CPL 0,
 *   paging on with the shim's tables (low 4 GiB identity mapped, every segment and
 *   the shim at their p_vaddr), rsp = top of the shim's stack (16-byte aligned),
 *   rdi = mode (Xen PVH or PVH without Xen), rsi = rbx = rdx = physical address of
 *   the loader's hvm_start_info, untouched (version 0 or 1, as the loader made it),
 *   boot-mode variable = rdi. No hypercall page is set up: a kernel with this
 *   entry does that itself under PVH.
 */
	.code64
	call	detect_xen
	movabs	${BOOT_MODE_VIRT}, %rax
	mov	%r14d, (%rax)
	mov	%r14d, %edi
	mov	%r15, %rsi
	mov	%r15, %rbx
	mov	%r15, %rdx
	xor	%eax, %eax
	jmp	*kernel_entry_ptr(%rip)
