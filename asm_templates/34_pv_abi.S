/*
 * The PV ABI at the hypercall page, for the PVH path of the start-info shim
 * (--pv-abi; docs/pv-abi.md). A PV kernel calls Xen as
 * `call hypercall_page + N*32`. Under PVH Xen answers the PV-only hypercalls
 * -ENOSYS (xen/include/hypercall-defs.c, the hvm64 column), and mmuext_op and
 * vm_assist with fewer operations than PV has. So after Xen has filled the page
 * (33_hypercall_page.S), the shim rewrites those slots, and only those, with a
 * stub that enters pv_abi_dispatch with the hypercall's number in eax; every other
 * slot keeps Xen's own stub (console_io, sched_op, memory_op, ...).
 *
 * The calling convention the handlers keep (xen/include/public/arch-x86/
 * xen-x86_64.h, "Hypercall interface", and Xen's xen/arch/x86/pv/hypercall.c,
 * which writes a 64-bit PV guest's stubs): arguments in rdi, rsi, rdx, r10, r8;
 * the result in rax. The header lets a hypercall clobber its argument registers,
 * and Xen's PV stubs save rcx and r11 around their syscall, so a PV kernel
 * relies on every register but rax (and the arithmetic flags, which no compiler
 * keeps across a call). The handlers here clobber rax and the flags only: the
 * argument registers, rcx and r11 come back as the kernel passed them. They use
 * the kernel's stack for a few words, as Xen's PV stubs do (push rcx, push r11).
 *
 * Entry state assumed: pv_abi_install: called from install_hypercall_page, long
 *   mode, CPL 0, Xen has just filled the page at HCALL_PAGE_PHYS (identity
 *   mapped), DF clear. pv_abi_dispatch: reached from a rewritten slot, at CPL 0,
 *   eax = the hypercall's number, the kernel's return address on top of its
 *   stack.
 * Clobbered: pv_abi_install: rax, rdx, rdi, r8-r11, flags; the rewritten
 *   slots. pv_abi_dispatch: rax (the result), flags.
 * Exit state guaranteed: pv_abi_install: every slot listed at pv_abi_slots holds
 *   the bytes at pv_abi_stub with its number patched in. A hypercall: rax = its
 *   result, Xen's errno values negated (xen/include/public/errno.h).
 * Error path: a hypercall without a handler writes "shimgen: pv-abi: unhandled
 *   hypercall N (name)" on the debug port and returns -ENOSYS, the answer Xen
 *   gives a PVH guest. (iret never comes here: its slot gets its own stub,
 *   36_pv_traps.S.)
 */
	.code64
pv_abi_install:
	lea	pv_abi_slots(%rip), %r8
	movabs	${HCALL_PAGE_PHYS}, %r9
	/* the stub as three quad words (bytes 0-7, 8-15 and its last 8, which overlap
	   the second): three stores a slot instead of a byte loop */
	mov	pv_abi_stub(%rip), %r10
	mov	pv_abi_stub_second(%rip), %r11
	mov	pv_abi_stub_last(%rip), %rdx
pv_abi_install_slot:
	movzbl	(%r8), %eax
	cmp	${PV_ABI_END}, %eax
	je	pv_abi_install_done
	imul	${HYPERCALL_STUB_SIZE}, %eax, %edi
	add	%r9, %rdi
	mov	%r10, (%rdi)
	mov	%r11, (pv_abi_stub_second - pv_abi_stub)(%rdi)
	mov	%rdx, (pv_abi_stub_last - pv_abi_stub)(%rdi)
	mov	%eax, (pv_abi_stub_nr - pv_abi_stub)(%rdi)
	inc	%r8
	jmp	pv_abi_install_slot
pv_abi_install_done:
	ret

/* eax = N: the handler at pv_abi_handlers[N], or the unhandled path */
pv_abi_dispatch:
	push	%r11
	push	%rcx
	cmp	${PV_ABI_TABLE_LEN}, %eax
	jae	pv_abi_unhandled
	lea	pv_abi_handlers(%rip), %rcx
	movzwl	(%rcx,%rax,{PV_ABI_HANDLER_SIZE}), %r11d
	test	%r11d, %r11d
	jz	pv_abi_unhandled
	lea	shim_start(%rip), %rcx
	add	%rcx, %r11
	xchg	%r11, 0x8(%rsp)			/* the handler replaces the saved r11 */
	pop	%rcx
	ret					/* into it, the kernel's return address on top */

