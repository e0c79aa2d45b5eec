/*
 * Traps, segments and callbacks of the PV ABI (--pv-abi; docs/pv-abi.md), for a
 * 64-bit PV kernel the shim runs at CPL 0 under PVH.
 *
 * Segments. A 64-bit PV kernel uses Xen's flat selectors (xen/include/public/
 * arch-x86/xen-x86_64.h), which live in the GDT entries Xen keeps from
 * FIRST_RESERVED_GDT_ENTRY on (arch-x86/xen.h). The shim's PV GDT, at
 * SHIM_GDT_VIRT in the hypervisor's PML4 slots, is FIRST_RESERVED_GDT_PAGE pages
 * for the kernel's own (the plan maps them all on one zero page; set_gdt maps the
 * kernel's frames there, as Xen does), then the page of the reserved entries: FLAT_RING3_CS64's entry is a DPL 0
 * 64-bit code segment, the CS the CPU runs the kernel with (0xe030, the RPL 0 form
 * Xen itself shows a kernel in its frames); FLAT_RING3_DS32's is a DPL 3 data
 * segment, so the RPL 3 selector 0xe02b loads into ds/es/fs/gs at CPL 0; SS stays
 * null, which 64-bit mode allows at CPL 0. The GDT's limit ends halfway through the
 * reserved page: its second half holds the trap table.
 *
 * Traps. set_trap_table records each vector's handler; every IDT gate leads to a
 * 4-byte stub (push the vector, jump) and pv_trap_common. At CPL 0 the CPU pushes its
 * frame where Xen's create_bounce_frame (xen/arch/x86/x86_64/entry.S) puts the PV
 * one for a kernel interrupted in kernel mode: the interrupted rsp rounded down to 16,
 * then ss, rsp, rflags, cs, rip and the error code. pv_trap_common turns it into
 * Xen's frame in place: rcx and r11 on top, cs = 0xe030 with the saved
 * evtchn_upcall_mask in bits 32-39, rflags.IF = !saved mask and IOPL clear, ss =
 * FLAT_KERNEL_SS; events masked when the trap_info asks (flags bit 2); CR2 into
 * vcpu_info.arch.cr2 on #PF (Xen's pv_inject_event, xen/arch/x86/pv/traps.c). The
 * kernel's handler runs with every other register as the trap left it. An int N
 * (N >= 32) whose trap_info DPL Xen would refuse becomes #GP((N << 3) | IDT).
 *
 * iret. The iret slot gets its own stub, Xen's: push rcx, r11, rax, so the stack
 * holds struct iret_context; pv_iret restores as Xen's do_iret
 * (xen/arch/x86/pv/iret.c): evtchn_upcall_mask = !rflags.IF, rcx and r11 unless
 * VGCF_in_syscall (then as sysret leaves them: rcx = rip, r11 = rflags), and returns
 * with a real iretq to the ring-0 code selector and a null SS. A kernel that returns
 * natively instead (Mini-OS: `orb $3` into the frame's cs and ss, then iretq) makes
 * the iretq fault: 0xe033 names a DPL 0 segment with RPL 3. The #GP path finds an
 * iretq at rip whose error code names that selector, rewrites the frame to 0xe030
 * and a null SS and resumes the iretq, which then stays in ring 0.
 *
 * Events. Once the kernel registers its event callback, Xen delivers upcalls as
 * UPCALL_VECTOR (HVM_PARAM_CALLBACK_IRQ), pending while evtchn_upcall_pending is
 * set. The real IF follows the kernel's virtual one (!evtchn_upcall_mask) where the
 * shim can see it change: iret and a native iretq restore the frame's, and
 * xen_version and sched_op (force_evtchn_callback, SCHEDOP_block) set it when events
 * are unmasked. An upcall that finds events masked returns with IF clear instead of
 * looping; the next of those entries lets it in. Before the callback is
 * registered, real interrupts stay off: frames show the virtual IF only.
 *
 * Entry state assumed: pv_traps_install: jumped to from install_hypercall_page after
 *   pv_abi_install, long mode, CPL 0, the shim's stack, the hypercall page at
 *   HCALL_PAGE_PHYS identity mapped. Handlers: as every handler of 34_pv_abi.S.
 *   Trap stubs: an IDT gate, at CPL 0 (the kernel or the shim).
 * Clobbered: pv_traps_install: rax, rcx, rdx, rsi, rdi, r8, r9, flags, GDTR, IDTR,
 *   CS, SS, DS, ES, EFER.SCE and (the CPU having NX) EFER.NXE, STAR, LSTAR,
 *   SFMASK. Handlers: rax (the result), flags.
 * Exit state guaranteed: pv_traps_install: the iret slot leads to pv_iret and a
 *   syscall to pv_syscall; the PV GDT and the IDT loaded, CS = the ring-0 code
 *   selector, SS = DS = ES = 0, and it returns to install_hypercall_page's caller.
 * Error path: a trap whose vector has no handler writes "shimgen: pv-abi: unhandled
 *   trap 0xNN at 0xRIP" on the debug port and halts (Xen crashes such a guest);
 *   an iret to user mode (cs with RPL 3) is not supported: a line, then halt.
 */
	.code64
/* before pv_abi_install rewrites them: Xen's own stubs of the calls the layer
   passes on (shim/pv_abi.py XEN_STUBS), kept in the GDT's reserved page past the
   GDT's limit; clobbers rcx, rsi, rdi */
