/*
 * PV part of the hvm-start-info shim: builds a struct hvm_start_info from Xen's
 * start_info for the kernel's 64-bit entry.
 *
 * Entry state assumed: falls through from 10_pv_entry.S: Xen PV64 (long mode,
 *   CPL 3), start_info's magic checked, rsi = virtual address of start_info, rsp =
 *   top of Xen's boot stack, events masked, the hypercall page filled by Xen, the
 *   shim's reserved area zeroed (p_memsz beyond p_filesz).
 * Clobbered: rax (left 0), rcx, rdx, rdi, r12, r13, flags (DF cleared); memory: the
 *   hvm_start_info page of the reserved area, the u32 boot-mode variable.
 * Exit state guaranteed: jump to the kernel's 64-bit entry, still at CPL 3 on Xen's
 *   page tables and boot stack (rsp as Xen set it), rdi = Xen PV mode, rsi = rbx =
 *   pseudo-physical address of the synthesized hvm_start_info (version 1), rdx =
 *   virtual address of Xen's start_info, boot-mode variable = Xen PV mode. Every
 *   address in the struct is pseudo-physical (virtual - VIRT_BASE, which is p_paddr
 *   for every byte of the image): the kernel reads it at address + VIRT_BASE.
 */
	.code64
	cld					/* the struct is built with string instructions */
	mov	%rsi, %r13
	movabs	${HVM_INFO_VIRT}, %r12
	call	hvm_from_start_info
	movabs	${BOOT_MODE_VIRT}, %rax
	movl	${MODE_XEN_PV}, (%rax)
	mov	${MODE_XEN_PV}, %edi
	movabs	${HVM_INFO_PHYS}, %rsi
	mov	%rsi, %rbx
	mov	%r13, %rdx
	xor	%eax, %eax
	jmp	*kernel_entry_ptr(%rip)
