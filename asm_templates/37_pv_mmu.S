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
   a large page), or a val Xen refuses (pv_mmu_l1e_ok); with a vCPU-bitmap pointer
   in flags that cannot be read, the entry is written and flushed, and -EFAULT, as
   Xen (one vCPU: the flush is local whichever vCPUs flags names) */
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
	mov	%rdx, %rax
	and	${UVMF_TARGET_MASK}, %rax	/* UVMF_LOCAL, UVMF_ALL or a bitmap */
	jz	pv_update_va_mapping_flush
	cmp	${UVMF_ALL}, %rax
	je	pv_update_va_mapping_flush
	push	%rdi				/* Xen reads the bitmap's first word */
	push	%rsi
	push	%rdx
	mov	%rax, %rdi
	mov	${XEN_ULONG_SIZE}, %esi
	mov	${PTE_PRESENT}, %edx
	call	pv_abi_guest_ok
	pop	%rdx
	pop	%rsi
	pop	%rdi
	jnc	pv_update_va_mapping_flush
	movq	${NEG_EFAULT}, %rcx
pv_update_va_mapping_flush:
	and	${UVMF_FLUSHTYPE_MASK}, %edx
	cmp	${UVMF_INVLPG}, %edx
	jne	pv_update_va_mapping_tlb
	invlpg	(%rdi)
	jmp	pv_update_va_mapping_done
pv_update_va_mapping_tlb:
	cmp	${UVMF_TLB_FLUSH}, %edx
	jne	pv_update_va_mapping_done	/* UVMF_NONE, or 3: Xen flushes nothing */
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
	shr	${PTE_ADDR_PAST_DIRECTMAP}, %rax
	jnz	pv_mmu_entry_ok_bad
	clc
	ret
pv_mmu_entry_ok_bad:
	stc
pv_mmu_entry_ok_done:
	ret
