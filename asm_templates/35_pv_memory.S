/*
 * Memory as a PV kernel sees it, for the PVH path of the start-info shim under Xen
 * with the PV ABI layer (--pv-abi; docs/pv-abi.md, "Memory as PV sees it"). A PV
 * kernel turns frame numbers into addresses through start_info.mfn_list (pfn to
 * mfn) and the read-only M2P at MACH2PHYS_VIRT_START
 * (xen/include/public/arch-x86/xen-x86_64.h), walks and extends the tables at
 * start_info.pt_base, and takes every frame from pt_base + nr_pt_frames up to
 * nr_pages as free. Under PVH a frame the kernel calls an mfn is a gfn, so:
 *   - the pfn space: the map's first nr_pages frames of RAM (fill_start_info capped
 *     nr_pages at what the domain owns), pfn == gfn over [0, K), K the end of the
 *     memory map's RAM entry holding the shim segment (the kernel's own frames keep
 *     their addresses), then the RAM entries after K follow in map order (a PVH
 *     dom0's kernel sits in the RAM below 640 KiB, its memory from 1 MiB on; an xl
 *     domU's RAM above 4 GiB follows its RAM below the hole); the hole and the
 *     special pages get no pfn;
 *   - the frames the layout takes, [P, E), end the last RAM with pfns below 4 GiB
 *     (where the shim's identity map reaches: it writes them through it) and get
 *     the last pfns, [T, R), out of nr_pages: the M2P's tables, the direct map's
 *     page directories past 4 GiB, the M2P pages of every frame below the last
 *     RAM's end (G), mfn_list, and a pool of page tables mapping mfn_list and the
 *     512 KiB xen.h promises after the kernel's region (the first frames the kernel
 *     takes as free) in the kernel's region; frames without RAM are invalid in the
 *     M2P. Without RAM above 4 GiB they are the top of the pfn space's RAM, as the
 *     pfns before them;
 *   - the shim's direct map (PML4 slot 262, the first 4 GiB mapped at patch time)
 *     grows to D: past G and the grant frames, in whole GiB, 2 MiB pages, at most
 *     SHIM_DIRECTMAP_LIMIT (64 GiB: a map with RAM past it halts); the handlers
 *     take pv_directmap_frames (D's frame) for the end of what they reach, and
 *     the M2P has a page table per GiB of it;
 *   - PV_GRANT_FRAMES free gfns after that RAM kept for the grant table's frames
 *     (38_pv_grant.S maps them when the kernel asks), their M2P entries invalid;
 *   - the console and xenstore rings, outside the RAM, appear as the shim's pages
 *     pv_console and pv_store: their entries in the kernel's tables point at the
 *     rings' frames, mfn_list names those frames, the M2P names those pfns back;
 *   - the kernel's tables (built at patch time, 4 KiB pages over the kernel's
 *     region, the shim's direct map at PML4 slot 262) get the M2P at slot 256,
 *     read-only, and become CR3 with CR0.WP set, as Xen runs a PV guest.
 *
 * Entry state assumed: called from pvh_fill (30_pvh_long.S) after fill_start_info,
 *   long mode on the shim's tables (the first 4 GiB identity mapped), r13 =
 *   start_info (filled: nr_pages, mod_start physical, console and xenstore frames),
 *   r14 = mode; count_ram (40_start_info.S) left the memory map it walked at
 *   pv_memmap (none: 0 entries). DF clear.
 * Clobbered: rax, rbx, rcx, rdx, rsi, rdi, rbp, r8-r12, flags; memory: the frames
 *   taken, the kernel's PML4 slot 256, the direct map's PDPT entries past 4 GiB,
 *   the kernel's ring pages' entries, pv_memory_*, pv_directmap_frames,
 *   pv_grant_gfn.
 * Exit state guaranteed: without Xen nothing changes (the layer is not installed,
 *   the kernel runs on the shim's tables). Under Xen: CR3 = the kernel's tables,
 *   CR0.WP set (the PV GDT, IDT and TSS pv_traps_install loaded lie at virtual
 *   addresses both tables map: the shim segment, PML4 slot 262); the direct map
 *   covers [0, D) in both; start_info.mfn_list = mfn_list's address in the
 *   kernel's region (VIRT_BASE + pfn << 12; the direct map's where that cannot
 *   be), nr_pages = at most the first pfn taken, pt_base/nr_pt_frames = the
 *   kernel's tables, mod_start = the module's direct-map address (0 stays 0).
 * Error paths (line on the debug port, halt; never a fault): no RAM entry holds
 *   the shim segment (or no map at all) -> pv_msg_no_ram; the last RAM with pfns
 *   below 4 GiB cannot hold the frames taken after the shim segment (also after
 *   moving the cap below the module) -> pv_msg_no_room; RAM with pfns (or the
 *   grant frames after it) past SHIM_DIRECTMAP_LIMIT -> pv_msg_too_much.
 * Registers while laying out: rbp = the cap, r8 = the shim segment's end, r9 = K,
 *   rbx = pfns, r12 = G then P (the first frame taken: the M2P's PDPT), [r10, r11)
 *   = the last RAM with pfns below 4 GiB. Sizes and K are kept at pv_memory_* (94).
 */
	.code64
