/*
 * Data of the PV ABI's traps, segments and callbacks (36_pv_traps.S): the callbacks
 * recorded, the tables pv_traps_install loads and the iret slot's stub. The IDT, the GDT and the trap table live in the layer's
 * reserved pages (shimgen/shim/pv_abi.py RESERVED_PAGES), zeroed by the loader.
 * Entry/exit state: not applicable (data).
 */
	.balign	0x8
pv_callbacks:
	.fill	{CALLBACK_SLOTS}, 0x8, 0x0	/* by CALLBACKTYPE_: the address */
pv_callback_masks:
	.quad	0x0				/* by CALLBACKTYPE_: CALLBACKF_mask_events */
pv_events_param:
	.fill	{HVM_PARAM_SIZE}, 0x1, 0x0	/* pv_events_register's xen_hvm_param */
pv_crash_reason:
	.long	{SHUTDOWN_CRASH}		/* struct sched_shutdown */
pv_events_on:
	.byte	0x0				/* Xen delivers upcalls as UPCALL_VECTOR */
	.balign	0x8
pv_syscall_rax:
	.quad	0x0				/* pv_syscall_gp's, events off */
	.balign	0x8
/* a bit per vector: those whose exception pushes an error code */
pv_trap_errcode_vectors:
	.quad	{EXC_ERRCODE_MASK}
	.fill	{EXC_BITMAP_REST_QUADS}, 0x8, 0x0
/* FLAT_RING3_CS32, FLAT_RING3_DS32, FLAT_RING3_CS64's entries, in that order */
pv_gdt_flat:
	.quad	{GDT_CODE32_DPL3}, {GDT_DATA_DPL3}, {GDT_CODE64}
pv_gdt_descriptor:
	.word	{PV_GDT_LIMIT}
	.quad	{SHIM_GDT_VIRT}
pv_idt_descriptor:
	.word	{IDT_VECTORS} * {IDT_GATE_SIZE} - 0x1
	.quad	{PV_IDT_VIRT}
/* the iret slot's first bytes, Xen's frame (rcx, r11, rax pushed) and a jump to
   pv_iret; pv_traps_install stores it as three quad words, the last overlapping */
pv_iret_stub:
	push	%rcx
	push	%r11
	push	%rax
	jmp	*pv_iret_stub_target(%rip)
pv_iret_stub_target:
	.quad	{SHIM_VIRT} + (pv_iret - shim_start)
pv_iret_stub_end:
pv_iret_stub_second = pv_iret_stub + 0x8
pv_iret_stub_last = pv_iret_stub_end - 0x8
pv_trap_msg:
	.byte	{MSG_PV_TRAP_UNHANDLED_BYTES}, 0x0
pv_trap_msg_at:
	.byte	{MSG_PV_TRAP_AT_BYTES}, 0x0
pv_shutdown_msg:
	.byte	{MSG_PV_SHUTDOWN_BYTES}, 0x0
pv_iret_user_msg:
	.byte	{MSG_PV_IRET_USER_BYTES}, 0x0
pv_traps_data_end:
