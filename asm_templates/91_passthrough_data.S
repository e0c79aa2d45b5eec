/*
 * Data of the pvh-passthrough shim: the kernel's own PVH entry (physical, read by
 * a 32-bit indirect jump) and the error message. Read only at boot; nothing here
 * is executed. Entry/exit state: not applicable (data).
 */
shim_data:
	.balign	0x8
kernel_entry_ptr:
	.long	{KERNEL_ENTRY}
msg_bad_magic:
	.byte	{MSG_BAD_MAGIC_BYTES}
msg_bad_magic_end:
	.byte	0x0
