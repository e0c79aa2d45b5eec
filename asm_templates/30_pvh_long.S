/*
 * PVH, 64-bit part of the start-info shim: Xen detection, hypercall page,
 * start_info_t synthesis, entry into the kernel's PV entry.
 *
 * Entry state assumed: long mode with the shim's tables and GDT, CS = 64-bit code,
 *   running at the physical address of pvh_long_entry, ebx = hvm_start_info
 *   (physical; low memory is identity mapped), the reserved area zeroed by the
 *   loader (it is p_memsz beyond p_filesz).
 * Clobbered: every GPR but rsi/rdi/rdx/rsp set below; DS/ES/SS/FS/GS; memory:
 *   the reserved area (start_info page, scratch page, stack), the hypercall page
 *   and the shared_info frame (under Xen), the u32 boot-mode variable.
 * Exit state guaranteed: jump to the kernel's original PV entry, long mode, CPL 0,
 *   rsp = top of the shim's stack (16-byte aligned), rsi = virtual address of the
 *   synthesized start_info, rdi = mode (Xen PVH or PVH without Xen), rdx = the
 *   original hvm_start_info address, boot-mode variable = rdi.
 * Register roles while running: r15 = hvm_start_info, r14 = mode, r13 =
 *   start_info, r12 = Xen's cpuid base leaf. Hypercalls may clobber their argument
 *   registers (debug Xen poisons them), so nothing lives in those across a call.
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
	movabs	${START_INFO_VIRT}, %r13
	call	detect_xen
	cmp	${MODE_XEN_PVH}, %r14d
	jne	pvh_fill
	call	install_hypercall_page
pvh_fill:
	call	fill_start_info
	movabs	${BOOT_MODE_VIRT}, %rax
	mov	%r14d, (%rax)
	mov	%r14d, %edi
	mov	%r13, %rsi
	mov	%r15, %rdx
	xor	%eax, %eax
	jmp	*kernel_entry_ptr(%rip)

/* r14 = Xen PVH mode and r12 = base leaf when Xen's cpuid signature is found */
detect_xen:
	mov	${XEN_CPUID_FIRST}, %r12d
detect_xen_loop:
	mov	%r12d, %eax
	cpuid
	cmp	${XEN_SIG_EBX}, %ebx
	jne	detect_xen_next
	cmp	${XEN_SIG_ECX}, %ecx
	jne	detect_xen_next
	cmp	${XEN_SIG_EDX}, %edx
	jne	detect_xen_next
	sub	%r12d, %eax			/* eax = leaves above the base */
	cmp	${XEN_CPUID_HCALL_LEAF}, %eax
	jb	detect_xen_next
	mov	${MODE_XEN_PVH}, %r14d
	ret
detect_xen_next:
	add	${XEN_CPUID_STRIDE}, %r12d
	cmp	${XEN_CPUID_END}, %r12d
	jb	detect_xen_loop
	ret

/* leaf base+2 names the MSR; writing a page's physical address fills it */
install_hypercall_page:
	lea	{XEN_CPUID_HCALL_LEAF}(%r12), %eax
	cpuid
	mov	%ebx, %ecx
	movabs	${HCALL_PAGE_PHYS}, %rax
	mov	%rax, %rdx
	shr	$0x20, %rdx
	wrmsr
	ret
