/*
 * Single polyglot entry (--single-entry): ENTRY, PHYS32_ENTRY and e_entry all point
 * here. The same bytes run as 64-bit code (Xen PV) and as 32-bit code (PVH) and
 * branch apart on the one byte the two modes decode differently.
 *
 * Needs: the shim at virtual == physical (the relative jumps below land on the same
 *   bytes either way) and below 4 GiB (PHYS32_ENTRY is a u32); the planner checks.
 * Entry state assumed: Xen PV64 (long mode, CPL 3, rsi = start_info, rsp = Xen's
 *   stack) or PVH (32-bit flat protected mode, paging off, ebx = hvm_start_info).
 * Clobbered: eax (rax in 64-bit mode), flags.
 * Exit state guaranteed: 64-bit mode continues at pv_checked, 32-bit mode at
 *   pvh_checked (the entries past their own mode guards, which these bytes make
 *   redundant), every other register as the loader set it.
 * The bytes, and how each mode decodes them:
 *   31 c0        xor %eax,%eax     both modes: eax = 0 (64-bit: all of rax = 0)
 *   48           32-bit: dec %eax  -> eax = 0xffffffff
 *                64-bit: REX.W, a prefix of the next instruction
 *   85 c0        32-bit: test %eax,%eax  -> ZF = 0 (eax is not 0)
 *                64-bit: with REX.W, test %rax,%rax -> ZF = 1 (rax is 0)
 *   0f 84 rel32  jz pv_checked: the same instruction in both modes, taken in 64-bit
 *   e9 rel32     jmp pvh_checked: the same in both modes, reached in 32-bit only
 * (tests/plan/test_single_entry.py decodes these bytes in both modes with capstone.)
 */
	.code64
single_entry:
	xor	%eax, %eax
	test	%rax, %rax
	jz	pv_checked
	jmp	pvh_checked