pv_traps_save:
	movabs	$({HCALL_PAGE_PHYS} + {HC_XEN_VERSION} * {HYPERCALL_STUB_SIZE}), %rsi
	movabs	$({PV_XEN_STUBS_VIRT} + {XEN_VERSION_STUB_AT}), %rdi
	mov	${HYPERCALL_STUB_SIZE}, %ecx
	rep movsb
	movabs	$({HCALL_PAGE_PHYS} + {HC_SCHED_OP} * {HYPERCALL_STUB_SIZE}), %rsi
	movabs	$({PV_XEN_STUBS_VIRT} + {SCHED_OP_STUB_AT}), %rdi
	mov	${HYPERCALL_STUB_SIZE}, %ecx
	rep movsb
	movabs	$({HCALL_PAGE_PHYS} + {HC_GRANT_TABLE_OP} * {HYPERCALL_STUB_SIZE}), %rsi
	movabs	$({PV_XEN_STUBS_VIRT} + {GRANT_TABLE_OP_STUB_AT}), %rdi
	mov	${HYPERCALL_STUB_SIZE}, %ecx
	rep movsb				/* for 38_pv_grant.S */
	movabs	$({HCALL_PAGE_PHYS} + {HC_PHYSDEV_OP} * {HYPERCALL_STUB_SIZE}), %rsi
	movabs	$({PV_XEN_STUBS_VIRT} + {PHYSDEV_OP_STUB_AT}), %rdi
	mov	${HYPERCALL_STUB_SIZE}, %ecx
	rep movsb				/* for pv_physdev_op (34_pv_abi.S) */
	ret

pv_traps_install:
	/* the iret slot: its stub keeps rax, as Xen's does (pv_iret_stub) */
	movabs	$({HCALL_PAGE_PHYS} + {HC_IRET} * {HYPERCALL_STUB_SIZE}), %rdi
	mov	pv_iret_stub(%rip), %rax
	mov	%rax, (%rdi)
	mov	pv_iret_stub_second(%rip), %rax
	mov	%rax, (pv_iret_stub_second - pv_iret_stub)(%rdi)
	mov	pv_iret_stub_last(%rip), %rax
	mov	%rax, (pv_iret_stub_last - pv_iret_stub)(%rdi)
	/* every IDT gate: an interrupt gate into its vector's stub */
	movabs	${PV_IDT_VIRT}, %rdi
	lea	pv_trap_stubs(%rip), %rdx
	movabs	${IDT_GATE_FIXED}, %r9		/* selector, type, present */
	xor	%ecx, %ecx
pv_traps_gate:
	mov	%ecx, %eax
	shr	${STUB_GROUP_SHIFT}, %eax
	imul	${STUB_GROUP_SIZE}, %eax, %eax
	mov	%ecx, %r8d
	and	${STUB_GROUP_MASK}, %r8d
	lea	(%rax,%r8,{STUB_SIZE}), %rax
	add	%rdx, %rax			/* the stub */
	mov	%rax, %r8
	shr	$0x20, %r8
	mov	%r8, 0x8(%rdi)			/* offset bits 32-63 */
	mov	%eax, %r8d
	shr	${GATE_MID_SHIFT}, %r8d
	shl	${GATE_MID_AT}, %r8		/* offset bits 16-31 at 48-63 */
	movzwl	%ax, %eax			/* offset bits 0-15 */
	or	%r9, %rax
	or	%r8, %rax
	mov	%rax, (%rdi)
	add	${IDT_GATE_SIZE}, %rdi
	inc	%ecx
	cmp	${IDT_VECTORS}, %ecx
	jne	pv_traps_gate
	/* Xen's flat entries in the reserved page */
	movabs	$({PV_GDT_PAGE_VIRT} + {GDT_FLAT_OFFSET}), %rdi
	lea	pv_gdt_flat(%rip), %rsi
	mov	${GDT_FLAT_ENTRIES}, %ecx
	rep movsq
	/* a TSS (Xen's TSS entry) whose IST1, the shim's own stack, #DF runs on: the
	   kernel's stack is what failed, and a triple fault would say nothing */
	movabs	$({PV_GDT_PAGE_VIRT} + {GDT_TSS_OFFSET}), %rdi
	movabs	${TSS_DESC_LOW}, %rax
	mov	%rax, (%rdi)
	movabs	${TSS_DESC_HIGH}, %rax
	mov	%rax, 0x8(%rdi)
	movabs	$({PV_GDT_PAGE_VIRT} + {TSS_OFFSET} + {TSS_IST1}), %rdi
	movabs	${STACK_TOP_VIRT}, %rax
	mov	%rax, (%rdi)
	movabs	$({PV_IDT_VIRT} + {EXC_DF} * {IDT_GATE_SIZE} + {GATE_IST_AT}), %rdi
	movb	$0x1, (%rdi)
	lgdt	pv_gdt_descriptor(%rip)
	lidt	pv_idt_descriptor(%rip)
	mov	${TSS_SELECTOR}, %eax
	ltr	%ax
	pushq	${RING0_CS}
	lea	pv_traps_loaded(%rip), %rax
	push	%rax
	lretq
pv_traps_loaded:
	xor	%eax, %eax
	mov	%eax, %ss
	mov	%eax, %ds
	mov	%eax, %es
	/* a syscall from the kernel is a hypercall, as under Xen (pv_syscall); NX on
	   when the CPU has it, as Xen runs a PV guest (its PTEs may set bit 63) */
	push	%rbx
	mov	${CPUID_EXT_FEATURES}, %eax
	cpuid
	pop	%rbx
	mov	${EFER_SCE}, %esi
	bt	${CPUID_EXT_EDX_NX_BIT}, %edx
	jnc	pv_traps_efer
	or	${EFER_NXE}, %esi
pv_traps_efer:
	mov	${MSR_EFER}, %ecx
	rdmsr
	or	%esi, %eax
	wrmsr
	mov	${MSR_STAR}, %ecx
	xor	%eax, %eax
	mov	${RING0_CS}, %edx		/* STAR bits 32-47: syscall's CS */
	wrmsr
	mov	${MSR_LSTAR}, %ecx
	lea	pv_syscall(%rip), %rax
	mov	%rax, %rdx
	shr	$0x20, %rdx
	wrmsr
	mov	${MSR_SFMASK}, %ecx
	mov	${SYSCALL_RFLAGS_CLEARED}, %eax
	xor	%edx, %edx
	wrmsr
	ret

