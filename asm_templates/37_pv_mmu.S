/*
 * The page-table hypercalls of the PV ABI layer (docs/pv-abi.md, piece 4), for a
 * kernel running at CPL 0 on its own tables under PVH. The frame numbers a PV
 * kernel takes for mfns are gfns here, so a "machine address" is a guest-physical
 * one, reached through the shim's direct map (SHIM_DIRECTMAP_VIRT); frames past the
 * direct map are refused as Xen refuses a frame the guest does not own (-EINVAL).
 * Guest pointers and addresses go through pv_abi_addr_ok, pv_abi_walk and
 * pv_abi_guest_ok (34_pv_abi.S) first: a handler never faults on what a kernel
 * passes.
 *
 * Entry state assumed: reached from pv_abi_dispatch (34_pv_abi.S): CPL 0, the
 *   kernel's arguments in rdi, rsi, rdx, r10, r8, its return address on top of its
 *   stack, the kernel's tables in CR3 with the direct map in them.
 * Clobbered: rax (the result), flags; the kernel's stack below its rsp.
 * Exit state guaranteed: rax = 0 or Xen's negated errno; every other register as
 *   the kernel passed it.
 * Error path: the errno Xen gives a 64-bit PV guest for the same arguments (each
 *   handler says which); nothing is written when a check fails before the write.
 */
	.code64
/* update_va_mapping(va, val, flags), as Xen's __do_update_va_mapping: the L1 entry
   mapping va becomes val, then the TLB flush flags asks for. -EINVAL for a va Xen
   does not let a guest name, one with no L1 table (an entry above not present, or
   a large page), or a val Xen refuses (pv_mmu_l1e_ok); with a flush asked for a
   vCPU bitmap that cannot be read, the entry is written and flushed, and -EFAULT,
   as Xen (one vCPU: the flush is local whichever vCPUs flags names; Xen reads
   the bitmap only for a flush) */
pv_update_va_mapping:
	push	%rcx
	push	%rdx
	call	pv_abi_addr_ok
	jc	pv_update_va_mapping_einval
	call	pv_abi_walk
	jc	pv_update_va_mapping_einval
	cmp	${PAGE_SHIFT}, %ecx
	jne	pv_update_va_mapping_einval	/* a large page: no L1 entry */
	mov	%rax, %rcx
	call	pv_mmu_l1e_ok
	jc	pv_update_va_mapping_einval
	mov	%rsi, (%rcx)
	mov	(%rsp), %rdx			/* flags */
	xor	%ecx, %ecx			/* the result */
	mov	%edx, %eax
	and	${UVMF_FLUSHTYPE_MASK}, %eax
	jz	pv_update_va_mapping_done	/* UVMF_NONE */
	cmp	${UVMF_FLUSHTYPE_MASK}, %eax
	je	pv_update_va_mapping_done	/* both bits: Xen has no such flush */
	mov	%rdx, %rax
	and	${UVMF_TARGET_MASK}, %rax	/* UVMF_LOCAL, UVMF_ALL or a bitmap */
	jz	pv_update_va_mapping_flush
	cmp	${UVMF_ALL}, %rax
	je	pv_update_va_mapping_flush
	push	%rdi				/* Xen reads the bitmap's first word */
	push	%rsi
	mov	%rax, %rdi
	mov	${XEN_ULONG_SIZE}, %esi
	push	%rdx
	mov	${PTE_PRESENT}, %edx
	call	pv_abi_guest_ok
	pop	%rdx
	pop	%rsi
	pop	%rdi
	jnc	pv_update_va_mapping_flush
	movq	${NEG_EFAULT}, %rcx
pv_update_va_mapping_flush:
	test	${UVMF_INVLPG}, %dl
	jz	pv_update_va_mapping_tlb
	invlpg	(%rdi)
	jmp	pv_update_va_mapping_done