pv_abi_unhandled:
	push	%rdx
	push	%rsi
	pushfq
	cld
	mov	%eax, %ecx
	lea	pv_abi_msg(%rip), %rsi
	call	pv_abi_puts
	lea	pv_abi_names(%rip), %rsi	/* records: N, then "N (name)\n", NUL */
pv_abi_name_find:
	lodsb
	cmp	${PV_ABI_END}, %al
	je	pv_abi_name_done
	cmp	%cl, %al
	je	pv_abi_name_found
pv_abi_name_skip:
	lodsb
	test	%al, %al
	jnz	pv_abi_name_skip
	jmp	pv_abi_name_find
pv_abi_name_found:
	call	pv_abi_puts
pv_abi_name_done:
	popfq
	pop	%rsi
	pop	%rdx
	pop	%rcx
	pop	%r11
pv_abi_enosys:
	movq	${NEG_ENOSYS}, %rax
	ret
pv_abi_einval:
	movq	${NEG_EINVAL}, %rax
	ret
pv_abi_efault:
	movq	${NEG_EFAULT}, %rax
	ret
pv_abi_eperm:
	movq	${NEG_EPERM}, %rax
	ret
pv_abi_ok:
	xor	%eax, %eax
	ret

/* rsi = a NUL-terminated text for the debug port; clobbers al, dx, rsi */
pv_abi_puts:
	mov	${DEBUGCON_PORT}, %edx
pv_abi_puts_loop:
	lodsb
	test	%al, %al
	jz	pv_abi_puts_done
	outb	%al, %dx
	jmp	pv_abi_puts_loop
pv_abi_puts_done:
	ret

/* vm_assist(cmd, type), as Xen's do_vm_assist for a 64-bit PV guest: a type
   outside PV64's valid mask is -EINVAL, a cmd other than enable/disable -ENOSYS;
   the enabled types are recorded at pv_abi_vm_assist */
pv_vm_assist:
	mov	%esi, %eax			/* type: an unsigned int */
	cmp	${VMASST_TYPE_LIMIT}, %eax
	jae	pv_abi_einval
	bt	%rax, pv_abi_vmasst_valid(%rip)
	jnc	pv_abi_einval
	cmp	${VMASST_CMD_ENABLE}, %edi
	je	pv_vm_assist_enable
	cmp	${VMASST_CMD_DISABLE}, %edi
	jne	pv_abi_enosys
	btr	%rax, pv_abi_vm_assist(%rip)
	jmp	pv_abi_ok
pv_vm_assist_enable:
	bts	%rax, pv_abi_vm_assist(%rip)
	jmp	pv_abi_ok

/* physdev_op(cmd, arg): PHYSDEVOP_set_iopl as Xen's do_physdev_op answers a PV
   guest: the argument unreadable -EFAULT, an iopl above IOPL_MAX -EINVAL, else
   recorded at pv_abi_iopl. The kernel runs at CPL 0, where port I/O is never
   checked against IOPL, so its own I/O works whatever it asks (under Xen a PV
   kernel needs iopl 1). Every other operation goes to Xen's own stub, saved by
   pv_traps_save: what Xen serves a PVH guest. Clobbers rax (the result), flags. */
pv_physdev_op:
	cmp	${PHYSDEVOP_SET_IOPL}, %edi
	jne	pv_physdev_op_xen
	push	%rdx
	push	%rsi
	push	%rdi
	mov	%rsi, %rdi
	mov	${PHYSDEV_SET_IOPL_SIZE}, %esi
	mov	${PTE_PRESENT}, %edx
	call	pv_abi_guest_ok
	pop	%rdi				/* pops keep CF */
	pop	%rsi
	pop	%rdx
	jc	pv_abi_efault
	mov	(%rsi), %eax			/* physdev_set_iopl.iopl */
	cmp	${IOPL_MAX}, %eax
	ja	pv_abi_einval
	mov	%eax, pv_abi_iopl(%rip)
	jmp	pv_abi_ok
pv_physdev_op_xen:
	movabs	$({PV_XEN_STUBS_VIRT} + {PHYSDEV_OP_STUB_AT}), %rax
	jmp	*%rax				/* its ret returns to the kernel */

