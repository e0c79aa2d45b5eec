/*
 * Data of the start-info shim: the kernel entry pointer, the GDT, the start_info
 * magic and the error message. Read only at boot; nothing here is executed.
 * Entry/exit state: not applicable (data).
 */
	.balign	0x8
kernel_entry_ptr:
	.quad	{KERNEL_ENTRY}
gdt:
	.quad	0x0
	.quad	{GDT_CODE64}
	.quad	{GDT_DATA}
gdt_end:
gdt_descriptor:
	.word	gdt_end - gdt - 0x1
	.quad	{SHIM_PHYS} + (gdt - shim_start)
si_magic:
	.byte	{SI_MAGIC_BYTES}
si_magic_end:
msg_bad_magic:
	.byte	{MSG_BAD_MAGIC_BYTES}
msg_bad_magic_end:
	.byte	0x0