pv_memory:
	cmp	${MODE_XEN_PVH}, %r14d
	jne	pv_memory_done
	/* the cap: the address where the map's first nr_pages frames of RAM end (what
	   the domain owns: fill_start_info capped nr_pages at the current reservation),
	   whatever sizes the map claims */
	movq	$-0x1, %rbp
	mov	{SI_NR_PAGES}(%r13), %rbx
	lea	pv_memory_budget(%rip), %rdi
	call	pv_memory_walk
pv_memory_layout:
	movabs	${PV_SHIM_END}, %r8
	xor	%r9d, %r9d
	lea	pv_memory_holder(%rip), %rdi
	call	pv_memory_walk			/* K: r9 */
	test	%r9, %r9
	jz	pv_memory_no_ram
	mov	%r9, pv_memory_k(%rip)
	mov	%r9, %rbx
	shr	${PAGE_SHIFT}, %rbx		/* R: frames in [0, K) */
	mov	%r9, %r12			/* G: the end of the RAM with pfns */
	lea	pv_memory_count(%rip), %rdi
	call	pv_memory_walk			/* the RAM after K: R, G, the last [r10, r11) */
	lea	{PV_M2P_INDEX_MASK}(%rbx), %rax
	shr	${PV_M2P_SHIFT}, %rax
	mov	%rax, pv_memory_mfn_pages(%rip)	/* L: mfn_list, R entries */
	mov	%r12, %rcx
	shr	${PAGE_SHIFT}, %rcx
	add	${PV_M2P_INDEX_MASK}, %rcx
	shr	${PV_M2P_SHIFT}, %rcx
	mov	%rcx, pv_memory_m2p_pages(%rip)	/* M: the M2P of frames below G */
	cmp	${PV_LIMIT_M2P_PAGES}, %rcx
	ja	pv_memory_too_much		/* RAM past the most the direct map reaches */
	/* D, the direct map's end: 4 GiB, or past the M2P's run and the grant frames
	   after it, in whole page directories (1 GiB each) */
	mov	%rcx, %rdx
	shl	$({PV_M2P_SHIFT} + {PAGE_SHIFT}), %rdx
	add	$({PV_GRANT_SIZE} + {PV_DM_PD_SIZE} - 0x1), %rdx
	shr	${PV_DM_PD_SHIFT}, %rdx		/* N: page directories, as many M2P tables */
	cmp	${PV_LOW_PDS}, %rdx
	jae	pv_memory_limit
	mov	${PV_LOW_PDS}, %edx
pv_memory_limit:
	cmp	${PV_LIMIT_PDS}, %rdx
	ja	pv_memory_too_much
	mov	%rdx, pv_memory_l1_pages(%rip)
	mov	%rdx, %rsi
	shl	${PV_DM_PD_FRAME_SHIFT}, %rsi
	mov	%rsi, pv_directmap_frames(%rip)
	lea	({PV_FIXED_PAGES} - {PV_LOW_PDS})(%rax,%rcx), %rax
	add	%rdx, %rax			/* N M2P tables, */
	add	%rdx, %rax			/* N - 4 direct-map directories */
	mov	%rax, %rcx
	shr	${PT_INDEX_BITS}, %rcx
	add	${PV_POOL_SPARE}, %rcx
	add	%rcx, %rax			/* A: pages taken, with the pool of tables */
	mov	%rbx, pv_memory_pfns(%rip)
	sub	%rax, %rbx			/* T = R - A: the first pfn taken */
	jb	pv_memory_no_room
	mov	%rbx, pv_memory_first(%rip)
	shl	${PAGE_SHIFT}, %rax
	movabs	${PV_LOW_END}, %rcx
	cmp	%rcx, %r11
	jbe	pv_memory_low
	mov	%rcx, %r11			/* what the shim writes stays below 4 GiB */
pv_memory_low:
	mov	%r11, pv_memory_taken_end(%rip)	/* E */
	mov	%r11, %r12
	sub	%rax, %r12			/* P: they end the last RAM with pfns below 4 GiB */
	jb	pv_memory_no_room
	cmp	%r10, %r12
	jb	pv_memory_no_room		/* more than that RAM holds */
	cmp	%r8, %r12
	jb	pv_memory_no_room		/* it would overwrite the shim segment */
	mov	${PV_PADDING_END_PFN}, %eax	/* (a mov: its width is the same wherever) */
	cmp	%rax, %rbx
	jb	pv_memory_no_room		/* or take the padding after it */
	/* the module the kernel reads later stays out of [P, E): the cap moves below it */
	mov	{SI_MOD_LEN}(%r13), %rcx
	test	%rcx, %rcx
	jz	pv_memory_build
	mov	{SI_MOD_START}(%r13), %rax
	add	%rax, %rcx			/* check_range kept it below 4 GiB */
	cmp	%r12, %rcx
	jbe	pv_memory_build
	cmp	%r11, %rax
	jae	pv_memory_build
	and	$-{PAGE_SIZE}, %rax
	mov	%rax, %rbp
	jmp	pv_memory_layout

pv_memory_build:
	cmp	%rbx, {SI_NR_PAGES}(%r13)
	jbe	pv_memory_zero
	mov	%rbx, {SI_NR_PAGES}(%r13)
pv_memory_zero:
	/* nothing taken is assumed zeroed: every byte is written */
	mov	%r12, %rdi
	xor	%eax, %eax
	mov	${PV_ZEROED_QUADS}, %ecx
	rep stosq				/* the M2P's PDPT and page directory */
	not	%rax
	mov	${PV_SPARE_M2P_QUADS}, %ecx
	rep stosq				/* the spare M2P pages: invalid entries */
	not	%rax
	mov	pv_memory_l1_pages(%rip), %rcx
	shl	${PT_INDEX_BITS}, %rcx
	rep stosq				/* the M2P's page tables */
	movabs	${PV_DM_FIRST_ENTRY}, %rax
	mov	pv_memory_l1_pages(%rip), %rcx
	sub	${PV_LOW_PDS}, %rcx
	shl	${PT_INDEX_BITS}, %rcx
	jz	pv_memory_run
pv_memory_dm_pages:
	stosq					/* the direct map past 4 GiB: 2 MiB pages */
	add	${LARGE_PAGE_SIZE}, %rax
	dec	%rcx
	jnz	pv_memory_dm_pages
pv_memory_run:
	mov	%rdi, pv_memory_m2p(%rip)
	movq	$-0x1, %rax
	mov	pv_memory_m2p_pages(%rip), %rcx
	add	pv_memory_mfn_pages(%rip), %rcx
	shl	${PV_M2P_SHIFT}, %rcx
	rep stosq				/* M2P and mfn_list: invalid entries */
	lea	({PAGE_SIZE} + {PV_TABLE_FLAGS})(%r12), %rax
	mov	%rax, (%r12)			/* PDPT[0]: the page directory */
	lea	{PAGE_SIZE}(%r12), %rdi
	lea	({PV_L1_OFFSET} + {PV_TABLE_FLAGS})(%r12), %rax
	mov	pv_memory_l1_pages(%rip), %rcx