pv_update_va_mapping_tlb:				/* UVMF_TLB_FLUSH */
	mov	%cr3, %rax
	mov	%rax, %cr3
pv_update_va_mapping_done:
	mov	%rcx, %rax
	pop	%rdx
	pop	%rcx
	ret
pv_update_va_mapping_einval:
	pop	%rdx
	pop	%rcx
	jmp	pv_abi_einval

/* rsi = a new L1 entry: CF clear when Xen would take it from a 64-bit PV guest (not
   present: anything; present: _PAGE_GNTTAB clear, L1_DISALLOW_MASK in Xen's
   xen/arch/x86/mm.c, and the frame inside the guest, here the direct map);
   clobbers rax, flags */
pv_mmu_l1e_ok:
	test	${PTE_PRESENT}, %sil
	jz	pv_mmu_entry_ok_done		/* CF clear */
	bt	${PTE_GNTTAB_BIT}, %rsi
	jc	pv_mmu_entry_ok_done
/* rsi = an entry naming a frame: CF clear when the frame lies in the direct map */
pv_mmu_frame_ok:
	mov	%rsi, %rax
	shl	${PTE_ADDR_SPARE_BITS}, %rax
	shr	${PTE_FRAME_SHIFT}, %rax	/* the frame */
	cmp	pv_directmap_frames(%rip), %rax
	cmc					/* CF clear: below the direct map's end */
	ret
pv_mmu_entry_ok_bad:
	stc
pv_mmu_entry_ok_done:
	ret

/* rdi = a virtual address: CF clear with rax = the direct-map address of the byte
   it maps (a present entry whose frame lies in the direct map), CF set otherwise;
   clobbers rax, flags */
pv_mmu_mapped:
	push	%rcx
	push	%rdx
	call	pv_abi_walk
	jc	pv_mmu_mapped_done
	mov	(%rax), %rax
	test	${PTE_PRESENT}, %al
	jz	pv_mmu_mapped_bad
	mov	%rax, %rdx
	shl	${PTE_ADDR_SPARE_BITS}, %rdx
	shr	${PTE_FRAME_SHIFT}, %rdx	/* the frame */
	cmp	pv_directmap_frames(%rip), %rdx
	jae	pv_mmu_mapped_bad		/* past the direct map's end */
	mov	%rdx, %rax
	shl	${PAGE_SHIFT}, %rax
	movq	$-0x1, %rdx
	shl	%cl, %rdx			/* ~(the page's size - 1) */
	and	%rdx, %rax			/* a large page's base (PAT bit 12 off) */
	not	%rdx
	and	%rdi, %rdx
	or	%rdx, %rax			/* + the offset in the page */
	movabs	${SHIM_DIRECTMAP_VIRT}, %rdx
	add	%rdx, %rax
	clc
	jmp	pv_mmu_mapped_done
pv_mmu_mapped_bad:
	stc
pv_mmu_mapped_done:
	pop	%rdx
	pop	%rcx
	ret

/*
 * The batched calls share a frame. pv_mmu_save pushes rcx, rdx, rsi, rdi, r8-r11
 * under its caller's return address (clobbers rax); pv_mmu_batch_restore pops
 * them and returns to the kernel. mmu_update and mmuext_op then keep r9 = the next
 * request, r8d = the requests done, ecx = the count, and end at pv_mmu_batch_end
 * with eax = the result, which writes the count done where the kernel asked (when
 * that is a writable word: Xen ignores a failed write).
 * pv_mmu_batch_start: rdi = the requests, esi = count, r10w = the pages' owner
 *   (foreigndom), as both take them; sets r9, r8d, ecx. CF set with rax = -EFAULT
 *   when the array's address fails Xen's __addr_ok, -ESRCH for an owner other than
 *   DOMID_SELF (Xen's get_pg_owner also takes DOMID_IO, DOMID_XEN and, for a
 *   privileged caller, other domains: the shim knows none, and a PVH domain maps
 *   I/O memory itself), -E2BIG for a count above PV_MMU_BATCH_MAX (Xen takes any
 *   count and preempts; the shim keeps a call short). Those return before any
 *   request, the count done unwritten, as Xen's. Clobbers rax, flags.
 */
