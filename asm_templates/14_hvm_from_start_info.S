/*
 * hvm_start_info (version 1) synthesis from Xen's start_info_t, for the PV path of
 * the hvm-start-info shim (called from pv_entry).
 *
 * Entry state assumed: long mode (Xen PV, CPL 3), a stack, r13 = start_info
 *   (virtual, as Xen passed it), r12 = the zeroed hvm_start_info page of the shim's
 *   reserved area (virtual).
 * Clobbered: rax, rcx, rdx, rsi, rdi, flags; memory: that page.
 * Exit state guaranteed: the page holds, each part at its BUILT_* offset:
 *   - struct hvm_start_info: magic, version 1, flags = start_info's SIF_* flags
 *     (the same bits), rsdp_paddr 0 (a PV guest has no ACPI tables of its own);
 *   - cmdline_paddr -> a copy of cmd_line: at most CMDLINE_MAX bytes, always
 *     NUL-terminated (Xen's copy may fill all of cmd_line without a NUL);
 *   - nr_modules 1, modlist_paddr -> one hvm_modlist_entry for start_info's module
 *     when mod_len is not 0 (paddr = mod_start << PAGE_SHIFT with
 *     SIF_MOD_START_PFN, else mod_start - VIRT_BASE), otherwise nr_modules 0;
 *   - memmap_entries 1, memmap_paddr -> one RAM entry [0, nr_pages << PAGE_SHIFT):
 *     a PV guest's pseudo-physical memory is exactly that range.
 *   Every address written is pseudo-physical (see 12_hvm_pv_entry.S).
 */
	.code64
hvm_from_start_info:
	movl	${HVM_START_MAGIC}, {HVM_MAGIC}(%r12)
	movl	${HVM_INFO_VERSION}, {HVM_VERSION}(%r12)
	mov	{SI_FLAGS}(%r13), %eax
	mov	%eax, {HVM_FLAGS}(%r12)
	lea	{SI_CMDLINE}(%r13), %rsi
	lea	{BUILT_CMDLINE}(%r12), %rdi
	mov	${CMDLINE_MAX}, %ecx
hvm_cmdline_loop:
	lodsb
	test	%al, %al
	jz	hvm_cmdline_end
	stosb
	dec	%ecx
	jnz	hvm_cmdline_loop
hvm_cmdline_end:
	movb	$0x0, (%rdi)
	movabs	$({HVM_INFO_PHYS} + {BUILT_CMDLINE}), %rax
	mov	%rax, {HVM_CMDLINE}(%r12)
	mov	{SI_MOD_LEN}(%r13), %rcx
	test	%rcx, %rcx
	jz	hvm_memmap
	mov	{SI_MOD_START}(%r13), %rax
	testl	${SIF_MOD_START_PFN}, {SI_FLAGS}(%r13)
	jz	hvm_module_virtual
	shl	${PAGE_SHIFT}, %rax		/* a frame number */
	jmp	hvm_module_entry
hvm_module_virtual:
	movabs	${PV_VIRT_BASE}, %rdx		/* a virtual address in Xen's initial mapping */
	sub	%rdx, %rax
hvm_module_entry:
	mov	%rax, {BUILT_MOD_PADDR}(%r12)
	mov	%rcx, {BUILT_MOD_SIZE}(%r12)
	movl	$0x1, {HVM_NR_MODULES}(%r12)	/* Xen's start_info has one module at most */
	movabs	$({HVM_INFO_PHYS} + {BUILT_MODLIST}), %rax
	mov	%rax, {HVM_MODLIST}(%r12)
hvm_memmap:
	mov	{SI_NR_PAGES}(%r13), %rax
	shl	${PAGE_SHIFT}, %rax
	mov	%rax, {BUILT_MEMMAP_SIZE}(%r12)
	movl	${E820_RAM}, {BUILT_MEMMAP_TYPE}(%r12)
	movabs	$({HVM_INFO_PHYS} + {BUILT_MEMMAP}), %rax
	mov	%rax, {HVM_MEMMAP}(%r12)
	movl	$0x1, {HVM_MEMMAP_ENTRIES}(%r12)	/* one range, from address 0 */
	ret