/* fpu_taskswitch(set): CR0.TS set when set != 0, cleared otherwise */
pv_fpu_taskswitch:
	test	%edi, %edi
	jz	pv_fpu_taskswitch_clear
	mov	%cr0, %rax
	or	${CR0_TS}, %rax
	mov	%rax, %cr0
	jmp	pv_abi_ok
pv_fpu_taskswitch_clear:
	clts
	jmp	pv_abi_ok

/* stack_switch(ss, sp): the kernel stack for ring transitions, recorded */
pv_stack_switch:
	mov	%rdi, pv_abi_kernel_ss(%rip)
	mov	%rsi, pv_abi_kernel_sp(%rip)
	jmp	pv_abi_ok

/* set_segment_base(which, base): FS, user GS (the shadow GS base while the kernel
   runs) or kernel GS base; a non-canonical base is -EINVAL, as is any other which.
   SEGBASE_GS_USER_SEL: the user's gs loaded with the selector in base's low 16 bits,
   as Xen's do_set_segment_base (xen/arch/x86/pv/misc-hypercalls.c): between two
   swapgs, so the descriptor's base becomes the user GS base; a non-NUL selector's
   RPL forced to 3; a selector gs could not take (lar refuses it, or not present, a
   system segment, unreadable code) loaded as NUL instead, where Xen's fix-up does
   the same after the fault; a NUL load preceded by FLAT_USER_DS32's, so the base
   is 0 on AMD too. Always 0. */
pv_set_segment_base:
	cmp	${SEGBASE_GS_USER_SEL}, %edi
	je	pv_set_segment_base_sel
	mov	%rsi, %rax
	shl	${CANONICAL_SHIFT}, %rax
	sar	${CANONICAL_SHIFT}, %rax
	cmp	%rsi, %rax
	jne	pv_abi_einval
	push	%rcx
	push	%rdx
	mov	${MSR_FS_BASE}, %ecx
	cmp	${SEGBASE_FS}, %edi
	je	pv_set_segment_base_write
	mov	${MSR_SHADOW_GS_BASE}, %ecx
	cmp	${SEGBASE_GS_USER}, %edi
	je	pv_set_segment_base_write
	mov	${MSR_GS_BASE}, %ecx
	cmp	${SEGBASE_GS_KERNEL}, %edi
	je	pv_set_segment_base_write
	pop	%rdx
	pop	%rcx
	jmp	pv_abi_einval
pv_set_segment_base_sel:
	push	%rcx
	movzwl	%si, %eax
	cmp	${SELECTOR_RPL3}, %eax
	jbe	pv_set_segment_base_nul
	or	${SELECTOR_RPL3}, %eax
	lar	%eax, %ecx			/* ZF: in the GDT's limit, DPL allows RPL 3 */
	jnz	pv_set_segment_base_nul
	bt	${AR_PRESENT_BIT}, %ecx
	jnc	pv_set_segment_base_nul
	bt	${AR_S_BIT}, %ecx
	jnc	pv_set_segment_base_nul
	bt	${AR_CODE_BIT}, %ecx
	jnc	pv_set_segment_base_load	/* data */
	bt	${AR_READABLE_BIT}, %ecx
	jc	pv_set_segment_base_load
pv_set_segment_base_nul:
	mov	${FLAT_USER_DS32}, %ecx
	swapgs
	mov	%ecx, %gs
	xor	%eax, %eax
	jmp	pv_set_segment_base_gs
pv_set_segment_base_load:
	swapgs
pv_set_segment_base_gs:
	mov	%eax, %gs
	swapgs
	pop	%rcx
	jmp	pv_abi_ok
pv_set_segment_base_write:
	mov	%esi, %eax
	mov	%rsi, %rdx
	shr	$0x20, %rdx
	wrmsr
	pop	%rdx
	pop	%rcx
	jmp	pv_abi_ok

/* set_debugreg(reg, value): DR0-3 take a canonical address (-EPERM otherwise, as
   Xen's access_ok check), DR6 and DR7 their writable bits with the reserved ones
   forced; DR7 I/O breakpoints (R/W = 10b, needing CR4.DE) are -EPERM; any other
   register -EINVAL */
pv_set_debugreg:
	cmp	${DR3}, %edi
	ja	pv_set_debugreg_status
	mov	%rsi, %rax
	shl	${CANONICAL_SHIFT}, %rax
	sar	${CANONICAL_SHIFT}, %rax
	cmp	%rsi, %rax
	jne	pv_abi_eperm
	cmp	${DR0}, %edi
	jne	pv_set_dr1
	mov	%rsi, %db0
	jmp	pv_abi_ok