pv_mmu_save:					/* the registers, under our caller's return */
	pop	%rax
	push	%rcx
	push	%rdx
	push	%rsi
	push	%rdi
	push	%r8
	push	%r9
	push	%r10
	push	%r11
	jmp	*%rax

pv_mmu_batch_start:				/* CF set: rax = the error */
	mov	%rdi, %r9
	xor	%r8d, %r8d
	mov	%esi, %ecx
	call	pv_abi_addr_ok
	movq	${NEG_EFAULT}, %rax
	jc	pv_mmu_batch_start_done
	cmp	${DOMID_SELF}, %r10w
	movq	${NEG_ESRCH}, %rax
	jne	pv_mmu_batch_refused
	cmp	${PV_MMU_BATCH_MAX}, %ecx
	movq	${NEG_E2BIG}, %rax
	ja	pv_mmu_batch_refused
	clc
pv_mmu_batch_start_done:
	ret
pv_mmu_batch_refused:
	stc
	ret

/* r9 = the next request, esi = its size: CF set when it cannot be read */
pv_mmu_request_ok:
	mov	%r9, %rdi
	mov	${PTE_PRESENT}, %edx
	jmp	pv_abi_guest_ok

pv_mmu_batch_end:				/* eax = the result */
	mov	{PV_MMU_SAVED_RDX}(%rsp), %rdi	/* the count-done pointer */
	test	%rdi, %rdi
	jz	pv_mmu_batch_restore
	push	%rax
	mov	${PV_MMU_DONE_SIZE}, %esi
	mov	${PTE_PRESENT_WRITE}, %edx
	call	pv_abi_guest_ok
	pop	%rax
	jc	pv_mmu_batch_restore
	mov	%r8d, (%rdi)
pv_mmu_batch_restore:
	pop	%r11
	pop	%r10
	pop	%r9
	pop	%r8
	pop	%rdi
	pop	%rsi
	pop	%rdx
	pop	%rcx
	ret

/* mmu_update(reqs, count, done, foreigndom), as Xen's do_mmu_update for a 64-bit
   PV guest: each 16-byte request (ptr, val) read once checked (-EFAULT at the
   first that cannot be read); ptr's low 3 bits the command. MMU_NORMAL_PT_UPDATE,
   MMU_PT_UPDATE_NO_TRANSLATE (the same here: no translation) and
   MMU_PT_UPDATE_PRESERVE_AD (the entry's accessed and dirty bits kept) write val
   at the guest-physical address ptr, through the direct map: -EINVAL for a frame
   past it, or a val pv_mmu_l1e_ok refuses (the shim does not track which frames
   are tables of which level, so every entry gets the L1 checks). MMU_MACHPHYS_UPDATE
   writes val into the M2P entry of ptr's frame, through the kernel's own mapping
   of the M2P at MACH2PHYS_VIRT_START: -EINVAL when that entry is not mapped (no
   M2P yet, or a frame the guest does not own). Other commands -ENOSYS. The TLB is
   flushed once after the batch when a request was done (Xen flushes after an
   L2-L4 update; more is harmless). The count done goes to done. */
pv_mmu_update:
	call	pv_mmu_save
	call	pv_mmu_batch_start
	jc	pv_mmu_batch_restore
	test	${PT_OWNER_MASK}, %r10d		/* page tables of a foreign domain */
	jnz	pv_mmu_update_esrch
