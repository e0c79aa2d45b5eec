/*
 * Xen detection through its cpuid leaves (FACTS 4), shared by the 64-bit PVH paths.
 *
 * Entry state assumed: long mode, CPL 0, a stack (called), r14 = the mode to keep
 *   when no Xen is found (PVH without Xen).
 * Clobbered: eax, ebx, ecx, edx (cpuid), r12, flags.
 * Exit state guaranteed: r14 = Xen PVH mode and r12 = Xen's base leaf when the
 *   signature "XenVMMXenVMM" is found at 0x40000000 + 0x100 * i with the hypercall
 *   leaf present; otherwise r14 unchanged. The search ends at XEN_CPUID_END.
 */
	.code64
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
