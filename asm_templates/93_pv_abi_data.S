/*
 * Data of the PV ABI layer (34_pv_abi.S): the state its handlers keep, its tables
 * and the stub it writes into the hypercall page. Written by the handlers at run
 * time, never executed in place (the stub runs as the copies in the page).
 * Entry/exit state: not applicable (data).
 */
	.balign	0x8
pv_abi_vm_assist:
	.quad	0x0				/* VMASST_TYPE_* bits the kernel enabled */
pv_abi_vmasst_valid:
	.quad	{VMASST_PV64_VALID}		/* the types Xen accepts from a 64-bit PV guest */
pv_abi_kernel_ss:
	.quad	0x0				/* stack_switch's ss and sp */
pv_abi_kernel_sp:
	.quad	0x0
pv_abi_iopl:
	.quad	0x0				/* physdev_op set_iopl's iopl */
/* what each rewritten slot gets (its first bytes; the rest of the 32 stays as Xen
   wrote it): mov $N, %eax; jmp *target(%rip). The absolute target keeps the stub
   position-independent (the page and the shim may lie more than 2 GiB apart) and
   clobbers no register. pv_abi_install stores it as three quad words: from
   pv_abi_stub, pv_abi_stub_second and pv_abi_stub_last (its last 8 bytes). */
pv_abi_stub:
	.byte	{OPCODE_MOV_EAX_IMM32}
pv_abi_stub_nr:
	.long	0x0
	jmp	*pv_abi_stub_target(%rip)
pv_abi_stub_target:
	.quad	{SHIM_VIRT} + (pv_abi_dispatch - shim_start)
pv_abi_stub_end:
pv_abi_stub_second = pv_abi_stub + 0x8
pv_abi_stub_last = pv_abi_stub_end - 0x8
/* handler offsets from shim_start by hypercall number, 0 for none */
pv_abi_handlers:
	.word	{PV_ABI_HANDLERS}
/* the slots rewritten, in order */
pv_abi_slots:
	.byte	{PV_ABI_SLOTS}, {PV_ABI_END}
pv_abi_msg:
	.byte	{MSG_PV_ABI_UNHANDLED_BYTES}, 0x0
pv_abi_names:
	.byte	{PV_ABI_NAME_BYTES}, {PV_ABI_END}
