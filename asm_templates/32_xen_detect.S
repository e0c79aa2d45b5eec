/*
 * Xen detection through its cpuid leaves, shared by the 64-bit PVH paths.
 *
 * Xen's public cpuid.h puts its leaves at the first otherwise unused 0x100-aligned
 * base from 0x40000000 (0x40000100 when Viridian takes the first). A base in use
 * answers with its highest leaf in eax, inside base..base+0xff; an unused one does
 * not. So the search visits the bases in order and stops at the first unused one:
 * two cpuids on a machine without a hypervisor or under KVM, where searching every
 * base up to XEN_CPUID_END would take 256.
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
	mov	%r12d, %eax
	cpuid
	sub	%r12d, %eax			/* eax = leaves above the base */
	cmp	${XEN_SIG_EBX}, %ebx
	jne	detect_xen_next
	cmp	${XEN_SIG_ECX}, %ecx
	jne	detect_xen_next
	cmp	${XEN_SIG_EDX}, %edx
	jne	detect_xen_next
	cmp	${XEN_CPUID_HCALL_LEAF}, %eax
	jb	detect_xen_next
	mov	${MODE_XEN_PVH}, %r14d
	ret
detect_xen_next:
	cmp	${XEN_CPUID_STRIDE}, %eax	/* unsigned: also below the base */
	jae	detect_xen_done			/* an unused base: Xen is not further on */
	add	${XEN_CPUID_STRIDE}, %r12d
	cmp	${XEN_CPUID_END}, %r12d
	jb	detect_xen_loop
detect_xen_done:
	ret
