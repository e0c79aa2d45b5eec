/*
 * Data of the start-info and hvm-start-info shims: the kernel entry pointer, the
 * GDT, the start_info magic and the error messages. Read only at boot; nothing from
 * shim_data on is executed (inspect and diff disassemble the code before it only).
 * The data start 8-byte aligned, with the entry pointer (the padding before them
 * ends the code and is never executed). Entry/exit state: not applicable (data).
 */
	.balign	0x8
shim_data:
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
msg_wrong_mode:
	.byte	{MSG_WRONG_MODE_BYTES}, 0x0