/* syscall from the kernel: a 64-bit PV kernel's hypercall instruction (Xen's own PV
   hypercall page holds `syscall` stubs; XTF's xsa-7 test issues one directly).
   The CPU left rcx = the return rip, r11 = rflags, IF, TF and DF clear, CS = the
   ring-0 code selector and SS = STAR's + 8, which names no descriptor: a null SS
   first, as everywhere in the shim. rax = the hypercall, which runs through the
   kernel's own page (PV-only ones reach the shim's handlers); back at the return
   rip with rcx and r11 as sysret leaves them. iret (its stub pushed
   struct iret_context before its syscall) goes straight to pv_iret; a number past
   the page's slots -ENOSYS. A return rip that is not canonical is Xen's XSA-7 case:
   the kernel gets #GP(0) reporting that rip, as the fetch there would raise. */
pv_syscall:
	push	%rax
	xor	%eax, %eax
	mov	%eax, %ss
	pop	%rax
	cmp	${HC_IRET}, %rax
	je	pv_iret
	push	%rcx
	push	%r11
	cmp	${HYPERCALL_SLOTS}, %rax
	jae	pv_syscall_enosys
	shl	${HYPERCALL_STUB_SHIFT}, %eax
	movabs	${HCALL_PAGE_VIRT}, %r11
	add	%rax, %r11
	call	*%r11
pv_syscall_back:
	pop	%r11
	pop	%rcx
	push	%rax
	mov	%rcx, %rax
	call	pv_traps_canonical
	pop	%rax
	jne	pv_syscall_gp
	pushq	$0x0				/* ss: null */
	push	%rsp
	addq	$0x8, (%rsp)			/* rsp: the kernel's */
	push	%r11				/* rflags */
	pushq	${RING0_CS}
	push	%rcx				/* rip */
	iretq
pv_syscall_enosys:
	movq	${NEG_ENOSYS}, %rax
	jmp	pv_syscall_back
/* the frame a CPU would push for #GP(0) at rip rcx, from the kernel's rsp rounded
   down to 16, then the trap path as if the IDT had been taken */
pv_syscall_gp:
	mov	%rax, pv_syscall_rax(%rip)
	mov	%rsp, %rax
	and	${FRAME_ALIGN_MASK}, %rsp
	pushq	$0x0				/* ss */
	push	%rax				/* rsp */
	push	%r11				/* rflags */
	pushq	${RING0_CS}
	push	%rcx				/* rip */
	pushq	$0x0				/* the error code */
	pushq	${EXC_GP}			/* as the vector's stub */
	mov	pv_syscall_rax(%rip), %rax
	jmp	pv_trap_common

/* One 4-byte stub a vector, STUB_GROUP of them and a jump to pv_trap_common a
   group: push $vector (sign-extended: pv_trap_common keeps its low byte), then a
   short jump to the group's end */
	.balign	0x8
pv_trap_stubs:
.set	pv_trap_vector, 0x0
.rept	{IDT_VECTORS} / {STUB_GROUP}
.rept	{STUB_GROUP}
	.byte	{OPCODE_PUSH_IMM8}, pv_trap_vector & {BYTE_MASK}, {OPCODE_JMP_REL8}, ({STUB_GROUP} - 0x1 - (pv_trap_vector & {STUB_GROUP_MASK})) * {STUB_SIZE}
.set	pv_trap_vector, pv_trap_vector + 0x1
.endr
	jmp	pv_trap_common
	.balign	0x8
.endr
pv_trap_stubs_end:

/* the stack: the vector, [error code], rip, cs, rflags, rsp, ss (the CPU's) */
pv_trap_common:
	xchg	%r11, (%rsp)			/* r11 in the PV frame's place */
	push	%rcx				/* rcx above it: Xen's frame top */
	movzbl	%r11b, %r11d			/* the vector */
	lea	{FRAME_RIP_SLOT}(%rsp), %rcx	/* rcx = the rip slot */
	bt	%r11, pv_trap_errcode_vectors(%rip)
	jnc	pv_trap_framed
	add	$0x8, %rcx			/* past the error code */
pv_trap_framed:
	push	%rax
	cmp	${EXC_DF}, %r11d		/* Xen never bounces one: it crashes the guest */
	je	pv_trap_unhandled
	cmp	${UPCALL_VECTOR}, %r11d
	je	pv_trap_upcall
	cmp	${FIRST_SOFTINT_VECTOR}, %r11d	/* only int N raises these at CPL 0 */
	jae	pv_trap_softint
	cmp	${EXC_UD}, %r11d
	je	pv_trap_ud
	cmp	${EXC_GP}, %r11d
	jne	pv_trap_lookup
	cmpq	${RING0_CS}, -0x8(%rcx)		/* #GP(selector): the flat code one */
	jne	pv_trap_lookup
	mov	(%rcx), %rax			/* a native iretq to the PV selectors? */
	call	pv_trap_code2_ok		/* REX.W, iretq */
	jc	pv_trap_lookup
	cmpw	${IRETQ_BYTES}, (%rax)
	je	pv_trap_iretq
pv_trap_lookup:
	movabs	${PV_TRAP_TABLE_VIRT}, %rax
	mov	(%rax,%r11,0x8), %rax		/* handler << 8 | trap_info flags */
	test	%rax, %rax
	jz	pv_trap_unhandled
pv_trap_bounce:					/* rax = handler << 8 | flags */
	push	%rdx
	movabs	${VCPU_INFO_VIRT}, %rdx
	cmp	${EXC_PF}, %r11d
	jne	pv_trap_mask
	mov	%cr2, %r11
	mov	%r11, {VI_CR2}(%rdx)
pv_trap_mask:
	movzbl	{VI_UPCALL_MASK}(%rdx), %r11d	/* saved_upcall_mask */
	test	${TI_FLAG_IF}, %al
	jz	pv_trap_cs
	movb	$0x1, {VI_UPCALL_MASK}(%rdx)
