/*
 * Data of the start-info shim only: the message of its hvm_start_info range check
 * (40_start_info.S). Entry/exit state: not applicable (data).
 */
msg_out_of_range:
	.byte	{MSG_OUT_OF_RANGE_BYTES}, 0x0