pv_memory_directory:
	stosq
	add	${PAGE_SIZE}, %rax
	dec	%rcx
	jnz	pv_memory_directory
	mov	%rax, %rdx			/* the first direct-map directory, with its flags */
	lea	{PV_L1_OFFSET}(%r12), %rdi
	mov	pv_memory_m2p(%rip), %rax
	or	${PV_READ_ONLY_FLAGS}, %rax
	mov	pv_memory_m2p_pages(%rip), %rcx
pv_memory_m2p_pages_loop:
	stosq					/* read-only, as Xen maps it */
	add	${PAGE_SIZE}, %rax
	dec	%rcx
	jnz	pv_memory_m2p_pages_loop
	/* the direct map's directories past 4 GiB go into its PDPT (the patch-time
	   table below 4 GiB both PML4s share at slot 262), after the first 4 GiB's */
	movabs	${KERNEL_PML4_PHYS}, %rsi
	mov	{PV_DIRECTMAP_PML4_OFFSET}(%rsi), %edi
	and	$-{PAGE_SIZE}, %edi
	add	$({PV_LOW_PDS} * {PV_ENTRY_SIZE}), %edi
	mov	pv_memory_l1_pages(%rip), %rcx
	sub	${PV_LOW_PDS}, %rcx
	jz	pv_memory_m2p_slot
	mov	%rdx, %rax
pv_memory_dm_directory:
	stosq
	add	${PAGE_SIZE}, %rax
	dec	%rcx
	jnz	pv_memory_dm_directory
pv_memory_m2p_slot:
	lea	{PV_TABLE_FLAGS}(%r12), %rax
	mov	%rax, {PV_M2P_PML4_OFFSET}(%rsi)
	/* pfn to gfn and back: [0, K) as it is, then the RAM after K in map order,
	   then the frames taken, [P, E), wherever they lie */
	mov	pv_memory_m2p(%rip), %r8
	mov	pv_memory_m2p_pages(%rip), %r9
	shl	${PAGE_SHIFT}, %r9
	add	%r8, %r9
	mov	%r9, pv_memory_mfn_list(%rip)
	mov	pv_memory_k(%rip), %rbx
	xor	%eax, %eax
	mov	%rbx, %rdx
	xor	%r11d, %r11d
	call	pv_memory_frames_outside
	lea	pv_memory_fill(%rip), %rdi
	call	pv_memory_walk
	mov	%r12, %rax
	mov	pv_memory_taken_end(%rip), %rdx
	call	pv_memory_frames

	mov	{SI_CONSOLE_MFN}(%r13), %rax
	mov	${PV_CONSOLE_PFN}, %edx
	movabs	${PV_CONSOLE_PTE}, %rsi
	lea	{PV_RING_M2P_OFFSET}(%r12), %r8
	call	pv_memory_ring
	mov	{SI_STORE_MFN}(%r13), %rax
	mov	${PV_STORE_PFN}, %edx
	movabs	${PV_STORE_PTE}, %rsi
	lea	({PV_RING_M2P_OFFSET} + {PAGE_SIZE})(%r12), %r8
	call	pv_memory_ring
	call	pv_memory_grant

	mov	pv_memory_mfn_list(%rip), %rax
	mov	pv_memory_mfn_pages(%rip), %rcx
	shl	${PAGE_SHIFT}, %rcx
	add	%rcx, %rax
	mov	%rax, pv_memory_pool(%rip)	/* after mfn_list */
	call	pv_memory_map_padding
	call	pv_memory_map_mfn_list
	movabs	${SHIM_DIRECTMAP_VIRT}, %rcx
	cmpq	$0x0, {SI_MOD_START}(%r13)
	je	pv_memory_switch
	add	%rcx, {SI_MOD_START}(%r13)