pv_trap_cs:
	movzwl	{FRAME_CS}(%rcx), %edx
	shl	$0x20, %r11
	or	%r11, %rdx
	mov	%rdx, {FRAME_CS}(%rcx)		/* cs, saved_upcall_mask at bit 32 */
	mov	{FRAME_RFLAGS}(%rcx), %rdx
	and	${NOT_IF_IOPL}, %rdx
	test	%r11, %r11
	jnz	pv_trap_rflags
	or	${EFLAGS_IF}, %rdx		/* IF = !saved_upcall_mask */
pv_trap_rflags:
	mov	%rdx, {FRAME_RFLAGS}(%rcx)
	movq	${FLAT_KERNEL_SS}, {FRAME_SS}(%rcx)
	sar	$0x8, %rax			/* the handler (canonical) */
	xchg	%rax, 0x8(%rsp)			/* into rax's place; rax back */
	pop	%rdx
	ret					/* into it, rsp = the frame's top */

/* int N, N >= FIRST_SOFTINT_VECTOR: the shim's gates let the kernel's int through
   whatever the DPL, so the check Xen makes (permit_softint in Xen's asm/regs.h: a
   kernel-mode int needs trap_info DPL >= 1) is made here. Allowed: to the handler,
   rip past the int. Refused: #GP with error code (N << 3) | IDT at the int, as
   Xen's do_general_protection leaves it, the frame given an error-code slot. */
pv_trap_softint:
	movabs	${PV_TRAP_TABLE_VIRT}, %rax
	mov	(%rax,%r11,0x8), %rax		/* handler << 8 | trap_info flags */
	test	${TI_DPL_MASK}, %al		/* DPL >= 1 (a handler: address 0 ends */
	jnz	pv_trap_bounce			/* the table, so flags come with one) */
	mov	(%rcx), %rax
	sub	${INT_IMM8_SIZE}, %rax		/* where the int would be */
	call	pv_trap_code2_ok
	jc	pv_trap_unhandled
	cmpb	${OPCODE_INT_IMM8}, (%rax)
	jne	pv_trap_unhandled		/* not an int: nothing else raises it */
	cmpb	%r11b, 0x1(%rax)
	jne	pv_trap_unhandled
	mov	%rax, (%rcx)			/* rip = the int */
	shl	${ERROR_CODE_INDEX_SHIFT}, %r11
	or	${ERROR_CODE_IDT}, %r11		/* the error code */
	pop	%rax				/* the saved rax, rcx and r11 one */
	xchg	%r11, 0x8(%rsp)			/* slot down, the error code in r11's */
	xchg	%r11, (%rsp)			/* place right below rip */
	push	%r11
	push	%rax
	mov	${EXC_GP}, %r11d
	jmp	pv_trap_lookup

/* Xen's event upcall (HVM_PARAM_CALLBACK_IRQ's vector): to the event callback,
   events masked, as Xen's bounce to event_callback_eip with TBF_INTERRUPT; while
   the kernel has them masked, back to where it was with IF clear in its frame, so
   the upcall Xen keeps pending waits for the next pv_events_sync instead of
   coming straight back */
pv_trap_upcall:
	movabs	${VCPU_INFO_VIRT}, %rax
	cmpb	$0x0, {VI_UPCALL_MASK}(%rax)
	jne	pv_trap_upcall_held
	mov	(pv_callbacks + {CALLBACK_EVENT} * 0x8)(%rip), %rax
	test	%rax, %rax
	jz	pv_trap_upcall_held
	shl	$0x8, %rax
	or	${TI_FLAG_IF}, %al
	jmp	pv_trap_bounce
pv_trap_upcall_held:
	andq	${NOT_IF}, {FRAME_RFLAGS}(%rcx)
	pop	%rax
	pop	%rcx
	pop	%r11
	iretq

/* #UD on Xen's forced emulation prefix before a cpuid (arch-x86/xen.h XEN_CPUID):
   the cpuid run here with the kernel's eax and ecx, and rip past it, as Xen's
   emulate_forced_invalid_op does (xen/arch/x86/pv/emul-inv-op.c) */
pv_trap_ud:
	mov	(%rcx), %rax
	call	pv_trap_xen_cpuid
	jne	pv_trap_lookup
	addq	${XEN_CPUID_SIZE}, (%rcx)
	pop	%rax
	pop	%rcx
	cpuid
	pop	%r11
	iretq

/* rax = an address: ZF set when XEN_CPUID's bytes lie there, each of them mapped;
   flags only */
pv_trap_xen_cpuid:
	push	%rsi
	mov	${XEN_CPUID_SIZE}, %esi
	call	pv_trap_code_ok
	pop	%rsi
	jc	pv_trap_xen_cpuid_no
	cmpl	${XEN_CPUID_HEAD}, (%rax)	/* its first 4 bytes, then its last 4 */
	jne	pv_trap_xen_cpuid_done
	cmpl	${XEN_CPUID_TAIL}, {XEN_CPUID_TAIL_AT}(%rax)
	ret
pv_trap_xen_cpuid_no:
	test	%rsp, %rsp			/* ZF clear */
pv_trap_xen_cpuid_done:
	ret

/* rax = an address, esi = a length: CF clear when the bytes there are mapped, so the
   trap path may read the code around a fault (a non-canonical or unmapped rip
   refused: pv_abi_guest_ok); flags only. pv_trap_code2_ok: the same for 2 bytes
   (an int imm8, a REX.W iretq) */
pv_trap_code2_ok:
	push	%rsi
	mov	${INT_IMM8_SIZE}, %esi
	call	pv_trap_code_ok
	pop	%rsi
	ret
pv_trap_code_ok:
	push	%rax
	push	%rdi
	push	%rdx
	mov	%rax, %rdi
	mov	${PTE_PRESENT}, %edx
	call	pv_abi_guest_ok
	pop	%rdx
	pop	%rdi
	pop	%rax
	ret

/* #GP on a native iretq: the frame it pops, at the interrupted rsp, gets the ring-0
   code selector and a null SS, and the iretq runs again */
