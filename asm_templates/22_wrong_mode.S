/*
 * Entries reached in the wrong CPU mode, for the handoffs whose entries carry the
 * mode guard (start-info, hvm-start-info): a loader that jumped to e_entry in
 * 32-bit protected mode, or to PHYS32_ENTRY in long mode. Either way the kernel
 * would get garbage, so the shim reports and halts.
 *
 * Entry state assumed: pv_in_32bit_mode: 32-bit protected mode, paging off, the shim
 *   at its p_paddr (a 32-bit entry can only be taken there). pvh_in_long_mode: long
 *   mode, CPL 0, paging on with mappings unknown: only rip-relative addressing finds
 *   the message.
 * Clobbered: eax, edx, esi (rsi), flags.
 * Exit state guaranteed: none; report_and_halt (21_pvh_bad_magic.S) prints the
 *   message on the debug port and halts.
 */
	.code32
pv_in_32bit_mode:
	mov	$({SHIM_PHYS} + (msg_wrong_mode - shim_start)), %esi
	jmp	report_and_halt
	.code64
pvh_in_long_mode:
	lea	msg_wrong_mode(%rip), %rsi
	jmp	report_and_halt