pv_memory_switch:
	movabs	${KERNEL_PML4_VIRT}, %rax
	mov	%rax, {SI_PT_BASE}(%r13)
	movq	${KERNEL_PT_FRAMES}, {SI_NR_PT_FRAMES}(%r13)
	movabs	${KERNEL_PML4_PHYS}, %rax
	mov	%rax, %cr3			/* the PV GDT and IDT (36_pv_traps.S) are in both */
	mov	%cr0, %rax
	or	${CR0_WP}, %eax
	mov	%rax, %cr0
pv_memory_done:
	ret

/* start_info.mfn_list: mfn_list and the pool after it mapped at the kernel's address
   of their pfns (VIRT_BASE + pfn << 12), as Xen maps mfn_list in the kernel's region:
   a kernel turns that address back into pfns (Mini-OS's arch_init_p2m). Where that
   address would leave the kernel's half (a kernel high in the address space with
   more RAM than the space above it), the direct map's address instead. */
pv_memory_map_mfn_list:
	mov	pv_memory_mfn_list(%rip), %r8
	movabs	${SHIM_DIRECTMAP_VIRT}, %rax
	add	%r8, %rax
	mov	%rax, {SI_MFN_LIST}(%r13)
	mov	pv_memory_pfns(%rip), %rax
	shl	${PAGE_SHIFT}, %rax
	movabs	${PV_KERNEL_DELTA}, %r9
	add	%r9, %rax
	jc	pv_memory_map_done		/* past the top of the address space */
	bt	${PV_HIGH_HALF_BIT}, %r9
	jc	pv_memory_map_mapped
	movabs	${PV_LOW_HALF_END}, %rcx
	cmp	%rcx, %rax
	ja	pv_memory_map_done		/* past the lower half */
pv_memory_map_mapped:
	mov	%r8, %rbx
	sub	%r12, %rbx
	shr	${PAGE_SHIFT}, %rbx
	add	pv_memory_first(%rip), %rbx	/* mfn_list's pfn */
	mov	%rbx, %rax
	shl	${PAGE_SHIFT}, %rax
	add	%r9, %rax
	mov	%rax, {SI_MFN_LIST}(%r13)
pv_memory_map_page:
	mov	%rbx, %rax
	shl	${PAGE_SHIFT}, %rax
	add	%r9, %rax
	lea	{PV_TABLE_FLAGS}(%r8), %rdx
	call	pv_memory_map
	add	${PAGE_SIZE}, %r8
	inc	%rbx
	cmp	pv_memory_pfns(%rip), %rbx
	jb	pv_memory_map_page
pv_memory_map_done:
	ret

/* the padding xen.h promises a PV kernel after its initial region: the first
   frames it takes as free, where it builds its first tables (Mini-OS's
   build_pagetable), mapped at the kernel's address of their pfns */
pv_memory_map_padding:
	movabs	${PV_KERNEL_DELTA}, %r9
	mov	${PV_SHIM_END_PFN}, %ebx
	mov	${PV_PADDING_END_PFN}, %r10d
	mov	pv_memory_mfn_list(%rip), %r8
pv_memory_map_padding_page:
	mov	%rbx, %rax
	shl	${PAGE_SHIFT}, %rax
	add	%r9, %rax
	mov	(%r8,%rbx,{PV_ENTRY_SIZE}), %rdx
	shl	${PAGE_SHIFT}, %rdx
	or	${PV_TABLE_FLAGS}, %rdx
	call	pv_memory_map
	inc	%ebx
	cmp	%r10d, %ebx
	jb	pv_memory_map_padding_page
	ret

/* the kernel's tables map virtual address rax with entry rdx; a table missing on
   the way is the next page of the pool, zeroed; clobbers rax, rcx, rsi, rdi */
pv_memory_map:
	movabs	${KERNEL_PML4_PHYS}, %rsi
	mov	${PML4_SHIFT}, %ecx