pv_trap_iretq:
	mov	{FRAME_RSP}(%rcx), %rax
	movq	${RING0_CS}, {FRAME_CS}(%rax)
	movq	$0x0, {FRAME_SS}(%rax)
	cmpb	$0x0, pv_events_on(%rip)
	jne	pv_trap_iretq_go			/* IF as the kernel's frame says */
	andq	${NOT_IF}, {FRAME_RFLAGS}(%rax)
pv_trap_iretq_go:
	pop	%rax
	pop	%rcx
	pop	%r11
	add	$0x8, %rsp			/* the error code */
	iretq

/* no handler: the vector and rip on the debug port, then halt */
pv_trap_unhandled:
	cld
	mov	(%rcx), %rdi			/* rip */
	lea	pv_trap_msg(%rip), %rsi
	call	pv_abi_puts
	mov	%r11, %rax
	mov	${VECTOR_HEX_DIGITS}, %ecx
	call	pv_traps_put_hex
	lea	pv_trap_msg_at(%rip), %rsi
	call	pv_abi_puts
	mov	%rdi, %rax
	mov	${ADDRESS_HEX_DIGITS}, %ecx
	call	pv_traps_put_hex
	mov	${NEWLINE}, %al
	outb	%al, %dx
	/* Xen crashes such a guest: so does the shim (SCHEDOP_shutdown, crash, through
	   Xen's own stub), and halts should that return */
	call	pv_traps_drop_breakpoints
	lea	pv_crash_reason(%rip), %rsi
	mov	${SCHEDOP_SHUTDOWN}, %edi
	movabs	$({PV_XEN_STUBS_VIRT} + {SCHED_OP_STUB_AT}), %rax
	call	*%rax
	jmp	pvh_halt

/* A kernel that ends drops the breakpoints it armed (set_debugreg writes the
   vCPU's own DR7 under PVH, where under PV Xen owns them and drops them with the
   vCPU): measured under Xen 4.17 in QEMU TCG, a domU that crashed with DR7 armed
   (XTF's xsa-260) took the whole machine down when the next domU started.
   Clobbers rax. */
pv_traps_drop_breakpoints:
	mov	${DR7_ONES}, %eax
	mov	%rax, %db7
	ret

/* rax = a value, ecx = its hex digits to write on the debug port, highest first;
   clobbers rax, rcx, rdx, rsi, flags */
pv_traps_put_hex:
	mov	${DEBUGCON_PORT}, %edx
	mov	%rax, %rsi
	shl	${HEX_DIGIT_SHIFT}, %ecx		/* digits to bits */
pv_traps_put_digit:
	sub	${HEX_DIGIT_BITS}, %ecx
	mov	%rsi, %rax
	shr	%cl, %rax
	and	${HEX_DIGIT_MASK}, %eax
	add	${ASCII_ZERO}, %al
	cmp	${ASCII_NINE}, %al
	jbe	pv_traps_put_out
	add	${ASCII_HEX_GAP}, %al
pv_traps_put_out:
	outb	%al, %dx
	test	%ecx, %ecx
	jnz	pv_traps_put_digit
	ret

/* rax = an address: ZF set when it is canonical; flags only */
pv_traps_canonical:
	push	%rax
	shl	${CANONICAL_SHIFT}, %rax
	sar	${CANONICAL_SHIFT}, %rax
	cmp	(%rsp), %rax
	pop	%rax
	ret

/* iret: rsp = struct iret_context (the iret stub pushed rcx, r11, rax) */
pv_iret:
	testb	${SELECTOR_RPL_MASK}, {IC_CS}(%rsp)
	jnz	pv_iret_to_user
	movabs	${VCPU_INFO_VIRT}, %rax
	btl	${EFLAGS_IF_BIT}, {IC_RFLAGS}(%rsp)
	setnc	{VI_UPCALL_MASK}(%rax)		/* mask = !rflags.IF */
	movq	${RING0_CS}, {IC_CS}(%rsp)
	movq	$0x0, {IC_SS}(%rsp)
	mov	{IC_RFLAGS}(%rsp), %rax
	and	${IRET_EFLAGS_KEPT}, %eax
	or	${EFLAGS_MBS}, %eax
	cmpb	$0x0, pv_events_on(%rip)
	jne	pv_iret_flags			/* real IF = the virtual one */
	and	${NOT_IF}, %eax
pv_iret_flags:
	mov	%rax, {IC_RFLAGS}(%rsp)
	testl	${VGCF_IN_SYSCALL}, {IC_FLAGS}(%rsp)
	jnz	pv_iret_sysret
	pop	%rax
	pop	%r11
	pop	%rcx
	add	$0x8, %rsp			/* flags */
	iretq
pv_iret_sysret:
	mov	{IC_RIP}(%rsp), %rcx
	mov	{IC_RFLAGS}(%rsp), %r11
	pop	%rax
	add	$({IC_RIP} - {IC_R11}), %rsp	/* r11, rcx, flags */
	iretq
pv_iret_to_user:
	cld
	lea	pv_iret_user_msg(%rip), %rsi
	call	pv_abi_puts
	jmp	pvh_halt

/* set_trap_table(traps): each trap_info up to the one with address 0 recorded at
   its vector, as Xen's do_set_trap_table (xen/arch/x86/pv/callback.c), each entry
   checked before it is read (-EFAULT), a non-canonical address -EINVAL (entries
   before it stay recorded, as in Xen); NULL clears every vector. Xen's loop has no
   bound (it continues itself); the shim stops after TRAP_TABLE_MAX entries
   (-E2BIG) so an unterminated table in mapped memory cannot keep it for long. */
pv_set_trap_table:
	push	%rdi
	push	%rsi
	push	%rdx
	push	%rcx
	push	%r8
	movabs	${PV_TRAP_TABLE_VIRT}, %rcx
	test	%rdi, %rdi
	jz	pv_set_trap_table_clear
	mov	${TRAP_TABLE_MAX}, %r8d
