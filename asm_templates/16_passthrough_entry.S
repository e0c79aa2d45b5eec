/*
 * PVH entry of the pvh-passthrough shim: the PHYS32_ENTRY note points here. The
 * kernel keeps its own 32-bit PVH entry and gets exactly the state the loader made;
 * the shim only records the mode on the way.
 *
 * Entry state assumed (PVH: Xen's docs/misc/pvh.pandoc and
 *   xen/include/public/arch-x86/hvm/start_info.h): 32-bit flat protected mode,
 *   paging off, ebx = physical address of struct hvm_start_info, no stack, other
 *   registers and selectors unspecified (and passed on as they are). The shim
 *   segment is loaded at its p_paddr with its reserved area.
 * Clobbered: nothing the kernel can see: every GPR, esp and EFLAGS are restored
 *   before the jump (selectors, control registers and the GDT are never touched);
 *   memory: the reserved save word and stack, the u32 boot-mode variable.
 * Exit state guaranteed: jump to the kernel's own PVH entry (its original
 *   PHYS32_ENTRY), every register and flag as the loader set them; boot-mode
 *   variable (written at its physical address) = Xen PVH mode or PVH without Xen.
 * Error path: hvm_start_info magic wrong -> pvh_bad_magic (debug port, halt).
 *   No mode guard: it would clobber eax before anything is saved, and this entry
 *   passes every register on. A loader entering it in long mode fails as it would
 *   fail entering the kernel's own 32-bit entry.
 * Step by step: save esp in the reserved area, switch to the shim's stack, pushf and
 *   pusha, cld, check the magic, search Xen's cpuid leaves with the macros of
 *   05_xen_cpuid_search.S (stopping at the first unused base), write the mode, popa
 *   and popf, reload esp, jump through the kernel entry pointer (an indirect jump
 *   changes no register and no flag).
 */
	.code32
shim_start:
pvh_entry:
	mov	%esp, ({SAVED_ESP_PHYS})
	mov	${STACK_TOP_PHYS}, %esp
	pushf
	pusha
	cld					/* the error path's lodsb; popf restores DF */
	cmpl	${HVM_START_MAGIC}, (%ebx)
	jne	pvh_bad_magic
	mov	${MODE_PVH_NO_XEN}, %edi
	mov	${XEN_CPUID_FIRST}, %esi
passthrough_xen_loop:
	xen_cpuid_match %esi, passthrough_xen_next
	mov	${MODE_XEN_PVH}, %edi
	jmp	passthrough_record
passthrough_xen_next:
	xen_cpuid_step %esi, passthrough_xen_loop, passthrough_record
passthrough_record:
	mov	%edi, ({BOOT_MODE_PHYS})
	popa
	popf
	mov	({SAVED_ESP_PHYS}), %esp
	jmp	*({SHIM_PHYS} + (kernel_entry_ptr - shim_start))