pv_memory_map_level:
	mov	%rax, %rdi
	shr	%cl, %rdi
	and	${PT_INDEX_MASK}, %edi
	lea	(%rsi,%rdi,{PV_ENTRY_SIZE}), %rsi
	cmp	${PAGE_SHIFT}, %ecx
	je	pv_memory_map_leaf
	mov	(%rsi), %rdi
	test	${PV_READ_ONLY_FLAGS}, %dil
	jnz	pv_memory_map_next
	push	%rax
	push	%rcx
	mov	pv_memory_pool(%rip), %rdi
	push	%rdi
	addq	${PAGE_SIZE}, pv_memory_pool(%rip)
	xor	%eax, %eax
	mov	${PV_QUADS_PER_PAGE}, %ecx
	rep stosq
	pop	%rdi
	pop	%rcx
	pop	%rax
	or	${PV_TABLE_FLAGS}, %rdi
	mov	%rdi, (%rsi)
pv_memory_map_next:
	and	$-{PAGE_SIZE}, %rdi
	mov	%rdi, %rsi
	sub	${PT_INDEX_BITS}, %ecx
	jmp	pv_memory_map_level
pv_memory_map_leaf:
	mov	%rdx, (%rsi)
	ret

/* call rdi for each RAM entry of the map with whole pages below the cap (rbp), with
   rax = their start and rdx = their end; rdi keeps rbx, rbp, rdi, r8-r12 as it
   finds them or as its role says */
pv_memory_walk:
	mov	pv_memmap(%rip), %rsi
	mov	pv_memmap_nr(%rip), %ecx
pv_memory_walk_loop:
	test	%ecx, %ecx
	jz	pv_memory_walk_done
	xor	%eax, %eax
	xor	%edx, %edx
	cmpl	${E820_RAM}, {ENTRY_TYPE}(%rsi)
	jne	pv_memory_walk_next
	mov	{ENTRY_ADDR}(%rsi), %rax
	mov	{ENTRY_SIZE}(%rsi), %rdx
	add	%rax, %rdx
	jc	pv_memory_walk_capped		/* an absurd size: up to the cap */
	cmp	%rbp, %rdx
	jbe	pv_memory_walk_end
pv_memory_walk_capped:
	mov	%rbp, %rdx
pv_memory_walk_end:
	add	$({PAGE_SIZE} - 0x1), %rax
	jc	pv_memory_walk_next
	and	$-{PAGE_SIZE}, %rax
	and	$-{PAGE_SIZE}, %rdx
	cmp	%rax, %rdx
	jbe	pv_memory_walk_next
	push	%rcx
	push	%rsi
	call	*%rdi
	pop	%rsi
	pop	%rcx
pv_memory_walk_next:
	add	pv_memmap_stride(%rip), %rsi
	dec	%ecx
	jmp	pv_memory_walk_loop
pv_memory_walk_done:
	ret

/* [rax, rdx) holds the shim segment's last page (r8 its end): K = r9 = rdx, and it
   is the last RAM with pfns so far (r10, r11) */
pv_memory_holder:
	cmp	%r8, %rax
	jae	pv_memory_holder_done
	cmp	%r8, %rdx
	jb	pv_memory_holder_done
	mov	%rdx, %r9
	mov	%rax, %r10
	mov	%rdx, %r11
pv_memory_holder_done:
	ret

/* the cap (rbp): [rax, rdx) takes what is left of the frames the domain owns (rbx);
   where they run out, the cap moves there */
pv_memory_budget:
	sub	%rax, %rdx
	shr	${PAGE_SHIFT}, %rdx
	cmp	%rbx, %rdx
	jb	pv_memory_budget_left
	mov	%rbx, %rdx
	shl	${PAGE_SHIFT}, %rdx		/* no wrap: fewer frames than this entry's */
	add	%rdx, %rax
	mov	%rax, %rbp
	xor	%ebx, %ebx
	ret
pv_memory_budget_left:
	sub	%rdx, %rbx
	ret