pv_set_trap_table_entry:
	mov	${TRAP_INFO_SIZE}, %esi
	mov	${PTE_PRESENT}, %edx
	call	pv_abi_guest_ok
	movq	${NEG_EFAULT}, %rax
	jc	pv_set_trap_table_done
	mov	{TI_ADDRESS}(%rdi), %rax
	test	%rax, %rax
	jz	pv_set_trap_table_done		/* rax = 0 */
	call	pv_traps_canonical
	movq	${NEG_EINVAL}, %rax
	jne	pv_set_trap_table_done
	mov	{TI_ADDRESS}(%rdi), %rax
	shl	$0x8, %rax
	mov	{TI_FLAGS}(%rdi), %al
	movzbl	{TI_VECTOR}(%rdi), %edx
	mov	%rax, (%rcx,%rdx,0x8)
	add	${TRAP_INFO_SIZE}, %rdi
	dec	%r8d
	jnz	pv_set_trap_table_entry
	movq	${NEG_E2BIG}, %rax
	jmp	pv_set_trap_table_done
pv_set_trap_table_clear:
	mov	%rcx, %rdi
	mov	${IDT_VECTORS}, %ecx
	xor	%eax, %eax
	cld
	rep stosq
pv_set_trap_table_done:
	pop	%r8
	pop	%rcx
	pop	%rdx
	pop	%rsi
	pop	%rdi
	ret

/* set_callbacks(event, failsafe, syscall): each canonical address recorded, with
   events left on for failsafe and syscall (CALLBACKF flags 0); always 0, as Xen's
   do_set_callbacks */
pv_set_callbacks:
	push	%rcx
	lea	pv_callbacks(%rip), %rcx
	mov	%rdi, %rax
	call	pv_traps_canonical
	jne	pv_set_callbacks_failsafe
	mov	%rax, ({CALLBACK_EVENT} * 0x8)(%rcx)
	call	pv_events_register
pv_set_callbacks_failsafe:
	mov	%rsi, %rax
	call	pv_traps_canonical
	jne	pv_set_callbacks_syscall
	mov	%rax, ({CALLBACK_FAILSAFE} * 0x8)(%rcx)
	btrq	${CALLBACK_FAILSAFE}, pv_callback_masks(%rip)
pv_set_callbacks_syscall:
	mov	%rdx, %rax
	call	pv_traps_canonical
	jne	pv_set_callbacks_done
	mov	%rax, ({CALLBACK_SYSCALL} * 0x8)(%rcx)
	btrq	${CALLBACK_SYSCALL}, pv_callback_masks(%rip)
pv_set_callbacks_done:
	pop	%rcx
	jmp	pv_abi_ok

/* callback_op(cmd, arg), as Xen's do_callback_op: register records event,
   failsafe, syscall, sysenter and syscall32 (with CALLBACKF_mask_events) and puts
   the NMI callback in the trap table (events masked); unregister refuses the
   recorded types (-EINVAL) and clears the NMI one; an unknown type or cmd -ENOSYS,
   an unreadable argument -EFAULT, a non-canonical address -EINVAL */
pv_callback_op:
	push	%rdi
	push	%rsi
	push	%rdx
	push	%rcx
	mov	%rsi, %rcx			/* the argument */
	mov	${CALLBACK_UNREGISTER_SIZE}, %esi
	cmp	${CALLBACKOP_UNREGISTER}, %edi
	je	pv_callback_read
	mov	${CALLBACK_REGISTER_SIZE}, %esi
	cmp	${CALLBACKOP_REGISTER}, %edi
	movq	${NEG_ENOSYS}, %rax
	jne	pv_callback_done
pv_callback_read:
	mov	%rcx, %rdi
	mov	${PTE_PRESENT}, %edx
	call	pv_abi_guest_ok
	jc	pv_callback_efault
	movzwl	{CB_TYPE}(%rdi), %ecx
	cmp	${CALLBACK_UNREGISTER_SIZE}, %esi	/* which cmd: its size says */
	je	pv_callback_unregister
	mov	{CB_ADDRESS}(%rdi), %rax
	call	pv_traps_canonical
	jne	pv_callback_einval
	cmp	${CALLBACK_NMI}, %ecx
	je	pv_callback_nmi
	call	pv_callback_recorded
	jnc	pv_callback_enosys
	lea	pv_callbacks(%rip), %rdx
	mov	%rax, (%rdx,%rcx,0x8)
	cmp	${CALLBACK_EVENT}, %ecx
	jne	pv_callback_flags
	call	pv_events_register
pv_callback_flags:
	btr	%rcx, pv_callback_masks(%rip)
	testw	${CALLBACKF_MASK_EVENTS}, {CB_FLAGS}(%rdi)
	jz	pv_callback_ok
	bts	%rcx, pv_callback_masks(%rip)
	jmp	pv_callback_ok
pv_callback_nmi:				/* Xen: trap_ctxt[NMI], events masked */
	shl	$0x8, %rax
	or	${TI_FLAG_IF}, %al
pv_callback_nmi_store:
	movabs	${PV_TRAP_TABLE_VIRT}, %rdx
	mov	%rax, ({EXC_NMI} * 0x8)(%rdx)
	jmp	pv_callback_ok
pv_callback_unregister:
	xor	%eax, %eax
	cmp	${CALLBACK_NMI}, %ecx
	je	pv_callback_nmi_store
	call	pv_callback_recorded
	jc	pv_callback_einval
pv_callback_enosys:
	movq	${NEG_ENOSYS}, %rax
	jmp	pv_callback_done
pv_callback_efault:
	movq	${NEG_EFAULT}, %rax
	jmp	pv_callback_done
pv_callback_einval:
	movq	${NEG_EINVAL}, %rax
	jmp	pv_callback_done
pv_callback_ok:
	xor	%eax, %eax
pv_callback_done:
	pop	%rcx
	pop	%rdx
	pop	%rsi
	pop	%rdi
	ret

/* ecx = a CALLBACKTYPE_: CF set when it is one the shim records; clobbers edx */
pv_callback_recorded:
	cmp	${CALLBACK_SLOTS}, %ecx
	jae	pv_callback_recorded_done	/* CF clear */
	mov	${CALLBACK_RECORDED}, %edx
	bt	%ecx, %edx