pv_mmu_update_next:
	xor	%eax, %eax
	cmp	%ecx, %r8d
	jae	pv_mmu_update_flush
	mov	${MMU_UPDATE_SIZE}, %esi
	call	pv_mmu_request_ok
	jc	pv_mmu_update_efault
	mov	{MMU_UPDATE_PTR}(%r9), %rsi
	mov	{MMU_UPDATE_VAL}(%r9), %r10
	mov	%esi, %r11d
	and	${MMU_CMD_MASK}, %r11d
	xor	%r11, %rsi			/* ptr without its command */
	cmp	${MMU_MACHPHYS_UPDATE}, %r11d
	je	pv_mmu_update_machphys
	cmp	${MMU_PT_UPDATE_NO_TRANSLATE}, %r11d
	ja	pv_mmu_update_enosys
	call	pv_mmu_address_frame
	jc	pv_mmu_update_einval
	xchg	%rsi, %r10
	call	pv_mmu_l1e_ok
	xchg	%rsi, %r10
	jc	pv_mmu_update_einval
	movabs	${SHIM_DIRECTMAP_VIRT}, %rax
	add	%rax, %rsi
	cmp	${MMU_PT_UPDATE_PRESERVE_AD}, %r11d
	jne	pv_mmu_update_write
	mov	(%rsi), %rax
	and	${PTE_ACCESSED_DIRTY}, %eax
	or	%rax, %r10
pv_mmu_update_write:
	mov	%r10, (%rsi)
	jmp	pv_mmu_update_done_one
pv_mmu_update_machphys:
	call	pv_mmu_address_frame		/* rax = its M2P entry */
	jc	pv_mmu_update_einval
	mov	%r10, (%rax)
pv_mmu_update_done_one:
	inc	%r8d
	add	${MMU_UPDATE_SIZE}, %r9
	jmp	pv_mmu_update_next
pv_mmu_update_esrch:
	movq	${NEG_ESRCH}, %rax
	jmp	pv_mmu_batch_restore
pv_mmu_update_efault:
	movq	${NEG_EFAULT}, %rax
	jmp	pv_mmu_update_flush
pv_mmu_update_einval:
	movq	${NEG_EINVAL}, %rax
	jmp	pv_mmu_update_flush
pv_mmu_update_enosys:
	movq	${NEG_ENOSYS}, %rax
pv_mmu_update_flush:
	test	%r8d, %r8d
	jz	pv_mmu_batch_end
	mov	%cr3, %rdx
	mov	%rdx, %cr3
	jmp	pv_mmu_batch_end

/* rsi = a guest-physical address: pv_mmu_guest_frame of its frame */
pv_mmu_address_frame:
	push	%rsi
	shr	${PAGE_SHIFT}, %rsi
	call	pv_mmu_guest_frame
	pop	%rsi
	ret

/* rsi = a frame number: CF clear with rax = the direct-map address of its M2P
   entry when the frame is the guest's: below the direct map's end, with an M2P
   entry mapped at MACH2PHYS_VIRT_START that is not INVALID_M2P_ENTRY (the layer's
   M2P, 35_pv_memory.S, marks every frame without RAM so), as Xen refuses a frame
   the domain does not own; CF set otherwise. Clobbers rax, flags. */
pv_mmu_guest_frame:
	cmp	pv_directmap_frames(%rip), %rsi
	jae	pv_mmu_entry_ok_bad
	push	%rdi
	lea	(,%rsi,{M2P_ENTRY_SIZE}), %rdi
	movabs	${MACH2PHYS_VIRT_START}, %rax
	add	%rax, %rdi
	call	pv_mmu_mapped
	pop	%rdi
	jc	pv_mmu_entry_ok_done
	cmpq	${INVALID_M2P_ENTRY_IMM}, (%rax)
	je	pv_mmu_entry_ok_bad
	clc
	ret

