/*
 * PVH entry of the start-info and hvm-start-info shims: the PHYS32_ENTRY note points
 * here (physical), or the single polyglot entry jumps here in 32-bit mode.
 *
 * Entry state assumed (PVH: Xen's docs/misc/pvh.pandoc and
 *   xen/include/public/arch-x86/hvm/start_info.h): 32-bit flat protected mode,
 *   paging off, CR4 0, ebx = physical address of struct hvm_start_info, no stack, other
 *   registers and selectors unspecified. The shim segment is loaded at its p_paddr
 *   with its page tables, GDT and reserved area in place.
 * Clobbered: eax, ecx, edx, esi, flags, GDTR, CR0, CR3, CR4, EFER.
 * Exit state guaranteed: 64-bit long mode (CS = the shim's 64-bit code selector),
 *   paging on with the shim's prebuilt tables, executing pvh_long_entry at its
 *   physical address (identity mapped), ebx unchanged; SSE usable as Xen makes it
 *   for every PV guest (CR4.OSFXSR and OSXMMEXCPT set, CR0.MP set, CR0.EM and TS
 *   clear): gcc-built PV kernels run SSE instructions (ldmxcsr, movaps) early.
 * Error paths (message on the debug port, then halt; the kernel is never entered):
 *   reached in 64-bit mode -> pvh_in_long_mode (22_wrong_mode.S); hvm_start_info
 *   magic wrong -> pvh_bad_magic (21_pvh_bad_magic.S).
 * Mode switch, step by step:
 *   1. check the hvm_start_info magic;
 *   2. load the shim's own GDT (flat 64-bit code, flat data);
 *   3. CR4.PAE = 1, with OSFXSR and OSXMMEXCPT (SSE on);
 *   4. CR3 = physical address of the shim's PML4;
 *   5. EFER.LME = 1 (rdmsr/wrmsr);
 *   6. CR0.PG = 1 (with PE, and MP; EM and TS cleared): long mode becomes active,
 *      still 32-bit code;
 *   7. far jump to the 64-bit code selector (encoded as bytes: Keystone mangles ljmp).
 */
	.code32
pvh_entry:
	/* mode guard (80_single_entry.S explains the bytes): taken in 64-bit mode only,
	   where the 0x48 below is REX.W and makes the test one of rax, which is 0 */
	xor	%eax, %eax
	.byte	{OPCODE_REX_W}			/* 32-bit: dec %eax, so eax != 0 */
	test	%eax, %eax
	jz	pvh_in_long_mode
pvh_checked:
	cli
	cld
	cmpl	${HVM_START_MAGIC}, (%ebx)
	jne	pvh_bad_magic
	lgdt	({SHIM_PHYS} + (gdt_descriptor - shim_start))
	mov	%cr4, %eax
	or	${CR4_PAE_SSE}, %eax
	mov	%eax, %cr4
	mov	${PML4_PHYS}, %eax
	mov	%eax, %cr3
	mov	${MSR_EFER}, %ecx
	rdmsr
	or	${EFER_LME}, %eax
	wrmsr
	mov	%cr0, %eax
	or	${CR0_PG_PE_MP}, %eax
	and	${CR0_KEEP_FPU}, %eax		/* EM and TS clear: x87 and SSE run */
	mov	%eax, %cr0
	.byte	{OPCODE_JMP_FAR}
	.long	{SHIM_PHYS} + (pvh_long_entry - shim_start)
	.word	{SEL_CODE64}