/* [rax, rdx) at or after K (r9) gets pfns: rbx += its frames, G (r12) rises to its
   end; below 4 GiB it is the last RAM with pfns there (r10, r11) */
pv_memory_count:
	cmp	%r9, %rax
	jb	pv_memory_count_done
	cmp	%r12, %rdx
	jbe	pv_memory_count_low
	mov	%rdx, %r12
pv_memory_count_low:
	movabs	${PV_LOW_END}, %rcx
	cmp	%rcx, %rdx
	ja	pv_memory_count_frames
	mov	%rax, %r10
	mov	%rdx, %r11
pv_memory_count_frames:
	sub	%rax, %rdx
	shr	${PAGE_SHIFT}, %rdx
	add	%rdx, %rbx
pv_memory_count_done:
	ret

/* [rax, rdx) at or after K (rbx) gets the next pfns (r11): mfn_list (r9) names its
   frames, the M2P (r8) names the pfns back; the frames taken, [P, E) (r12,
   pv_memory_taken_end), get theirs last. Clobbers rax, rdx. */
pv_memory_fill:
	cmp	%rbx, %rax
	jb	pv_memory_frames_done
pv_memory_frames_outside:
	cmp	pv_memory_taken_end(%rip), %rax
	jae	pv_memory_frames
	cmp	%r12, %rdx
	jbe	pv_memory_frames
	push	%rdx				/* it holds [P, E): what lies around it */
	mov	%r12, %rdx
	cmp	%rax, %rdx
	jbe	pv_memory_frames_after
	call	pv_memory_frames		/* [rax, P) */
pv_memory_frames_after:
	pop	%rdx
	mov	pv_memory_taken_end(%rip), %rax
	cmp	%rax, %rdx
	jbe	pv_memory_frames_done
/* [rax, rdx), rax < rdx: the same, frame by frame */
pv_memory_frames:
	shr	${PAGE_SHIFT}, %rax
	shr	${PAGE_SHIFT}, %rdx
pv_memory_frames_loop:
	mov	%rax, (%r9,%r11,{PV_ENTRY_SIZE})
	mov	%r11, (%r8,%rax,{PV_ENTRY_SIZE})
	inc	%rax
	inc	%r11
	cmp	%rdx, %rax
	jb	pv_memory_frames_loop
pv_memory_frames_done:
	ret

/* A ring: rax = its frame (0: none), edx = the pfn standing for it, rsi = the
   kernel-table entry mapping that pfn, r8 = a spare M2P page for a frame past the
   RAM's. A frame past the direct map gets nothing (the kernel's M2P read faults,
   as it reads an M2P hole under Xen). */
pv_memory_ring:
	test	%rax, %rax
	jz	pv_memory_ring_done
	cmp	pv_directmap_frames(%rip), %rax
	jae	pv_memory_ring_done
	mov	(%rsi), %rcx
	and	${PTE_FLAGS_MASK}, %ecx
	mov	%rax, %rdi
	shl	${PAGE_SHIFT}, %rdi
	or	%rcx, %rdi
	mov	%rdi, (%rsi)			/* the pfn's page is the ring's frame */
	mov	pv_memory_mfn_list(%rip), %rcx
	mov	%rax, (%rcx,%rdx,{PV_ENTRY_SIZE})	/* mfn_list[pfn] = frame */
	mov	%rax, %rcx
	shr	${PV_M2P_SHIFT}, %rcx
	lea	{PV_L1_OFFSET}(%r12,%rcx,{PV_ENTRY_SIZE}), %rdi
	mov	(%rdi), %rcx			/* the M2P page holding the frame's entry */
	test	${PV_READ_ONLY_FLAGS}, %cl
	jnz	pv_memory_ring_page
	lea	{PV_READ_ONLY_FLAGS}(%r8), %rcx
	mov	%rcx, (%rdi)
pv_memory_ring_page:
	and	$-{PAGE_SIZE}, %rcx
	and	${PV_M2P_INDEX_MASK}, %eax
	mov	%rdx, (%rcx,%rax,{PV_ENTRY_SIZE})	/* M2P[frame] = pfn */
