/*
 * start_info_t synthesis for the PVH path (called from pvh_virtual), and the range
 * check of what hvm_start_info points at.
 *
 * Entry state assumed: long mode, r15 = hvm_start_info (range-checked), r14 = mode,
 *   r13 = a zeroed start_info_t in the reserved area, rbp = IDENTITY_MAP_END,
 *   hypercall page installed when r14 is the Xen PVH mode.
 * Clobbered: rax, rcx, rdx, rsi, rdi, r8, r10, flags; memory: start_info and
 *   the scratch page.
 * Exit state guaranteed (with the PV ABI layer, also vcpu_info[0]'s
 *   evtchn_upcall_mask set once shared_info is mapped, as Xen's PV domain builders
 *   start every vCPU): start_info holds magic, flags, cmd_line (at most
 *   CMDLINE_MAX bytes, always NUL-terminated, never read past the identity map),
 *   mod_start/mod_len of module 0, nr_pages (below), pt_base/nr_pt_frames of
 *   the shim's tables and, under Xen only, store/console pfn+evtchn and
 *   shared_info. Left 0 (documented): mfn_list, first_p2m_pfn, nr_p2m_frames,
 *   nr_pages when hvm_start_info is version 0 and Xen is absent, any field
 *   whose hypercall failed. mod_start is the module's physical address, which
 *   the identity map makes a valid pointer (SIF_MOD_START_PFN is not set).
 * Error path: a module list entry, module or memory map outside the identity map,
 *   or a command line starting outside it -> hvm_out_of_range: message, halt.
 * With the PV ABI layer (PV_ABI 1) count_ram also records the map it walks at
 *   pv_memmap (94_pv_memory_data.S) for pv_memory (35_pv_memory.S).
 * The hypercall argument structs live at fixed places in the scratch page, which
 *   the loader zeroed: fields that must be 0 (pads, sizes, idx) are never written.
 * nr_pages, as PV's start_info means it (the pages the guest has), is the number
 *   of RAM pages in the memory map: for every E820 RAM entry [addr, addr + size),
 *   the whole 4 KiB frames inside it, (size - (-addr mod 4096)) >> 12, or 0 when
 *   the range ends before its first page boundary; summed over the first
 *   MEMMAP_MAX_ENTRIES entries of the hvm_start_info v1 map, or of
 *   XENMEM_memory_map's when the struct is version 0. Holes, reserved, ACPI and
 *   every other type count nothing (a 4608 MiB xl domU has 1179648 pages, not the
 *   1196032 its highest RAM address gives). Entries are summed as given: loaders
 *   write disjoint ones (overlapping RAM entries, which none writes, would count
 *   twice; the sum stays below 2^62). RAM above 4 GiB counts, though the shim's
 *   tables do not map it. Under Xen, nr_pages is then capped at the domain's
 *   current reservation (XENMEM_current_reservation): with xl's maxmem above
 *   memory (populate-on-demand) the map lists maxmem's RAM while only about
 *   `memory` is backed, and a PV kernel takes nr_pages as what it may use. Without
 *   populate-on-demand the reservation exceeds the map's RAM (it also holds the
 *   special pages and ACPI tables) and the cap changes nothing; with it, those
 *   few pages (16 for an xl domU) are counted too, as PV's nr_pages counts the
 *   start_info, xenstore and console pages.
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
	/* under populate-on-demand (xl maxmem above memory) the map lists maxmem's RAM
	   but only the current reservation is backed: nr_pages is the smaller */
	lea	({SI_TO_HVM_PARAM} + {HP_DOMID})(%r13), %rsi	/* DOMID_SELF, from xen_params */
	mov	${XENMEM_CURRENT_RESERVATION}, %edi
	call	*hcall_memory_op(%rip)
	cmp	%rax, {SI_NR_PAGES}(%r13)	/* an error (negative) is above any count */
	jbe	fill_start_info_done
	mov	%rax, {SI_NR_PAGES}(%r13)
fill_start_info_done:
	ret

/* halt unless [rax, rax + rcx) lies below rbp (the identity map's end); rcx = end */
check_range:
	add	%rax, %rcx
	jc	hvm_out_of_range
	cmp	%rbp, %rcx
	ja	hvm_out_of_range
	ret
hvm_out_of_range:
	lea	msg_out_of_range(%rip), %rsi
	jmp	report_and_halt

/* at most CMDLINE_MAX bytes, and none at or past the identity map's end */
copy_cmdline:
	mov	{HVM_CMDLINE}(%r15), %rsi
	test	%rsi, %rsi
	jz	copy_cmdline_done
	mov	%rbp, %rcx
	sub	%rsi, %rcx			/* bytes mapped from the command line on */
	jbe	hvm_out_of_range
	cmp	${CMDLINE_MAX}, %rcx
	jbe	copy_cmdline_bounded
	mov	${CMDLINE_MAX}, %ecx
