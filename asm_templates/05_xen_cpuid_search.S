/*
 * Xen's cpuid leaf search as two assembler macros, shared by the 64-bit PVH paths
 * (32_xen_detect.S) and the 32-bit passthrough entry (16_passthrough_entry.S). They
 * emit nothing here, only where they are used; the labels stay in the users' text.
 *
 * Xen's public arch-x86/cpuid.h puts its leaves at the first otherwise unused
 * 0x100-aligned base from 0x40000000 (0x40000100 when Viridian takes the first). A
 * base in use answers with its highest leaf in eax, inside base..base+0xff; an
 * unused one does not. So the search visits the bases in order and stops at the
 * first unused one: two cpuids on a machine without a hypervisor or under KVM,
 * where searching every base up to XEN_CPUID_END would take 256.
 *
 * xen_cpuid_match base, next: is Xen at the base leaf in the 32-bit register base?
 *   Entry state assumed: base = the leaf to look at.
 *   Clobbered: eax, ebx, ecx, edx (cpuid), flags.
 *   Exit state guaranteed: eax = the leaves the base answers above itself; falls
 *   through when the signature "XenVMMXenVMM" is found with the hypercall leaf
 *   present, jumps to next otherwise.
 * xen_cpuid_step base, loop, done: after a miss, on to the next base.
 *   Entry state assumed: eax as xen_cpuid_match left it.
 *   Clobbered: base, flags.
 *   Exit state guaranteed: jumps to done when the base was unused (Xen is not
 *   further on) or the last base is passed, to loop with base = the next base
 *   otherwise.
 */
	.macro	xen_cpuid_match base, next
	mov	\base, %eax
	cpuid
	sub	\base, %eax			/* eax = leaves above the base */
	cmp	${XEN_SIG_EBX}, %ebx
	jne	\next
	cmp	${XEN_SIG_ECX}, %ecx
	jne	\next
	cmp	${XEN_SIG_EDX}, %edx
	jne	\next
	cmp	${XEN_CPUID_HCALL_LEAF}, %eax
	jb	\next
	.endm

	.macro	xen_cpuid_step base, loop, done
	cmp	${XEN_CPUID_STRIDE}, %eax	/* unsigned: also below the base */
	jae	\done				/* an unused base: Xen is not further on */
	add	${XEN_CPUID_STRIDE}, \base
	cmp	${XEN_CPUID_END}, \base
	jb	\loop
	.endm
