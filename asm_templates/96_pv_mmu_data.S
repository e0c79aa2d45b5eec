/*
 * Data of the page-table hypercalls (37_pv_mmu.S): the state they keep and the
 * table of mmuext_op's commands. Written by the handlers at run time, never
 * executed. Entry/exit state: not applicable (data).
 */
	.balign	0x8
pv_mmu_user_baseptr:
	.quad	0x0				/* MMUEXT_NEW_USER_BASEPTR's frame, recorded */
/* each MMUEXT_ command's routine, as an offset from shim_start */
pv_mmuext_op_table:
	.word	{MMUEXT_TABLE}