/* mmuext_op(ops, count, done, foreigndom), as Xen's do_mmuext_op for a 64-bit PV
   guest, each 24-byte op read once checked (-EFAULT at the first that cannot be):
   - MMUEXT_PIN_L1_TABLE..PIN_L4_TABLE, MMUEXT_UNPIN_TABLE: accepted for a frame in
     the guest (the direct map), -EINVAL otherwise. The hardware walks the tables
     as they are; the shim keeps no pin state, so pinning twice or unpinning what
     was never pinned (-EINVAL from Xen) is accepted too.
   - MMUEXT_NEW_BASEPTR: the frame (-EINVAL past the direct map) gets PML4 slots
     HYPERVISOR_VIRT_START..END (the M2P, the shim's direct map) of the current
     PML4, as Xen fills its own slots of every PV guest's L4, and becomes CR3.
   - MMUEXT_NEW_USER_BASEPTR: recorded (0 or a frame in the guest; -EINVAL past it).
   - MMUEXT_TLB_FLUSH_LOCAL/ALL, MMUEXT_INVLPG_LOCAL/ALL: CR3 reload, invlpg (of an
     address __addr_ok accepts; another is ignored, as Xen's INVLPG_ALL does).
     The _MULTI forms read the vCPU bitmap's first word (-EINVAL when it cannot be
     read, as Xen's vcpumask_to_pcpumask failure there), then flush.
   - MMUEXT_SET_LDT: 0 entries load the null LDT, 0; over 8192 entries, or a base
     not page-aligned or refused by __addr_ok, -EINVAL as Xen; a real LDT -ENOSYS
     (the shim builds none).
   - MMUEXT_CLEAR_PAGE, MMUEXT_COPY_PAGE: done through the direct map (-EINVAL for
     a frame past it). MMUEXT_FLUSH_CACHE(_GLOBAL): -EACCES, Xen's answer to a
     domain without I/O memory; MMUEXT_(UN)MARK_SUPER -EOPNOTSUPP; others -ENOSYS. */
pv_mmuext_op:
	call	pv_mmu_save
	call	pv_mmu_batch_start
	jc	pv_mmu_batch_restore
pv_mmuext_op_next:
	xor	%eax, %eax
	cmp	%ecx, %r8d
	jae	pv_mmu_batch_end
	mov	${MMUEXT_OP_SIZE}, %esi
	call	pv_mmu_request_ok
	jc	pv_mmuext_op_efault
	mov	{MMUEXT_ARG1}(%r9), %rsi
	mov	{MMUEXT_ARG2}(%r9), %rdi
	mov	{MMUEXT_CMD}(%r9), %eax
	cmp	${MMUEXT_LAST}, %eax
	ja	pv_mmuext_op_enosys
	lea	pv_mmuext_op_table(%rip), %rdx
	movzwl	(%rdx,%rax,{PV_ABI_HANDLER_SIZE}), %eax
	lea	shim_start(%rip), %rdx
	add	%rax, %rdx
	call	*%rdx				/* rsi = arg1, rdi = arg2: eax = the result */
	test	%eax, %eax
	jnz	pv_mmu_batch_end
	inc	%r8d
	add	${MMUEXT_OP_SIZE}, %r9
	jmp	pv_mmuext_op_next
pv_mmuext_op_efault:
	movq	${NEG_EFAULT}, %rax
	jmp	pv_mmu_batch_end
pv_mmuext_op_enosys:
	movq	${NEG_ENOSYS}, %rax
	jmp	pv_mmu_batch_end

/* Each op: rsi = arg1, rdi = arg2 (the op's words); returns eax = 0 or the negated
   errno; may clobber rdx, rsi, rdi, r10, r11 and flags */
pv_mmuext_pin:					/* and unpin */
pv_mmuext_frame:
	call	pv_mmu_guest_frame
	jc	pv_mmuext_einval
	xor	%eax, %eax
	ret
pv_mmuext_new_baseptr:
	call	pv_mmuext_frame
	test	%eax, %eax
	jnz	pv_mmuext_done
	shl	${PAGE_SHIFT}, %rsi
	movabs	${SHIM_DIRECTMAP_VIRT}, %rdx
	mov	%cr3, %rdi
	and	${PAGE_MASK32}, %rdi		/* the frame (the imm32 sign-extends) */
	add	%rdx, %rdi
	add	%rsi, %rdx
	mov	${HYPERVISOR_FIRST_SLOT}, %eax
