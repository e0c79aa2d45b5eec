/*
 * grant_table_op for a PV kernel under PVH (--pv-abi; docs/pv-abi.md, piece 6). A PV
 * kernel asks GNTTABOP_setup_table for its grant table's frames and maps the frame
 * numbers it gets back. Xen answers an HVM/PVH guest with the gfns where the frames
 * already appear in its physmap (xen/common/grant_table.c gnttab_setup_table), an
 * invalid gfn for a frame never mapped, and a PV kernel never maps them (a PVH
 * kernel does, with XENMEM_add_to_physmap, XENMAPSPACE_grant_table). So for
 * setup_table of DOMID_SELF the shim first maps each frame asked for that is not
 * mapped yet at the gfns 35_pv_memory.S kept for them (pv_grant_gfn + its index),
 * as Xen's pv-shim does for its guest (xen/arch/x86/pv/shim.c), then hands the call
 * to Xen's own stub, which fills frame_list and status with Xen's checks. Every
 * other operation goes to Xen's stub unchanged.
 *
 * Entry state assumed: as every handler of 34_pv_abi.S (rdi = cmd, rsi = the
 *   argument, rdx = count; the kernel's return address on top of its stack).
 * Clobbered: rax (the result), flags; Xen's stub may clobber the argument
 *   registers, as it may for any hypercall. Memory: pv_grant_mapped, pv_grant_xatp.
 * Exit state guaranteed: setup_table's first nr_frames frames appear at
 *   pv_grant_gfn + index; the result and the argument as Xen's stub leaves them.
 * Error paths: setup_table for more than PV_GRANT_FRAMES frames -EINVAL (Xen's
 *   pv-shim answers a count past its list so); a frame Xen refuses to map: its
 *   error (the frames before it stay mapped). Counts other than 1, an unreadable
 *   argument or another domain go to Xen unchanged (Xen answers them); so does
 *   everything when 35_pv_memory.S found no room for the gfns (pv_grant_gfn 0).
 */
	.code64
pv_grant_table_op:
	cmp	${GNTTABOP_SETUP_TABLE}, %edi
	jne	pv_grant_xen
	cmp	$0x1, %edx
	jne	pv_grant_xen			/* Xen answers -EINVAL */
	cmpq	$0x0, pv_grant_gfn(%rip)
	je	pv_grant_xen
	push	%rcx
	push	%rdx
	push	%rsi
	push	%rdi
	push	%r8
	push	%r10
	push	%r11
	mov	%rsi, %rdi
	mov	${GNTTAB_SETUP_SIZE}, %esi
	mov	${PTE_PRESENT}, %edx
	call	pv_abi_guest_ok
	jc	pv_grant_done			/* to Xen, which answers -EFAULT */
	cmpw	${DOMID_SELF}, {GS_DOM}(%rdi)
	jne	pv_grant_pass
	mov	{GS_NR_FRAMES}(%rdi), %ecx
	cmp	${PV_GRANT_FRAMES}, %ecx
	ja	pv_grant_too_many
pv_grant_map:
	mov	pv_grant_mapped(%rip), %eax
	cmp	%ecx, %eax
	jae	pv_grant_pass			/* all asked for are mapped */
	lea	pv_grant_xatp(%rip), %rsi
	movw	${DOMID_SELF}, {AP_DOMID}(%rsi)
	movl	${XENMAPSPACE_GRANT_TABLE}, {AP_SPACE}(%rsi)
	mov	%rax, {AP_IDX}(%rsi)
	add	pv_grant_gfn(%rip), %rax
	mov	%rax, {AP_GPFN}(%rsi)
	push	%rcx
	mov	${XENMEM_ADD_TO_PHYSMAP}, %edi
	call	*hcall_memory_op(%rip)
	pop	%rcx
	test	%rax, %rax
	jnz	pv_grant_done			/* Xen's error (CF clear) */
	incl	pv_grant_mapped(%rip)
	jmp	pv_grant_map
pv_grant_too_many:
	movq	${NEG_EINVAL}, %rax
	clc
	jmp	pv_grant_done
pv_grant_pass:
	stc
/* CF set: the kernel's registers back, then Xen's stub; clear: rax is the result */
pv_grant_done:
	pop	%r11
	pop	%r10
	pop	%r8
	pop	%rdi
	pop	%rsi
	pop	%rdx
	pop	%rcx
	jnc	pv_grant_return
pv_grant_xen:
	movabs	$({PV_XEN_STUBS_VIRT} + {GRANT_TABLE_OP_STUB_AT}), %rax
	jmp	*%rax				/* its ret returns to the kernel */
pv_grant_return:
	ret
pv_grant_end:
