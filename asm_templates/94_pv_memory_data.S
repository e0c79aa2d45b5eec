/*
 * Data of the PV memory layout (35_pv_memory.S): the memory map count_ram walked
 * (written by 40_start_info.S with the layer in), the layout's sizes, the error
 * lines. Entry/exit state: not applicable (data).
 */
	.balign	0x8
pv_memmap:
	.quad	0x0				/* the entries' address, 0: no map */
pv_memmap_stride:
	.quad	0x0
pv_memmap_nr:
	.long	0x0
	.balign	0x8
pv_memory_k:
	.quad	0x0				/* the end of the pfn == gfn range */
pv_memory_mfn_pages:
	.quad	0x0
pv_memory_m2p_pages:
	.quad	0x0
pv_memory_mfn_list:
	.quad	0x0				/* physical */
pv_memory_pfns:
	.quad	0x0				/* R: the pfn space's size */
pv_memory_first:
	.quad	0x0				/* T: the first pfn taken */
pv_memory_pool:
	.quad	0x0				/* the next page of the pool (physical) */
pv_memory_l1_pages:
	.quad	0x0				/* N: the M2P's tables, the direct map's GiB */
pv_memory_m2p:
	.quad	0x0				/* the M2P's run (physical) */
pv_memory_taken_end:
	.quad	0x0				/* E: the end of the frames taken */
pv_directmap_frames:
	.quad	{DIRECTMAP_FRAMES}		/* the direct map's end: what the handlers reach */
pv_msg_no_ram:
	.byte	{MSG_PV_NO_RAM_BYTES}, 0x0
pv_msg_no_room:
	.byte	{MSG_PV_NO_ROOM_BYTES}, 0x0
pv_msg_too_much:
	.byte	{MSG_PV_TOO_MUCH_BYTES}, 0x0