pv_set_dr1:
	cmp	${DR1}, %edi
	jne	pv_set_dr2
	mov	%rsi, %db1
	jmp	pv_abi_ok
pv_set_dr2:
	cmp	${DR2}, %edi
	jne	pv_set_dr3
	mov	%rsi, %db2
	jmp	pv_abi_ok
pv_set_dr3:
	mov	%rsi, %db3
	jmp	pv_abi_ok
pv_set_debugreg_status:
	cmp	${DR6}, %edi
	jne	pv_set_debugreg_control
	mov	%esi, %eax
	and	${DR6_WRITABLE}, %eax
	or	${DR6_ONES}, %eax
	mov	%rax, %db6
	jmp	pv_abi_ok
pv_set_debugreg_control:
	cmp	${DR7}, %edi
	jne	pv_abi_einval
	push	%rcx
	mov	%esi, %eax
	and	${DR7_WRITABLE}, %eax
	or	${DR7_ONES}, %eax
	mov	%eax, %ecx			/* ecx bit 16+4i = R/W field i's high bit */
	shr	$0x1, %ecx
	not	%eax
	and	%eax, %ecx			/* ... and its low bit clear: R/W = 10b */
	not	%eax
	test	${DR7_RW_LOW_BITS}, %ecx
	pop	%rcx
	jnz	pv_abi_eperm
	mov	%rax, %db7
	jmp	pv_abi_ok

/* get_debugreg(reg): DR0-3, DR6, DR7; -EINVAL for any other */
pv_get_debugreg:
	cmp	${DR0}, %edi
	jne	pv_get_dr1
	mov	%db0, %rax
	ret
pv_get_dr1:
	cmp	${DR1}, %edi
	jne	pv_get_dr2
	mov	%db1, %rax
	ret
pv_get_dr2:
	cmp	${DR2}, %edi
	jne	pv_get_dr3
	mov	%db2, %rax
	ret
pv_get_dr3:
	cmp	${DR3}, %edi
	jne	pv_get_dr6
	mov	%db3, %rax
	ret
pv_get_dr6:
	cmp	${DR6}, %edi
	jne	pv_get_dr7
	mov	%db6, %rax
	ret
pv_get_dr7:
	cmp	${DR7}, %edi
	jne	pv_abi_einval
	mov	%db7, %rax
	ret

/*
 * Guest memory as the handlers see it: the kernel's own tables (CR3), read through
 * the shim's direct map of guest-physical memory at SHIM_DIRECTMAP_VIRT (mapped in
 * every PML4 the kernel runs on when the layer is in; docs/pv-abi.md).
 *
 * pv_abi_walk: rdi = a virtual address. Walks the 4-level tables CR3 names.
 *   CF clear: rax = the direct-map address of the entry that maps rdi (the L1 PTE,
 *   or the PDE/PDPTE of a 2 MiB/1 GiB page; that entry itself may be not present),
 *   ecx = its level as the page size's shift (PAGE_SHIFT: an L1 PTE, 0x15: a 2 MiB
 *   PDE, 0x1e: a 1 GiB PDPTE), edx = the AND of bits 0-11 of every entry on the way,
 *   that one included (bits 12-63 of rdx clear).
 *   CF set: rdi is not canonical, an entry above it is not present, or a table
 *   (CR3's or an entry's) lies outside the direct map (pv_directmap_frames, set
 *   by 35_pv_memory.S); rax, ecx, edx undefined.
 *   Clobbers rax, rcx, rdx, flags. Never faults: only direct-map addresses below
 *   its end are read. Four table reads at most.
 */
pv_abi_walk:
	push	%rsi
	push	%r8
	mov	%rdi, %rax
	shl	${CANONICAL_SHIFT}, %rax
	sar	${CANONICAL_SHIFT}, %rax
	cmp	%rdi, %rax
	jne	pv_abi_walk_fail
	mov	%cr3, %rsi
	mov	${PTE_FLAGS_MASK}, %edx
	mov	${PML4_SHIFT}, %ecx
	movabs	${SHIM_DIRECTMAP_VIRT}, %r8
