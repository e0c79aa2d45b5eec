/*
 * PVH error exit, shared by the PVH entries of every handoff.
 *
 * Entry state assumed: PVH 32-bit flat protected mode, paging off, the shim loaded
 *   at its p_paddr. Reached by a jump when hvm_start_info's magic is wrong.
 * Clobbered: eax, edx, esi, flags.
 * Exit state guaranteed: none; the kernel is never entered. The message goes to the
 *   debug port (QEMU debugcon, Xen's "(d0)" log), then cli; hlt forever.
 */
	.code32
pvh_bad_magic:
	mov	$({SHIM_PHYS} + (msg_bad_magic - shim_start)), %esi
	mov	${DEBUGCON_PORT}, %edx
pvh_bad_magic_loop:
	lodsb
	test	%al, %al
	jz	pvh_halt
	outb	%al, %dx
	jmp	pvh_bad_magic_loop
pvh_halt:
	cli
	hlt
	jmp	pvh_halt
