"""The PV ABI layer of the start-info shim (asm_templates/34_pv_abi.S and
93_pv_abi_data.S; docs/pv-abi.md): which slots of the kernel's hypercall page it
takes over, which of those hypercalls it answers, and the template values that say
so. One list here, :data:`HANDLERS`, decides both what the shim's dispatch table
holds and what the metadata note records (``inspect`` and ``check`` read it there).
"""

from __future__ import annotations

from ..structs import xen_abi as abi

Hypercall = abi.Hypercall

# The layer's code, right after INSTALL_AFTER (whose install jumps into the first),
# one template per piece of docs/pv-abi.md, and its data after the handoff's own.
TEMPLATES = ("34_pv_abi.S", "35_pv_memory.S", "36_pv_traps.S", "37_pv_mmu.S", "38_pv_grant.S")
DATA_TEMPLATES = (
    "93_pv_abi_data.S",
    "94_pv_memory_data.S",
    "95_pv_traps_data.S",
    "96_pv_mmu_data.S",
    "97_pv_grant_data.S",
)
INSTALL_AFTER = "33_hypercall_page.S"
OPTION = "pv_abi"  # the metadata option: the names of the hypercalls answered

# Each hypercall the shim answers, and its handler's label (in 34_pv_abi.S unless
# named).
HANDLERS: dict[Hypercall, str] = {
    Hypercall.STACK_SWITCH: "pv_stack_switch",
    Hypercall.FPU_TASKSWITCH: "pv_fpu_taskswitch",
    Hypercall.SET_DEBUGREG: "pv_set_debugreg",
    Hypercall.GET_DEBUGREG: "pv_get_debugreg",
    Hypercall.VM_ASSIST: "pv_vm_assist",
    Hypercall.SET_SEGMENT_BASE: "pv_set_segment_base",
    Hypercall.PHYSDEV_OP: "pv_physdev_op",
    Hypercall.UPDATE_VA_MAPPING: "pv_update_va_mapping",  # 37_pv_mmu.S
    Hypercall.MMU_UPDATE: "pv_mmu_update",  # 37_pv_mmu.S
    Hypercall.MMUEXT_OP: "pv_mmuext_op",  # 37_pv_mmu.S
    Hypercall.MULTICALL: "pv_multicall",  # 37_pv_mmu.S
    Hypercall.SET_TRAP_TABLE: "pv_set_trap_table",  # 36_pv_traps.S, as the rest
    Hypercall.SET_CALLBACKS: "pv_set_callbacks",
    Hypercall.CALLBACK_OP: "pv_callback_op",
    Hypercall.SET_GDT: "pv_set_gdt",
    Hypercall.UPDATE_DESCRIPTOR: "pv_update_descriptor",
    # jumped to through its own stub, never through the dispatcher
    Hypercall.IRET: "pv_iret",
    # passed on to Xen's own stubs, then events let in
    Hypercall.XEN_VERSION: "pv_xen_version",
    Hypercall.SCHED_OP: "pv_sched_op",
    # setup_table's frames mapped first, then Xen's own stub
    Hypercall.GRANT_TABLE_OP: "pv_grant_table_op",  # 38_pv_grant.S
}
# Pages the layer adds to the shim's reserved area (zeroed by the loader), by name
# (36_pv_traps.S): the IDT; the page of the GDT entries Xen reserves, whose second
# half holds the trap table; the zero page the GDT's first FIRST_RESERVED_GDT_PAGE
# pages map until set_gdt maps the kernel's frames there (plan/layout.py
# gdt_regions), as Xen maps its zero page.
RESERVED_PAGES = {"pv_idt": 1, "pv_gdt": 1, "pv_zero": 1}
# Slots taken over: every hypercall Xen refuses to PVH, the two whose PV
# operations Xen refuses under PVH that the layer answers in PV's way (mmuext_op's
# page-table operations, vm_assist's PV assists), multicall, whose batches
# carry PV-only calls (Xen's would run them as an HVM guest's: -ENOSYS); the shim's
# runs each through the kernel's own page; and PASSED_ON: calls the layer hands to
# Xen's own stubs (saved before the rewrite), letting pending events in after (a PV
# kernel's force_evtchn_callback is xen_version; PV's SCHEDOP_block enables events).
# grant_table_op: setup_table's frames are not in a PVH guest's memory until it maps
# them (XENMEM_add_to_physmap), which a PV kernel never does: the shim maps them,
# then hands the call to Xen's stub (38_pv_grant.S). physdev_op: set_iopl, which Xen
# refuses a PVH guest, is answered in PV's way (34_pv_abi.S), the rest goes to Xen's
# stub. set_timer_op keeps Xen's stub: Xen serves it to HVM/PVH guests as to PV ones
# (xen/include/hypercall-defs.c).
PASSED_ON = (Hypercall.XEN_VERSION, Hypercall.SCHED_OP)
# Xen's own stubs the layer keeps (saved before the slots are rewritten), in the
# order of the save area (36_pv_traps.S pv_traps_save)
XEN_STUBS = (*PASSED_ON, Hypercall.GRANT_TABLE_OP, Hypercall.PHYSDEV_OP)
TAKEN_OVER = frozenset({Hypercall.MMUEXT_OP, Hypercall.VM_ASSIST, Hypercall.MULTICALL, *XEN_STUBS})
SLOTS = tuple(sorted(abi.PV_ONLY_HYPERCALLS | TAKEN_OVER))
Mmuext = abi.Mmuext
# mmuext_op's commands, each with its routine in 37_pv_mmu.S; the others -ENOSYS
MMUEXT_ROUTINES: dict[Mmuext, str] = {
    Mmuext.PIN_L1_TABLE: "pv_mmuext_pin",
    Mmuext.PIN_L2_TABLE: "pv_mmuext_pin",
    Mmuext.PIN_L3_TABLE: "pv_mmuext_pin",
    Mmuext.PIN_L4_TABLE: "pv_mmuext_pin",
    Mmuext.UNPIN_TABLE: "pv_mmuext_pin",
    Mmuext.NEW_BASEPTR: "pv_mmuext_new_baseptr",
    Mmuext.TLB_FLUSH_LOCAL: "pv_mmuext_tlb_flush",
    Mmuext.INVLPG_LOCAL: "pv_mmuext_invlpg",
    Mmuext.TLB_FLUSH_MULTI: "pv_mmuext_multi",
    Mmuext.INVLPG_MULTI: "pv_mmuext_multi",
    Mmuext.TLB_FLUSH_ALL: "pv_mmuext_tlb_flush",
    Mmuext.INVLPG_ALL: "pv_mmuext_invlpg",
    Mmuext.FLUSH_CACHE: "pv_mmuext_eacces",
    Mmuext.SET_LDT: "pv_mmuext_set_ldt",
    Mmuext.NEW_USER_BASEPTR: "pv_mmuext_new_user_baseptr",
    Mmuext.CLEAR_PAGE: "pv_mmuext_clear_page",
    Mmuext.COPY_PAGE: "pv_mmuext_copy_page",
    Mmuext.FLUSH_CACHE_GLOBAL: "pv_mmuext_eacces",
    Mmuext.MARK_SUPER: "pv_mmuext_eopnotsupp",
    Mmuext.UNMARK_SUPER: "pv_mmuext_eopnotsupp",
}
# Bounds the shim puts on a batch (Xen takes any count and preempts a long one):
# requests of one mmu_update or mmuext_op (Mini-OS sends 512 at most), entries of
# one multicall (Linux batches 32); so one call, even a multicall of batches, ends
# within a few million instructions whatever the kernel passes.
MMU_BATCH_MAX = 0x400
MULTICALL_MAX = 0x100
END = 0xFF  # ends the slot list and the name records (no hypercall has this number)
LINE_PREFIX = b"shimgen: pv-abi: "  # every line the layer prints
UNHANDLED_PREFIX = LINE_PREFIX + b"unhandled hypercall "

assert set(HANDLERS) <= set(SLOTS) and max(SLOTS) < END


def name(number: int) -> str:
    return Hypercall(number).name.lower()


def answered() -> list[str]:
    """What the metadata option records: the hypercalls the layer answers, sorted."""
    return sorted(name(number) for number in HANDLERS)


def unhandled_line(number: int) -> bytes:
    """What the shim prints on the debug port for a hypercall it does not answer."""
    return UNHANDLED_PREFIX + f"{number} ({name(number)})\n".encode()


def name_records() -> bytes:
    """The unhandled path's table (93_pv_abi_data.S): for each slot taken over, its
    number, then the end of its line ("N (name)\n"), then a NUL."""
    return b"".join(bytes([n]) + unhandled_line(n)[len(UNHANDLED_PREFIX) :] + b"\0" for n in SLOTS)


def handler_table() -> list[str]:
    """Assembler expressions of the dispatch table (93_pv_abi_data.S), by hypercall
    number: the handler's offset from shim_start, 0 where there is none."""
    return [
        f"{HANDLERS[Hypercall(n)]} - shim_start" if n in HANDLERS else "0x0"
        for n in range(max(SLOTS) + 1)
    ]


def mmuext_table() -> list[str]:
    """Assembler expressions of pv_mmuext_op's table (96_pv_mmu_data.S), by command:
    its routine's offset from shim_start (-ENOSYS's for a number with none)."""
    routines = {int(command): label for command, label in MMUEXT_ROUTINES.items()}
    last = max(routines)
    return [f"{routines.get(n, 'pv_mmuext_enosys')} - shim_start" for n in range(last + 1)]