copy_cmdline_bounded:
	lea	{SI_CMDLINE}(%r13), %rdi
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
	mov	%rax, %rdx
	mov	${MOD_ENTRY_SIZE}, %ecx
	call	check_range			/* the entry the shim reads */
	mov	{MOD_PADDR}(%rdx), %rax
	mov	{MOD_SIZE}(%rdx), %rcx
	mov	%rax, {SI_MOD_START}(%r13)
	mov	%rcx, {SI_MOD_LEN}(%r13)
	call	check_range			/* the module the kernel will read */
first_module_done:
	ret

/* memory map from hvm_start_info v1, else (v0) from XENMEM_memory_map under Xen */
count_pages:
	cmpl	$0x1, {HVM_VERSION}(%r15)
	jb	count_pages_v0
	mov	{HVM_MEMMAP}(%r15), %rsi
	test	%rsi, %rsi
	jz	count_pages_v0
	mov	{HVM_MEMMAP_ENTRIES}(%r15), %edi
	cmp	${MEMMAP_MAX_ENTRIES}, %edi
	jbe	count_pages_bounded
	mov	${MEMMAP_MAX_ENTRIES}, %edi
count_pages_bounded:
	mov	%rsi, %rax
	imul	${MEMMAP_STRIDE}, %edi, %ecx
	call	check_range
	mov	%edi, %ecx
	mov	${MEMMAP_STRIDE}, %edx
	jmp	count_ram
count_pages_v0:
	cmp	${MODE_XEN_PVH}, %r14d
	jne	count_pages_done
	lea	{SI_TO_MEMORY_MAP}(%r13), %rsi
	movl	${E820_CAPACITY}, {XMM_NR}(%rsi)
	lea	{SI_TO_E820_BUF}(%r13), %rax
	mov	%rax, {XMM_BUFFER}(%rsi)
	mov	${XENMEM_MEMORY_MAP}, %edi
	call	*hcall_memory_op(%rip)
	test	%rax, %rax
	jnz	count_pages_done
	mov	{SI_TO_MEMORY_MAP_NR}(%r13), %ecx
	lea	{SI_TO_E820_BUF}(%r13), %rsi
	mov	${E820_STRIDE}, %edx
/* rsi = table, ecx = entries, rdx = stride; nr_pages = whole pages of RAM entries */
count_ram:
.if {PV_ABI}
	mov	%rsi, pv_memmap(%rip)		/* for pv_memory (35_pv_memory.S) */
	mov	%ecx, pv_memmap_nr(%rip)
	mov	%rdx, pv_memmap_stride(%rip)
.endif
	xor	%r8d, %r8d
count_ram_loop:
	test	%ecx, %ecx
	jz	count_ram_done
	cmpl	${E820_RAM}, {ENTRY_TYPE}(%rsi)
	jne	count_ram_next
	mov	{ENTRY_ADDR}(%rsi), %rax
	neg	%eax
	and	$({PAGE_SIZE} - 0x1), %eax	/* bytes before the first page boundary */
	mov	{ENTRY_SIZE}(%rsi), %r10
	sub	%rax, %r10			/* bytes from that boundary on */
	jb	count_ram_next			/* the range ends before it */
	shr	${PAGE_SHIFT}, %r10		/* whole pages */
	add	%r10, %r8
count_ram_next:
	add	%rdx, %rsi
	dec	%ecx
	jmp	count_ram_loop
count_ram_done:
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
	lea	{SI_TO_HVM_PARAM}(%r13), %rdi
	movw	${DOMID_SELF}, {HP_DOMID}(%rdi)
	mov	%esi, {HP_INDEX}(%rdi)
	mov	%rdi, %rsi
	mov	${HVMOP_GET_PARAM}, %edi
	call	*hcall_hvm_op(%rip)
	test	%rax, %rax
	jnz	get_param_failed
	mov	{SI_TO_HVM_PARAM_VALUE}(%r13), %rax
	ret
get_param_failed:
	xor	%eax, %eax
	ret

/* XENMEM_add_to_physmap(shared_info) into the reserved frame; space stays 0 as the
   loader zeroed it, which is XENMAPSPACE_shared_info (assemble.py checks) */
map_shared_info:
	lea	{SI_TO_ADD_TO_PHYSMAP}(%r13), %rsi
	movw	${DOMID_SELF}, {AP_DOMID}(%rsi)
	movq	${SHARED_INFO_PFN}, {AP_GPFN}(%rsi)
	mov	${XENMEM_ADD_TO_PHYSMAP}, %edi
	call	*hcall_memory_op(%rip)
	test	%rax, %rax
	jnz	map_shared_info_done
	movabs	${SHARED_INFO_PHYS}, %rax
	mov	%rax, {SI_SHARED_INFO}(%r13)
.if {PV_ABI}
	movb	$0x1, {VI_UPCALL_MASK}(%rax)	/* events masked, as a PV vCPU starts */
.endif
map_shared_info_done:
	ret

