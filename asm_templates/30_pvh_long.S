/*
 * PVH, 64-bit part of the start-info shim: range check of hvm_start_info, Xen
 * detection, hypercall page, start_info_t synthesis, entry into the kernel's PV
 * entry.
 *
 * Entry state assumed: falls through from 29_pvh_long_entry.S: long mode with the
 *   shim's tables and GDT, running at the shim's virtual address, rsp = the shim's
 *   stack, r15 = hvm_start_info (physical; the first IDENTITY_MAP_END bytes of
 *   physical memory are identity mapped), r14 = PVH-without-Xen mode, the reserved
 *   area zeroed by the loader (it is p_memsz beyond p_filesz).
 * Clobbered: every GPR but rsi/rdi/rdx/rsp set below; memory: the reserved area
 *   (start_info page, scratch page, stack), the hypercall page and the shared_info
 *   frame (under Xen), the u32 boot-mode variable.
 * Exit state guaranteed: jump to the kernel's original PV entry, long mode, CPL 0,
 *   rsp = top of the shim's stack (16-byte aligned), rsi = virtual address of the
 *   synthesized start_info, rdi = mode (Xen PVH or PVH without Xen), rdx = the
 *   original hvm_start_info address, boot-mode variable = rdi. With the PV ABI
 *   layer (PV_ABI 1) under Xen, pv_memory (35_pv_memory.S) has given start_info
 *   PV's memory fields and switched CR3 to the kernel's own tables; without it the
 *   .if block assembles to nothing.
 * Error path: any part of what hvm_start_info points at (the struct itself, its
 *   module list entry, the module, its memory map) outside the identity map ->
 *   hvm_out_of_range (40_start_info.S): message on the debug port, halt. Reading
 *   there would fault with no IDT, a triple fault the user could not explain.
 * Register roles while running: r15 = hvm_start_info, r14 = mode, r13 =
 *   start_info, r12 = Xen's cpuid base leaf, rbp = IDENTITY_MAP_END. Hypercalls may
 *   clobber their argument registers (debug Xen poisons them), so nothing lives in
 *   those across a call.
 */
	.code64
	movabs	${START_INFO_VIRT}, %r13
	movabs	${IDENTITY_MAP_END}, %rbp
	mov	%r15, %rax
	mov	${HVM_INFO_SIZE}, %ecx		/* version 1's size: the shim reads that far */
	call	check_range
	call	detect_xen
	cmp	${MODE_XEN_PVH}, %r14d
	jne	pvh_fill
	call	install_hypercall_page
pvh_fill:
	call	fill_start_info
.if {PV_ABI}
	call	pv_memory			/* PV's view of memory, the kernel's tables */
.endif
	movabs	${BOOT_MODE_VIRT}, %rax
	mov	%r14d, (%rax)
	mov	%r14d, %edi
	mov	%r13, %rsi
	mov	%r15, %rdx
	xor	%eax, %eax
	jmp	*kernel_entry_ptr(%rip)