pv_mmuext_new_baseptr_slot:
	mov	(%rdi,%rax,{PTE_SIZE}), %r10
	mov	%r10, (%rdx,%rax,{PTE_SIZE})
	inc	%eax
	cmp	${HYPERVISOR_END_SLOT_INDEX}, %eax
	jb	pv_mmuext_new_baseptr_slot
	mov	%rsi, %cr3
	xor	%eax, %eax
	ret
pv_mmuext_new_user_baseptr:
	test	%rsi, %rsi
	jz	pv_mmuext_new_user_baseptr_set
	call	pv_mmuext_frame
	test	%eax, %eax
	jnz	pv_mmuext_done
pv_mmuext_new_user_baseptr_set:
	mov	%rsi, pv_mmu_user_baseptr(%rip)
	xor	%eax, %eax
	ret
pv_mmuext_multi:				/* TLB_FLUSH_MULTI, INVLPG_MULTI */
	push	%rsi
	mov	${XEN_ULONG_SIZE}, %esi
	mov	${PTE_PRESENT}, %edx
	call	pv_abi_guest_ok
	pop	%rsi
	jc	pv_mmuext_einval
	cmpl	${MMUEXT_TLB_FLUSH_MULTI}, {MMUEXT_CMD}(%r9)
	jne	pv_mmuext_invlpg
pv_mmuext_tlb_flush:				/* TLB_FLUSH_LOCAL, TLB_FLUSH_ALL */
	mov	%cr3, %rax
	mov	%rax, %cr3
	xor	%eax, %eax
	ret
pv_mmuext_invlpg:				/* INVLPG_LOCAL, INVLPG_ALL */
	mov	%rsi, %rdi
	call	pv_abi_addr_ok
	jc	pv_mmuext_ok
	invlpg	(%rdi)
pv_mmuext_ok:
	xor	%eax, %eax
pv_mmuext_done:
	ret
pv_mmuext_set_ldt:				/* edi = the entries */
	test	%edi, %edi
	jnz	pv_mmuext_set_ldt_some
	lldt	%di
	xor	%eax, %eax
	ret
pv_mmuext_set_ldt_some:
	cmp	${LDT_MAX_ENTRIES}, %edi
	ja	pv_mmuext_einval
	test	${PTE_FLAGS_MASK}, %esi
	jnz	pv_mmuext_einval
	mov	%rsi, %rdi
	call	pv_abi_addr_ok
	jc	pv_mmuext_einval
	movq	${NEG_ENOSYS}, %rax
	ret
pv_mmuext_clear_page:
	call	pv_mmuext_frame
	test	%eax, %eax
	jnz	pv_mmuext_done
	shl	${PAGE_SHIFT}, %rsi
	movabs	${SHIM_DIRECTMAP_VIRT}, %rdx
	add	%rsi, %rdx
pv_mmuext_clear_page_word:			/* eax counts up from 0 */
	movq	$0x0, (%rdx,%rax,{PTE_SIZE})
	inc	%eax
	cmp	${PT_ENTRIES}, %eax
	jb	pv_mmuext_clear_page_word
	xor	%eax, %eax
	ret
pv_mmuext_copy_page:				/* rsi = to, rdi = from */
	call	pv_mmuext_frame
	test	%eax, %eax
	jnz	pv_mmuext_done
	xchg	%rsi, %rdi
	call	pv_mmuext_frame
	test	%eax, %eax
	jnz	pv_mmuext_done
	shl	${PAGE_SHIFT}, %rsi
	shl	${PAGE_SHIFT}, %rdi
	movabs	${SHIM_DIRECTMAP_VIRT}, %rdx
	add	%rdx, %rsi
	add	%rdx, %rdi
	xor	%eax, %eax
