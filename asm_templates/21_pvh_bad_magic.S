/*
 * PVH error exits, shared by the PVH entries of every handoff: report on the debug
 * port, then halt for good.
 *
 * Entry state assumed: pvh_bad_magic: PVH 32-bit flat protected mode, paging off,
 *   the shim loaded at its p_paddr, reached by a jump when hvm_start_info's magic is
 *   wrong. report_and_halt: esi (rsi) = a NUL-terminated message, CPL 0, in 32-bit
 *   or in 64-bit mode: every byte from report_and_halt on decodes to the same
 *   instructions in both modes (tests/shim/test_boot_safety.py checks that with capstone), so
 *   the 64-bit error paths jump here too.
 * Clobbered: eax, edx, esi, flags (DF cleared).
 * Exit state guaranteed: none; the kernel is never entered. The message goes to the
 *   debug port (QEMU debugcon, Xen's "(d0)" log), then cli; hlt forever.
 */
	.code32
pvh_bad_magic:
	mov	$({SHIM_PHYS} + (msg_bad_magic - shim_start)), %esi
report_and_halt:
	cld					/* a wrong-mode entry comes here before any cld */
	mov	${DEBUGCON_PORT}, %edx
report_loop:
	lodsb
	test	%al, %al
	jz	pvh_halt
	outb	%al, %dx
	jmp	report_loop
pvh_halt:
	cli
	hlt
	jmp	pvh_halt
