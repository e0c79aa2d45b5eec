/*
 * Hypercall page set-up for the PVH path of the start-info shim (the kernel expects
 * a filled page, as Xen gives a PV guest).
 *
 * Entry state assumed: long mode, CPL 0, Xen found (r12 = its base leaf).
 * Clobbered: eax, ebx, ecx, edx, flags; with the PV ABI layer (PV_ABI 1, patch
 *   --pv-abi) also what pv_abi_install and pv_traps_install clobber (34_pv_abi.S,
 *   36_pv_traps.S), and the GDT, IDT and segment registers the latter loads.
 * Exit state guaranteed: Xen has filled the page at HCALL_PAGE_PHYS with stubs;
 *   with the PV ABI layer, the slots it takes over lead into the shim instead, and
 *   the CPU runs on the PV GDT and IDT (36_pv_traps.S).
 *   Without it (PV_ABI 0) the .if block assembles to nothing: the shim's bytes are
 *   those of a shim that never had it.
 */
	.code64
/* leaf base+2 names the MSR; writing a page's physical address fills it */
install_hypercall_page:
	lea	{XEN_CPUID_HCALL_LEAF}(%r12), %eax
	cpuid
	mov	%ebx, %ecx
	movabs	${HCALL_PAGE_PHYS}, %rax
	mov	%rax, %rdx
	shr	$0x20, %rdx
	wrmsr
.if {PV_ABI}
	call	pv_traps_save
	call	pv_abi_install
	jmp	pv_traps_install		/* it returns to our caller */
.endif
	ret