pv_callback_recorded_done:
	ret

/* set_gdt(frame_list, entries), as Xen's do_set_gdt (xen/arch/x86/pv/
   descriptor-tables.c): entries above FIRST_RESERVED_GDT_ENTRY -EINVAL, an
   unreadable list -EFAULT, a frame outside the direct map or a descriptor Xen's
   check_descriptor refuses -EINVAL. As Xen, each frame's descriptors are checked
   and fixed in the frame (present data segments get DPL 3, as Xen gives every
   descriptor of a 64-bit PV guest: the kernel's RPL 3 selectors load at CPL 0)
   before the GDT changes; then the GDT's first pages map the frames, writable, and
   the rest the zero page, read-only (Xen's pv_set_gdt and pv_destroy_gdt). */
pv_set_gdt:
	push	%rdi
	push	%rsi
	push	%rdx
	push	%rcx
	push	%r8
	push	%r9
	cmp	${FIRST_RESERVED_GDT_ENTRY}, %esi
	ja	pv_set_gdt_einval
	mov	%esi, %r8d			/* an unsigned int */
	add	${GDT_ENTRIES_PER_PAGE_MASK}, %r8d
	shr	${GDT_PAGE_ENTRIES_SHIFT}, %r8d	/* frames */
	lea	(,%r8,0x8), %rsi
	mov	${PTE_PRESENT}, %edx
	call	pv_abi_guest_ok
	jc	pv_set_gdt_efault
	mov	%rdi, %rsi			/* the frame list */
	xor	%r9d, %r9d
pv_set_gdt_check:
	cmp	%r8d, %r9d
	je	pv_set_gdt_mapped
	mov	(%rsi,%r9,0x8), %rax
	call	pv_gdt_frame
	jc	pv_set_gdt_einval
	mov	${GDT_PAGE_ENTRIES}, %ecx
pv_set_gdt_check_entry:
	mov	(%rax), %rdx
	call	pv_gdt_desc_ok
	jc	pv_set_gdt_einval
	call	pv_gdt_desc_fix
	add	$0x8, %rax
	dec	%ecx
	jnz	pv_set_gdt_check_entry
	inc	%r9d
	jmp	pv_set_gdt_check
pv_set_gdt_mapped:
	xor	%r9d, %r9d
pv_set_gdt_map:
	mov	%r9, %rdi
	shl	${PAGE_SHIFT}, %rdi
	movabs	${SHIM_GDT_VIRT}, %rax
	add	%rax, %rdi			/* the GDT's page r9 */
	call	pv_abi_walk			/* its L1 entry: the plan maps it so */
	jc	pv_set_gdt_einval
	cmp	${PAGE_SHIFT}, %cl
	jne	pv_set_gdt_einval
	movabs	${PV_ZERO_PTE}, %rdx
	cmp	%r8d, %r9d
	jae	pv_set_gdt_pte
	mov	(%rsi,%r9,0x8), %rdx
	shl	${PAGE_SHIFT}, %rdx
	or	${PTE_PRESENT_WRITE}, %rdx
pv_set_gdt_pte:
	mov	%rdx, (%rax)
	invlpg	(%rdi)
	inc	%r9d
	cmp	${FIRST_RESERVED_GDT_PAGE}, %r9d
	jne	pv_set_gdt_map
	xor	%eax, %eax
	jmp	pv_set_gdt_done
pv_set_gdt_efault:
	movq	${NEG_EFAULT}, %rax
	jmp	pv_set_gdt_done
pv_set_gdt_einval:
	movq	${NEG_EINVAL}, %rax
pv_set_gdt_done:
	pop	%r9
	pop	%r8
	pop	%rcx
	pop	%rdx
	pop	%rsi
	pop	%rdi
	ret

/* rax = the address of a descriptor check_descriptor took: a present data segment
   gets DPL 3 there; flags only */
pv_gdt_desc_fix:
	push	%rdx
	mov	{DESC_HIGH}(%rax), %edx		/* bits 32-63: P, S, code, DPL */
	and	${DESC_P_S_CODE_HIGH}, %edx
	cmp	${DESC_P_S_HIGH}, %edx		/* present data */
	jne	pv_gdt_desc_fixed
	orl	${DESC_DPL3_HIGH}, {DESC_HIGH}(%rax)
pv_gdt_desc_fixed:
	pop	%rdx
	ret

/* rax = a frame number: rax = its direct-map address, CF set (rax undefined) when
   it lies outside the direct map; flags and rax only */
pv_gdt_frame:
	cmp	pv_directmap_frames(%rip), %rax
	cmc
	jc	pv_gdt_frame_done
	shl	${PAGE_SHIFT}, %rax
	push	%rdx
	movabs	${SHIM_DIRECTMAP_VIRT}, %rdx
	add	%rdx, %rax			/* CF clear: below 2^64 */
	pop	%rdx
pv_gdt_frame_done:
	ret

/* rdx = a descriptor: CF set when Xen's check_descriptor would refuse it for the
   shim: a present system descriptor of any type but 0 (Xen also takes call gates,
   rewritten to fault into its emulation, which the shim does not have); clobbers
   rdx */
pv_gdt_desc_ok:
	bt	${DESC_P_BIT}, %rdx
	jnc	pv_gdt_desc_good
	bt	${DESC_S_BIT}, %rdx
	jc	pv_gdt_desc_good
	shr	${DESC_TYPE_SHIFT}, %rdx
	test	${DESC_TYPE_MASK}, %dl
	jz	pv_gdt_desc_good
	stc
	ret
pv_gdt_desc_good:
	clc
	ret

/* update_descriptor(maddr, desc), as Xen's do_update_descriptor: maddr 8-byte
   aligned in a frame of the direct map and desc one check_descriptor takes, else
   -EINVAL; written to the frame (a data segment with DPL 3, as check_descriptor
   fixes it), which the GDT maps when it is one of its frames */
