/*
 * Data of grant_table_op (38_pv_grant.S): the first gfn 35_pv_memory.S kept for the
 * grant table's frames (0: none), how many frames are mapped there, and the
 * XENMEM_add_to_physmap argument (Xen reads it through the kernel's tables, which
 * map the shim). Entry/exit state: not applicable (data).
 */
	.balign	0x8
pv_grant_gfn:
	.quad	0x0
pv_grant_xatp:
	.fill	{ADD_TO_PHYSMAP_SIZE}, 0x1, 0x0
pv_grant_mapped:
	.long	0x0
