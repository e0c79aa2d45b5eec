/*
 * start_info_t synthesis for the PVH path (called from pvh_virtual).
 *
 * Entry state assumed: long mode, r15 = hvm_start_info, r14 = mode, r13 = a
 *   zeroed start_info_t in the reserved area, hypercall page installed when
 *   r14 is the Xen PVH mode.
 * Clobbered: rax, rcx, rdx, rsi, rdi, r8, r10, flags; memory: start_info and
 *   the scratch page.
 * Exit state guaranteed: start_info holds magic, flags, cmd_line (at most
 *   CMDLINE_MAX bytes, always NUL-terminated), mod_start/mod_len of module 0,
 *   nr_pages (highest RAM end of the memory map, in pages), pt_base/nr_pt_frames
 *   of the shim's tables and, under Xen only, store/console pfn+evtchn and
 *   shared_info. Left 0 (documented): mfn_list, first_p2m_pfn, nr_p2m_frames,
 *   nr_pages when hvm_start_info is version 0 and Xen is absent, any field
 *   whose hypercall failed. mod_start is the module's physical address, which
 *   the identity map makes a valid pointer (SIF_MOD_START_PFN is not set).
 */
fill_start_info:
	lea	si_magic(%rip), %rsi
	lea	{SI_MAGIC}(%r13), %rdi
	mov	$(si_magic_end - si_magic), %ecx
	rep movsb
	mov	{HVM_FLAGS}(%r15), %eax
	mov	%eax, {SI_FLAGS}(%r13)
	call	copy_cmdline
	call	first_module
	call	count_pages
	movabs	${PML4_VIRT}, %rax
	mov	%rax, {SI_PT_BASE}(%r13)
	movq	${NR_PT_FRAMES}, {SI_NR_PT_FRAMES}(%r13)
	cmp	${MODE_XEN_PVH}, %r14d
	jne	fill_start_info_done
	call	xen_params
	call	map_shared_info
fill_start_info_done:
	ret

copy_cmdline:
	mov	{HVM_CMDLINE}(%r15), %rsi
	test	%rsi, %rsi
	jz	copy_cmdline_done
	lea	{SI_CMDLINE}(%r13), %rdi
	mov	${CMDLINE_MAX}, %ecx
copy_cmdline_loop:
	lodsb
	test	%al, %al
	jz	copy_cmdline_end
	stosb
	dec	%ecx
	jnz	copy_cmdline_loop
copy_cmdline_end:
	movb	$0x0, (%rdi)
copy_cmdline_done:
	ret

first_module:
	cmpl	$0x0, {HVM_NR_MODULES}(%r15)
	je	first_module_done
	mov	{HVM_MODLIST}(%r15), %rax
	test	%rax, %rax
	jz	first_module_done
	mov	{MOD_PADDR}(%rax), %rcx
	mov	%rcx, {SI_MOD_START}(%r13)
	mov	{MOD_SIZE}(%rax), %rcx
	mov	%rcx, {SI_MOD_LEN}(%r13)
first_module_done:
	ret

/* memory map from hvm_start_info v1, else (v0) from XENMEM_memory_map under Xen */
count_pages:
	cmpl	$0x1, {HVM_VERSION}(%r15)
	jb	count_pages_v0
	mov	{HVM_MEMMAP}(%r15), %rsi
	test	%rsi, %rsi
	jz	count_pages_v0
	mov	{HVM_MEMMAP_ENTRIES}(%r15), %ecx
	mov	${MEMMAP_STRIDE}, %edx
	jmp	count_ram
count_pages_v0:
	cmp	${MODE_XEN_PVH}, %r14d
	jne	count_pages_done
	movabs	${SCRATCH_VIRT}, %rsi
	movl	${E820_CAPACITY}, {XMM_NR}(%rsi)
	movabs	${E820_BUF_VIRT}, %rax
	mov	%rax, {XMM_BUFFER}(%rsi)
	mov	${XENMEM_MEMORY_MAP}, %edi
	movabs	${HCALL_MEMORY_OP}, %rax
	call	*%rax
	test	%rax, %rax
	jnz	count_pages_done
	movabs	${SCRATCH_VIRT}, %rsi
	mov	{XMM_NR}(%rsi), %ecx
	movabs	${E820_BUF_VIRT}, %rsi
	mov	${E820_STRIDE}, %edx
/* rsi = table, ecx = entries, rdx = stride; nr_pages = highest RAM end >> 12 */
count_ram:
	xor	%r8d, %r8d
count_ram_loop:
	test	%ecx, %ecx
	jz	count_ram_done
	cmpl	${E820_RAM}, {ENTRY_TYPE}(%rsi)
	jne	count_ram_next
	mov	{ENTRY_ADDR}(%rsi), %rax
	add	{ENTRY_SIZE}(%rsi), %rax
	cmp	%r8, %rax
	jbe	count_ram_next
	mov	%rax, %r8
count_ram_next:
	add	%rdx, %rsi
	dec	%ecx
	jmp	count_ram_loop
count_ram_done:
	shr	${PAGE_SHIFT}, %r8
	mov	%r8, {SI_NR_PAGES}(%r13)
count_pages_done:
	ret

xen_params:
	mov	${PARAM_STORE_PFN}, %esi
	call	get_param
	mov	%rax, {SI_STORE_MFN}(%r13)
	mov	${PARAM_STORE_EVTCHN}, %esi
	call	get_param
	mov	%eax, {SI_STORE_EVTCHN}(%r13)
	mov	${PARAM_CONSOLE_PFN}, %esi
	call	get_param
	mov	%rax, {SI_CONSOLE_MFN}(%r13)
	mov	${PARAM_CONSOLE_EVTCHN}, %esi
	call	get_param
	mov	%eax, {SI_CONSOLE_EVTCHN}(%r13)
	ret

/* esi = HVM_PARAM index; rax = value, 0 when the hypercall fails */
get_param:
	movabs	${SCRATCH_VIRT}, %rdi
	movw	${DOMID_SELF}, {HP_DOMID}(%rdi)
	movw	$0x0, {HP_PAD}(%rdi)
	mov	%esi, {HP_INDEX}(%rdi)
	movq	$0x0, {HP_VALUE}(%rdi)
	mov	%rdi, %rsi
	mov	${HVMOP_GET_PARAM}, %edi
	movabs	${HCALL_HVM_OP}, %rax
	call	*%rax
	test	%rax, %rax
	jnz	get_param_failed
	movabs	${SCRATCH_VIRT}, %rdi
	mov	{HP_VALUE}(%rdi), %rax
	ret
get_param_failed:
	xor	%eax, %eax
	ret

/* XENMEM_add_to_physmap(shared_info) into the reserved frame */
map_shared_info:
	movabs	${SCRATCH_VIRT}, %rsi
	movw	${DOMID_SELF}, {AP_DOMID}(%rsi)
	movw	$0x0, {AP_SIZE}(%rsi)
	movl	${XENMAPSPACE_SHARED_INFO}, {AP_SPACE}(%rsi)
	movq	$0x0, {AP_IDX}(%rsi)
	movq	${SHARED_INFO_PFN}, {AP_GPFN}(%rsi)
	mov	${XENMEM_ADD_TO_PHYSMAP}, %edi
	movabs	${HCALL_MEMORY_OP}, %rax
	call	*%rax
	test	%rax, %rax
	jnz	map_shared_info_done
	movabs	${SHARED_INFO_PHYS}, %rax
	mov	%rax, {SI_SHARED_INFO}(%r13)
map_shared_info_done:
	ret