pv_update_descriptor:
	test	${DESC_ALIGN_MASK}, %dil
	jnz	pv_abi_einval
	push	%rdx
	mov	%rsi, %rdx
	call	pv_gdt_desc_ok
	pop	%rdx
	jc	pv_abi_einval
	mov	%rdi, %rax
	shr	${PAGE_SHIFT}, %rax
	call	pv_gdt_frame
	jc	pv_abi_einval
	push	%rcx
	mov	%edi, %ecx
	and	${PAGE_OFFSET_MASK}, %ecx
	add	%rcx, %rax			/* the descriptor, in the direct map */
	mov	%rsi, (%rax)
	call	pv_gdt_desc_fix
	pop	%rcx
	jmp	pv_abi_ok

/* xen_version and sched_op: Xen's own stubs (saved by pv_traps_save), then
   pv_events_sync, so a PV kernel's force_evtchn_callback (xen_version) gets its
   pending event. Xen may clobber the argument registers, as its stubs may.
   SCHEDOP_block as PV's (xen/common/sched/core.c vcpu_block_enable_events): events
   unmasked, and back at once when one is pending. With events on the upcall
   vector, the upcall must not reach the kernel between the unmask and the block:
   its callback would take the event, and the vCPU would then block with nothing
   left to wake it. So: interrupts off while unmasking and looking at
   evtchn_upcall_pending; nothing pending, sti; hlt. The STI shadow keeps the
   upcall out up to the hlt, and Xen's hvm_hlt, run once the hlt is past (the
   shadow gone), blocks the vCPU only while no event is pending with IF set. The
   upcall then comes in right after the hlt and goes to the kernel's callback, as a
   PV kernel gets it on its way back from the block. Without the vector (no event
   callback yet), Xen's own SCHEDOP_block. Returns 0. */
pv_xen_version:
	movabs	$({PV_XEN_STUBS_VIRT} + {XEN_VERSION_STUB_AT}), %rax
	call	*%rax
	jmp	pv_events_sync
pv_sched_op:
	cmp	${SCHEDOP_SHUTDOWN}, %edi
	je	pv_sched_op_shutdown
	cmp	${SCHEDOP_BLOCK}, %edi
	jne	pv_sched_op_xen
	movabs	${VCPU_INFO_VIRT}, %rax
	cmpb	$0x0, pv_events_on(%rip)
	jne	pv_sched_op_block
	movb	$0x0, {VI_UPCALL_MASK}(%rax)
	jmp	pv_sched_op_xen
pv_sched_op_block:
	cli
	movb	$0x0, {VI_UPCALL_MASK}(%rax)
	cmpb	$0x0, {VI_UPCALL_PENDING}(%rax)
	jne	pv_sched_op_woken
	sti
	hlt
pv_sched_op_woken:
	xor	%eax, %eax
	jmp	pv_events_sync
pv_sched_op_shutdown:			/* say so: a domU's console may not work yet */
	push	%rcx
	push	%rdx
	push	%rsi
	push	%rdi
	mov	%rsi, %rdi
	mov	${SHUTDOWN_REASON_SIZE}, %esi
	mov	${PTE_PRESENT}, %edx
	call	pv_abi_guest_ok
	jc	pv_sched_op_said			/* Xen answers -EFAULT */
	mov	(%rdi), %edi			/* the reason */
	cld
	lea	pv_shutdown_msg(%rip), %rsi
	call	pv_abi_puts
	mov	%edi, %eax
	mov	${VECTOR_HEX_DIGITS}, %ecx
	call	pv_traps_put_hex
	mov	${NEWLINE}, %al
	outb	%al, %dx
	cmp	${SHUTDOWN_SUSPEND}, %edi	/* a suspended kernel resumes */
	je	pv_sched_op_said
	call	pv_traps_drop_breakpoints
pv_sched_op_said:
	pop	%rdi
	pop	%rsi
	pop	%rdx
	pop	%rcx
pv_sched_op_xen:
	movabs	$({PV_XEN_STUBS_VIRT} + {SCHED_OP_STUB_AT}), %rax
	call	*%rax
/* events on with Xen and unmasked by the kernel: IF set, so an upcall Xen holds
   comes in (right after the instruction that follows); flags only */
pv_events_sync:
	cmpb	$0x0, pv_events_on(%rip)
	je	pv_events_sync_done
	push	%rax
	movabs	${VCPU_INFO_VIRT}, %rax
	cmpb	$0x0, {VI_UPCALL_MASK}(%rax)
	pop	%rax
	jne	pv_events_sync_done
	sti
pv_events_sync_done:
	ret

/* the kernel registered its event callback: have Xen deliver upcalls as
   UPCALL_VECTOR (HVMOP_set_param HVM_PARAM_CALLBACK_IRQ, vector type: pending
   while evtchn_upcall_pending is set, no EOI), once; events count as on only when
   Xen took it. Every register kept but the flags. */
pv_events_register:
	cmpb	$0x0, pv_events_on(%rip)
	jne	pv_events_register_done
	push	%rax
	push	%rcx
	push	%rdx
	push	%rsi
	push	%rdi
	push	%r8
	push	%r10
	push	%r11
	lea	pv_events_param(%rip), %rsi
	movw	${DOMID_SELF}, {HP_DOMID}(%rsi)
	movl	${HVM_PARAM_CALLBACK_IRQ}, {HP_INDEX}(%rsi)
	movabs	${CALLBACK_VECTOR_VALUE}, %rax
	mov	%rax, {HP_VALUE}(%rsi)
	mov	${HVMOP_SET_PARAM}, %edi
	call	*hcall_hvm_op(%rip)
	test	%rax, %rax
	jnz	pv_events_register_refused
	movb	$0x1, pv_events_on(%rip)
pv_events_register_refused:
	pop	%r11
	pop	%r10
	pop	%r8
	pop	%rdi
	pop	%rsi
	pop	%rdx
	pop	%rcx
	pop	%rax
pv_events_register_done:
	ret
pv_traps_end:
