/*
 * Data of the start-info shim only: the message of its hvm_start_info range check
 * and the addresses of the hypercall stubs its PVH path calls (40_start_info.S; an
 * indirect call through them is shorter than loading a 64-bit address each time).
 * Entry/exit state: not applicable (data).
 */
	.balign	0x8
hcall_memory_op:
	.quad	{HCALL_MEMORY_OP}
hcall_hvm_op:
	.quad	{HCALL_HVM_OP}
msg_out_of_range:
	.byte	{MSG_OUT_OF_RANGE_BYTES}, 0x0