pv_abi_walk_table:				/* rsi = CR3 or the entry naming the table */
	mov	%rsi, %rax
	shl	${PTE_ADDR_SPARE_BITS}, %rax	/* the address bits at the top ... */
	shr	${PTE_FRAME_SHIFT}, %rax	/* ... down to the table's frame */
	cmp	pv_directmap_frames(%rip), %rax
	jae	pv_abi_walk_fail		/* past the direct map's end */
	shl	${PAGE_SHIFT}, %rax
	lea	(%r8,%rax), %rsi
	mov	%rdi, %rax
	shr	%cl, %rax
	and	${PT_INDEX_MASK}, %eax
	lea	(%rsi,%rax,{PTE_SIZE}), %rax
	mov	(%rax), %rsi
	and	%esi, %edx
	cmp	${PAGE_SHIFT}, %cl
	je	pv_abi_walk_done		/* an L1 PTE, present or not */
	test	${PTE_PRESENT}, %sil
	jz	pv_abi_walk_fail
	cmp	${PML4_SHIFT}, %cl
	je	pv_abi_walk_down		/* a PML4 entry has no PS bit */
	test	${PTE_LARGE}, %sil
	jnz	pv_abi_walk_done
pv_abi_walk_down:
	sub	${PT_INDEX_BITS}, %cl
	jmp	pv_abi_walk_table
pv_abi_walk_done:
	clc
	pop	%r8
	pop	%rsi
	ret
pv_abi_walk_fail:
	stc
	pop	%r8
	pop	%rsi
	ret

/*
 * pv_abi_addr_ok: rdi = an address a guest passed. CF clear when Xen would let a
 *   64-bit PV guest name it (__addr_ok in Xen's asm/x86_64/uaccess.h: below 2^47,
 *   or from HYPERVISOR_VIRT_END on), CF set otherwise (non-canonical, or in the
 *   range Xen keeps for itself). Clobbers rax, flags.
 */
pv_abi_addr_ok:
	mov	%rdi, %rax
	shr	${PML4_SHIFT}, %rax		/* the address in 512 GiB units */
	cmp	${HYPERVISOR_END_SLOT}, %rax
	jae	pv_abi_addr_ok_done		/* from Xen's end on: CF clear */
	cmp	${GUEST_LOW_SLOTS}, %rax
	cmc					/* below 2^47: CF clear, else set */
pv_abi_addr_ok_done:
	ret

/*
 * pv_abi_guest_ok: rdi = address, rsi = length, edx = the entry bits needed at
 *   every level (PTE_PRESENT, or PTE_PRESENT|PTE_WRITE for a buffer the handler
 *   writes). CF clear when every page of [rdi, rdi + rsi) is mapped with those bits
 *   in the current tables; CF set when one is not, when rdi is not an address Xen
 *   lets a guest name (pv_abi_addr_ok), when the range wraps (or ends at 2^64),
 *   or when rsi > PV_ABI_GUEST_MAX (one page: at most two pages are walked, so the
 *   check is short whatever the guest passes). A length of 0 is fine.
 *   Clobbers rax, flags only.
 */
pv_abi_guest_ok:
	cmp	${PV_ABI_GUEST_MAX}, %rsi
	ja	pv_abi_guest_refused
	test	%rsi, %rsi
	jz	pv_abi_guest_done		/* ZF set, CF clear */
	call	pv_abi_addr_ok
	jc	pv_abi_guest_done
	push	%rdi
	push	%rcx
	push	%rdx
	push	%r8
	push	%r9
	mov	%edx, %r8d
	mov	%rdi, %r9
	add	%rsi, %r9
	jc	pv_abi_guest_bad		/* wraps (or ends at 2^64) */
	dec	%r9				/* the last byte ... */
	and	${PAGE_MASK32}, %r9		/* ... its page (the imm32 sign-extends) */
	and	${PAGE_MASK32}, %rdi
pv_abi_guest_page:
	call	pv_abi_walk
	jc	pv_abi_guest_bad
	and	%r8d, %edx
	cmp	%r8d, %edx
	jne	pv_abi_guest_bad
	cmp	%r9, %rdi
	je	pv_abi_guest_good		/* that was the last page */
	add	${PAGE_SIZE}, %rdi
	jmp	pv_abi_guest_page
pv_abi_guest_good:
	clc
	jmp	pv_abi_guest_pop
pv_abi_guest_bad:
	stc
pv_abi_guest_pop:
	pop	%r9
	pop	%r8
	pop	%rdx
	pop	%rcx
	pop	%rdi
pv_abi_guest_done:
	ret
pv_abi_guest_refused:
	stc
	ret