pv_mmuext_copy_page_word:
	mov	(%rsi,%rax,{PTE_SIZE}), %rdx
	mov	%rdx, (%rdi,%rax,{PTE_SIZE})
	inc	%eax
	cmp	${PT_ENTRIES}, %eax
	jb	pv_mmuext_copy_page_word
	xor	%eax, %eax
	ret
pv_mmuext_eacces:
	movq	${NEG_EACCES}, %rax
	ret
pv_mmuext_eopnotsupp:
	movq	${NEG_EOPNOTSUPP}, %rax
	ret
pv_mmuext_enosys:
	movq	${NEG_ENOSYS}, %rax
	ret
pv_mmuext_einval:
	movq	${NEG_EINVAL}, %rax
	ret

/* multicall(calls, nr_calls), as Xen's do_multicall: each struct multicall_entry
   (xen.h) read once checked (-EFAULT at the first that cannot be read and
   written), run by calling the kernel's own hypercall page at its op's slot with
   its first five arguments (so PV-only ops reach the shim's handlers and the rest
   Xen's stubs), the result stored in the entry. An op past the page's slots
   -ENOSYS; a multicall inside a multicall -EINVAL (Xen refuses the reentry); an
   iret -ENOSYS (it needs a PV iret frame on the stack, which a batch does not
   give). -EFAULT for an array Xen's array_access_ok refuses (__addr_ok, or more
   entries than the address space holds), -E2BIG above PV_MULTICALL_MAX
   entries (Xen takes any number and preempts; the shim keeps a call short). */
pv_multicall:
	call	pv_mmu_save
	call	pv_abi_addr_ok
	jc	pv_multicall_efault
	movabs	${MULTICALL_ARRAY_LIMIT}, %rax	/* Xen's array_access_ok */
	cmp	%rax, %rsi
	jae	pv_multicall_efault
	cmp	${PV_MULTICALL_MAX}, %rsi
	ja	pv_multicall_e2big
	mov	%rdi, %r9			/* the next entry */
	mov	%rsi, %r11			/* the entries left */
pv_multicall_next:
	xor	%eax, %eax
	test	%r11, %r11
	jz	pv_multicall_done
	mov	%r9, %rdi
	mov	${MULTICALL_ENTRY_SIZE}, %esi
	mov	${PTE_PRESENT_WRITE}, %edx
	call	pv_abi_guest_ok
	jc	pv_multicall_efault
	mov	{MULTICALL_OP}(%r9), %rax
	movq	${NEG_EINVAL}, %rcx
	cmp	${HC_MULTICALL}, %rax
	je	pv_multicall_result
	movq	${NEG_ENOSYS}, %rcx
	cmp	${HC_IRET}, %rax
	je	pv_multicall_result
	cmp	${HYPERCALL_SLOTS}, %rax
	jae	pv_multicall_result
	shl	${HYPERCALL_STUB_SHIFT}, %eax
	movabs	${HCALL_PAGE_VIRT}, %rcx
	add	%rax, %rcx
	mov	{MULTICALL_ARG0}(%r9), %rdi
	mov	{MULTICALL_ARG1}(%r9), %rsi
	mov	{MULTICALL_ARG2}(%r9), %rdx
	mov	{MULTICALL_ARG3}(%r9), %r10
	mov	{MULTICALL_ARG4}(%r9), %r8
	call	*%rcx				/* keeps r9 and r11 (every stub does) */
	mov	%rax, %rcx
pv_multicall_result:
	mov	%rcx, {MULTICALL_RESULT}(%r9)
	add	${MULTICALL_ENTRY_SIZE}, %r9
	dec	%r11
	jmp	pv_multicall_next
pv_multicall_efault:
	movq	${NEG_EFAULT}, %rax
	jmp	pv_multicall_done
pv_multicall_e2big:
	movq	${NEG_E2BIG}, %rax
pv_multicall_done:
	jmp	pv_mmu_batch_restore
