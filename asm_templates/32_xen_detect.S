/*
 * Xen detection through its cpuid leaves, shared by the 64-bit PVH paths: the
 * search of 05_xen_cpuid_search.S from the first base.
 *
 * Entry state assumed: long mode, CPL 0, a stack (called), r14 = the mode to keep
 *   when no Xen is found (PVH without Xen).
 * Clobbered: eax, ebx, ecx, edx (cpuid), r12, flags.
 * Exit state guaranteed: r14 = Xen PVH mode and r12 = Xen's base leaf when the
 *   signature "XenVMMXenVMM" is found with the hypercall leaf present; otherwise
 *   r14 unchanged.
 */
	.code64
detect_xen:
	mov	${XEN_CPUID_FIRST}, %r12d
detect_xen_loop:
	xen_cpuid_match %r12d, detect_xen_next
	mov	${MODE_XEN_PVH}, %r14d
	ret
detect_xen_next:
	xen_cpuid_step %r12d, detect_xen_loop, detect_xen_done
detect_xen_done:
	ret