pv_memory_ring_done:
	ret

/* the gfns the grant table's frames appear at (38_pv_grant.S): the first run of
   PV_GRANT_FRAMES frames from the end of the M2P's run (the RAM with pfns, rounded
   up to an M2P page) that no memory-map entry of any type overlaps (as Mini-OS's
   PVH build takes a gap of its map), within the direct map. pv_grant_gfn = its
   first frame, and the M2P pages holding the run's entries are there (the spare
   ones at PV_GRANT_M2P_OFFSET where the M2P has none), their entries invalid: Xen's
   share_xen_page_with_guest leaves a grant frame out of a PV guest's M2P, and a
   kernel reading them must not fault. No run: pv_grant_gfn = 0, and setup_table
   goes to Xen unchanged. Each overlap moves the run past an entry's end, so the
   search ends within as many passes as the map has entries. Clobbers rax, rcx,
   rdx, rsi, rdi, r8. */
pv_memory_grant:
	mov	pv_memory_m2p_pages(%rip), %rax
	shl	$({PV_M2P_SHIFT} + {PAGE_SHIFT}), %rax	/* the M2P run's end */
pv_memory_grant_try:
	lea	{PV_GRANT_SIZE}(%rax), %rdx
	mov	pv_directmap_frames(%rip), %rcx
	shl	${PAGE_SHIFT}, %rcx
	cmp	%rcx, %rdx
	ja	pv_memory_grant_done		/* no room below the direct map's end */
	mov	pv_memmap(%rip), %rsi
	mov	pv_memmap_nr(%rip), %ecx
pv_memory_grant_entry:
	test	%ecx, %ecx
	jz	pv_memory_grant_free
	cmp	{ENTRY_ADDR}(%rsi), %rdx
	jbe	pv_memory_grant_next		/* it starts at or after the run's end */
	mov	{ENTRY_ADDR}(%rsi), %rdi
	add	{ENTRY_SIZE}(%rsi), %rdi
	jc	pv_memory_grant_done		/* it wraps: nothing after it */
	cmp	%rax, %rdi
	ja	pv_memory_grant_past		/* it ends after the run's start */
pv_memory_grant_next:
	add	pv_memmap_stride(%rip), %rsi
	dec	%ecx
	jmp	pv_memory_grant_entry
pv_memory_grant_past:
	mov	%rdi, %rax
	add	$({PAGE_SIZE} - 0x1), %rax
	jc	pv_memory_grant_done
	and	$-{PAGE_SIZE}, %rax
	jmp	pv_memory_grant_try
pv_memory_grant_free:
	shr	${PAGE_SHIFT}, %rax
	mov	%rax, pv_grant_gfn(%rip)
	lea	{PV_GRANT_M2P_OFFSET}(%r12), %r8
	call	pv_memory_grant_m2p
	add	$({PV_GRANT_FRAMES} - 0x1), %rax
	lea	({PV_GRANT_M2P_OFFSET} + {PAGE_SIZE})(%r12), %r8
/* rax = a gfn: the M2P page holding its entry is there, r8 (a spare page of invalid
   entries) where the M2P has none; clobbers rcx, rdi */
pv_memory_grant_m2p:
	mov	%rax, %rcx
	shr	${PV_M2P_SHIFT}, %rcx
	lea	{PV_L1_OFFSET}(%r12,%rcx,{PV_ENTRY_SIZE}), %rdi
	testb	${PV_READ_ONLY_FLAGS}, (%rdi)
	jnz	pv_memory_grant_done
	lea	{PV_READ_ONLY_FLAGS}(%r8), %rcx
	mov	%rcx, (%rdi)
pv_memory_grant_done:
	ret

pv_memory_no_ram:
	lea	pv_msg_no_ram(%rip), %rsi
	jmp	report_and_halt
pv_memory_no_room:
	lea	pv_msg_no_room(%rip), %rsi
	jmp	report_and_halt
pv_memory_too_much:
	lea	pv_msg_too_much(%rip), %rsi
	jmp	report_and_halt
