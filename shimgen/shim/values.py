"""Every value the shim's templates take, from one module.

:func:`fixed_values` holds what does not depend on where the shim goes: Xen ABI
numbers and struct offsets (structs/), the shim's messages and loop bounds, and the
layouts of its reserved pages (:func:`scratch_layout`, :func:`built_hvm_layout`).
:func:`template_values` adds the addresses the plan decides (:class:`Placement`):
the ones every shim takes, and those of a handoff's own reserved pages (each
handoff's ``page_values``). tests/shim/test_assemble.py checks that every value given
here is used by a template and every placeholder of a template is given here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache

from ..structs import (
    HVM_MEMMAP_TABLE_ENTRY,
    HVM_MODLIST_ENTRY,
    HVM_START_MAGIC,
    MAX_GUEST_CMDLINE,
    START_INFO_MAGIC,
    START_INFO_MAGIC_PREFIX,
    E820Type,
    StartInfoFlags,
    hvm_start_info,
    round_up,
    start_info,
)
from ..structs import xen_abi as abi
from ..structs.clayout import MASK64, U32, U64
from . import pagetables, pv_abi
from .assemble import placeholders

PAGE = abi.PAGE_SIZE
IDENTITY_MAP_SIZE = 1 << 32  # every address a PVH loader can hand in ebx or a paddr field
OPCODE_JMP_FAR = 0xEA  # jmp ptr16:32, the one far-jump form Keystone cannot mangle
OPCODE_REX_W = 0x48  # the mode guards' byte: REX.W in 64-bit mode, dec %eax in 32-bit
OPCODE_MOV_EAX_IMM32 = 0xB8  # the PV ABI stub's first byte: mov $N, %eax (N patched in)
BAD_MAGIC_MESSAGE = b"shimgen: bad boot magic, not entering the kernel; halted\n"
WRONG_MODE_MESSAGE = (
    b"shimgen: entry reached in the wrong CPU mode, not entering the kernel; halted\n"
)
OUT_OF_RANGE_MESSAGE = (
    b"shimgen: hvm_start_info points outside the identity-mapped memory, "
    b"not entering the kernel; halted\n"
)
# Entries of an hvm_start_info v1 memory map the start-info shim reads at most: far
# more than a loader writes (QEMU and Xen's toolstack write a handful), few enough
# that a loader's absurd memmap_entries cannot keep the walk going for minutes.
MEMMAP_MAX_ENTRIES = 0x400

# --- the reserved pages' layouts ----------------------------------------------------

# start-info: each hypercall argument struct has its own place in the scratch page,
# so the fields that must be 0 stay as the loader zeroed them (40_start_info.S).
# They start after the fallback boot-mode word at offset 0.
SCRATCH_STRUCTS_OFFSET = 0x10
SCRATCH_STRUCTS = (
    ("hvm_param", abi.XEN_HVM_PARAM),
    ("add_to_physmap", abi.XEN_ADD_TO_PHYSMAP),
    ("memory_map", abi.XEN_MEMORY_MAP),
)
SCRATCH_E820_OFFSET = 0x100  # hypercall argument structs use the first 256 bytes
# pvh-passthrough: the scratch page holds the fallback mode word at 0 (as for the
# other handoffs) and the loader's esp right after it.
SAVED_ESP_OFFSET = 8
BUILT_HVM_VERSION = 1  # the PV path of hvm-start-info builds a version-1 struct


def scratch_layout() -> dict[str, int]:
    """Offsets in the scratch page of the start-info shim's hypercall structs."""
    offsets, cursor = {}, SCRATCH_STRUCTS_OFFSET
    for name, record in SCRATCH_STRUCTS:
        offsets[name] = cursor
        cursor += round_up(record.size, 8)
    if cursor > SCRATCH_E820_OFFSET:
        raise AssertionError("hypercall structs overlap the E820 buffer")
    offsets["e820"] = SCRATCH_E820_OFFSET
    return offsets


@cache
def built_hvm_layout() -> dict[str, int]:
    """Offsets, in the page the hvm-start-info PV path fills, of what it builds: the
    struct, one module entry, one memory-map entry, the command line (+ NUL)."""
    layout, cursor = {}, 0
    for name, size, align in (
        ("info", hvm_start_info(BUILT_HVM_VERSION).size, 8),
        ("modlist", HVM_MODLIST_ENTRY.size, 8),
        ("memmap", HVM_MEMMAP_TABLE_ENTRY.size, 8),
        ("cmdline", MAX_GUEST_CMDLINE, 1),
    ):
        cursor = round_up(cursor, align)
        layout[name] = cursor
        cursor += size
    layout["end"] = cursor
    return layout


# --- values that do not depend on the layout ------------------------------------------


def _hex_bytes(data: bytes) -> str:
    return ", ".join(f"{byte:#04x}" for byte in data)


@cache
def fixed_values() -> dict[str, int | str]:
    """Every layout-independent value a template uses, from structs and xen_abi."""
    return {
        **_message_values(),
        **_cpu_values(),
        **_hypercall_values(),
        **_start_info_offsets(),
        **_hvm_start_info_offsets(),
        **_built_hvm_values(),
        **_pv_abi_values(),
        **_pv_mmu_values(),
        **_pv_traps_values(),
        **_pv_memory_values(),
        **_pv_grant_values(),
    }


def _message_values() -> dict[str, int | str]:
    magic = START_INFO_MAGIC[64]
    # 10_pv_entry.S compares the prefix as one quad word.
    assert len(START_INFO_MAGIC_PREFIX) == U64.size
    return {
        "SI_MAGIC_PREFIX": int.from_bytes(START_INFO_MAGIC_PREFIX, "little"),
        "SI_MAGIC_BYTES": _hex_bytes(magic + b"\0"),
        "MSG_BAD_MAGIC_BYTES": _hex_bytes(BAD_MAGIC_MESSAGE),
        "MSG_WRONG_MODE_BYTES": _hex_bytes(WRONG_MODE_MESSAGE),
        "MSG_OUT_OF_RANGE_BYTES": _hex_bytes(OUT_OF_RANGE_MESSAGE),
        "MODE_XEN_PV": abi.BootMode.XEN_PV,
        "MODE_XEN_PVH": abi.BootMode.XEN_PVH,
        "MODE_PVH_NO_XEN": abi.BootMode.PVH_NO_XEN,
        "DEBUGCON_PORT": abi.DEBUGCON_PORT,
    }


def _cpu_values() -> dict[str, int | str]:
    ebx, ecx, edx = abi.signature_words()
    return {
        "OPCODE_REX_W": OPCODE_REX_W,
        "OPCODE_JMP_FAR": OPCODE_JMP_FAR,
        "CR4_PAE_SSE": abi.CR4_PAE | abi.CR4_OSFXSR | abi.CR4_OSXMMEXCPT,
        "CR0_PG_PE_MP": abi.CR0_PG | abi.CR0_PE | abi.CR0_MP,
        "CR0_KEEP_FPU": ~(abi.CR0_EM | abi.CR0_TS) & 0xFFFFFFFF,
        "MSR_EFER": abi.MSR_EFER,
        "EFER_LME": abi.EFER_LME,
        "SEL_CODE64": abi.GDT_SELECTOR_CODE64,
        "SEL_DATA": abi.GDT_SELECTOR_DATA,
        "GDT_CODE64": abi.GDT_CODE64,
        "GDT_DATA": abi.GDT_DATA,
        "PAGE_SHIFT": abi.PAGE_SHIFT,
        "PAGE_SIZE": abi.PAGE_SIZE,
        "IDENTITY_MAP_END": IDENTITY_MAP_SIZE,
        "XEN_CPUID_FIRST": abi.XEN_CPUID_FIRST_LEAF,
        "XEN_CPUID_STRIDE": abi.XEN_CPUID_LEAF_STRIDE,
        "XEN_CPUID_END": abi.XEN_CPUID_LAST_LEAF,
        "XEN_CPUID_HCALL_LEAF": abi.XEN_CPUID_HYPERCALL_LEAF,
        "XEN_SIG_EBX": ebx,
        "XEN_SIG_ECX": ecx,
        "XEN_SIG_EDX": edx,
    }


def _hypercall_values() -> dict[str, int | str]:
    # 40_start_info.S leaves xen_add_to_physmap.space as the loader zeroed it
    assert abi.XENMAPSPACE_SHARED_INFO == 0
    return {
        "CONSOLEIO_WRITE": abi.CONSOLEIO_WRITE,
        "SCHEDOP_SHUTDOWN": abi.SCHEDOP_SHUTDOWN,
        "SHUTDOWN_CRASH": abi.SHUTDOWN_CRASH,
        "SHUTDOWN_SUSPEND": abi.ShutdownReason.SUSPEND,
        "XENMEM_MEMORY_MAP": abi.XENMEM_MEMORY_MAP,
        "XENMEM_CURRENT_RESERVATION": abi.XENMEM_CURRENT_RESERVATION,
        "XENMEM_ADD_TO_PHYSMAP": abi.XENMEM_ADD_TO_PHYSMAP,
        "XMM_NR": abi.XEN_MEMORY_MAP.offset_of("nr_entries"),
        "XMM_BUFFER": abi.XEN_MEMORY_MAP.offset_of("buffer"),
        "E820_STRIDE": abi.E820_ENTRY_STRIDE,
        "E820_CAPACITY": (PAGE - SCRATCH_E820_OFFSET) // abi.E820_ENTRY_STRIDE,
        "HVMOP_GET_PARAM": abi.HVMOP_GET_PARAM,
        "DOMID_SELF": abi.DOMID_SELF,
        "PT_OWNER_MASK": abi.MMU_PT_OWNER_MASK,
        "HP_DOMID": abi.XEN_HVM_PARAM.offset_of("domid"),
        "HP_INDEX": abi.XEN_HVM_PARAM.offset_of("index"),
        "AP_DOMID": abi.XEN_ADD_TO_PHYSMAP.offset_of("domid"),
        "AP_GPFN": abi.XEN_ADD_TO_PHYSMAP.offset_of("gpfn"),
        "PARAM_STORE_PFN": abi.HvmParam.STORE_PFN,
        "PARAM_STORE_EVTCHN": abi.HvmParam.STORE_EVTCHN,
        "PARAM_CONSOLE_PFN": abi.HvmParam.CONSOLE_PFN,
        "PARAM_CONSOLE_EVTCHN": abi.HvmParam.CONSOLE_EVTCHN,
    }


def _start_info_offsets() -> dict[str, int | str]:
    si = start_info(64)
    return {
        "SI_MAGIC": si.offset_of("magic"),
        "SI_NR_PAGES": si.offset_of("nr_pages"),
        "SI_SHARED_INFO": si.offset_of("shared_info"),
        "SI_FLAGS": si.offset_of("flags"),
        "SI_STORE_MFN": si.offset_of("store_mfn"),
        "SI_STORE_EVTCHN": si.offset_of("store_evtchn"),
        "SI_CONSOLE_MFN": si.offset_of("console.domU.mfn"),
        "SI_CONSOLE_EVTCHN": si.offset_of("console.domU.evtchn"),
        "SI_PT_BASE": si.offset_of("pt_base"),
        "SI_NR_PT_FRAMES": si.offset_of("nr_pt_frames"),
        "SI_MOD_START": si.offset_of("mod_start"),
        "SI_MOD_LEN": si.offset_of("mod_len"),
        "SI_CMDLINE": si.offset_of("cmd_line"),
        "CMDLINE_MAX": MAX_GUEST_CMDLINE - 1,  # one byte stays for the NUL
        "SIF_MOD_START_PFN": StartInfoFlags.MOD_START_PFN,
    }


def _hvm_start_info_offsets() -> dict[str, int | str]:
    hvm = hvm_start_info(1)
    # Both memory-map formats are walked by one loop: their fields must coincide.
    for name in ("addr", "size", "type"):
        assert HVM_MEMMAP_TABLE_ENTRY.offset_of(name) == abi.E820_ENTRY.offset_of(name)
    return {
        "HVM_START_MAGIC": HVM_START_MAGIC,
        "HVM_MAGIC": hvm.offset_of("magic"),
        "HVM_VERSION": hvm.offset_of("version"),
        "HVM_FLAGS": hvm.offset_of("flags"),
        "HVM_NR_MODULES": hvm.offset_of("nr_modules"),
        "HVM_MODLIST": hvm.offset_of("modlist_paddr"),
        "HVM_CMDLINE": hvm.offset_of("cmdline_paddr"),
        "HVM_MEMMAP": hvm.offset_of("memmap_paddr"),
        "HVM_MEMMAP_ENTRIES": hvm.offset_of("memmap_entries"),
        "HVM_INFO_SIZE": hvm.size,
        "MOD_ENTRY_SIZE": HVM_MODLIST_ENTRY.size,
        "MOD_PADDR": HVM_MODLIST_ENTRY.offset_of("paddr"),
        "MOD_SIZE": HVM_MODLIST_ENTRY.offset_of("size"),
        "MEMMAP_STRIDE": HVM_MEMMAP_TABLE_ENTRY.size,
        "MEMMAP_MAX_ENTRIES": MEMMAP_MAX_ENTRIES,
        "E820_RAM": E820Type.RAM,
        "ENTRY_ADDR": HVM_MEMMAP_TABLE_ENTRY.offset_of("addr"),
        "ENTRY_SIZE": HVM_MEMMAP_TABLE_ENTRY.offset_of("size"),
        "ENTRY_TYPE": HVM_MEMMAP_TABLE_ENTRY.offset_of("type"),
    }


def _built_hvm_values() -> dict[str, int | str]:
    """hvm-start-info: the hvm_start_info v1 the PV path builds (built_hvm_layout)."""
    built = built_hvm_layout()
    return {
        "HVM_INFO_VERSION": BUILT_HVM_VERSION,
        "BUILT_CMDLINE": built["cmdline"],
        "BUILT_MODLIST": built["modlist"],
        "BUILT_MEMMAP": built["memmap"],
        "BUILT_MOD_PADDR": built["modlist"] + HVM_MODLIST_ENTRY.offset_of("paddr"),
        "BUILT_MOD_SIZE": built["modlist"] + HVM_MODLIST_ENTRY.offset_of("size"),
        "BUILT_MEMMAP_SIZE": built["memmap"] + HVM_MEMMAP_TABLE_ENTRY.offset_of("size"),
        "BUILT_MEMMAP_TYPE": built["memmap"] + HVM_MEMMAP_TABLE_ENTRY.offset_of("type"),
    }


def _pv_abi_values() -> dict[str, int | str]:
    """The PV ABI layer (34_pv_abi.S, 93_pv_abi_data.S; shim/pv_abi.py)."""
    return {
        "PV_ABI_TABLE_LEN": len(pv_abi.handler_table()),
        "PV_ABI_HANDLERS": ", ".join(pv_abi.handler_table()),
        "PV_ABI_HANDLER_SIZE": 2,  # each a .word (93_pv_abi_data.S): movzwl's scale
        "PV_ABI_SLOTS": _hex_bytes(bytes(pv_abi.SLOTS)),
        "PV_ABI_END": pv_abi.END,
        "PV_ABI_NAME_BYTES": _hex_bytes(pv_abi.name_records()),
        "MSG_PV_ABI_UNHANDLED_BYTES": _hex_bytes(pv_abi.UNHANDLED_PREFIX),
        "OPCODE_MOV_EAX_IMM32": OPCODE_MOV_EAX_IMM32,
        "HYPERCALL_STUB_SIZE": abi.HYPERCALL_STUB_SIZE,
        "HC_IRET": abi.Hypercall.IRET,
        "NEG_ENOSYS": -abi.ENOSYS,
        "NEG_EINVAL": -abi.EINVAL,
        "NEG_EPERM": -abi.EPERM,
        "VMASST_CMD_ENABLE": abi.VMASST_CMD_ENABLE,
        "VMASST_CMD_DISABLE": abi.VMASST_CMD_DISABLE,
        "VMASST_PV64_VALID": abi.VMASST_PV64_VALID,
        "VMASST_TYPE_LIMIT": abi.VMASST_TYPE_LIMIT,
        "PHYSDEVOP_SET_IOPL": abi.PHYSDEVOP_SET_IOPL,
        "PHYSDEV_SET_IOPL_SIZE": abi.PHYSDEV_SET_IOPL_SIZE,
        "IOPL_MAX": abi.IOPL_MAX,
        "SEGBASE_FS": abi.SEGBASE_FS,
        "SEGBASE_GS_USER": abi.SEGBASE_GS_USER,
        "SEGBASE_GS_KERNEL": abi.SEGBASE_GS_KERNEL,
        "SEGBASE_GS_USER_SEL": abi.SEGBASE_GS_USER_SEL,
        "FLAT_USER_DS32": abi.FLAT_RING3_DS32,
        "SELECTOR_RPL3": 3,
        "AR_PRESENT_BIT": (abi.DESC_P >> abi.DESC_ACCESS_SHIFT).bit_length() - 1,
        "AR_S_BIT": (abi.DESC_S >> abi.DESC_ACCESS_SHIFT).bit_length() - 1,
        "AR_CODE_BIT": (abi.DESC_CODE >> abi.DESC_ACCESS_SHIFT).bit_length() - 1,
        "AR_READABLE_BIT": (abi.DESC_READABLE >> abi.DESC_ACCESS_SHIFT).bit_length() - 1,
        "MSR_FS_BASE": abi.MSR_FS_BASE,
        "MSR_GS_BASE": abi.MSR_GS_BASE,
        "MSR_SHADOW_GS_BASE": abi.MSR_SHADOW_GS_BASE,
        "CANONICAL_SHIFT": 64 - abi.VIRTUAL_ADDRESS_BITS,
        "CR0_TS": abi.CR0_TS,
        **{reg.name: reg.value for reg in abi.DebugReg},
        "DR6_WRITABLE": abi.DR6_WRITABLE,
        "DR6_ONES": abi.DR6_ONES,
        "DR7_WRITABLE": abi.DR7_WRITABLE,
        "DR7_ONES": abi.DR7_ONES,
        "DR7_RW_LOW_BITS": abi.DR7_RW_LOW_BITS,
    }


def _pv_mmu_values() -> dict[str, int | str]:
    """Guest memory through the kernel's tables (34_pv_abi.S: pv_abi_walk,
    pv_abi_guest_ok) and the page-table hypercalls (37_pv_mmu.S, 96_pv_mmu_data.S)."""
    index_bits = abi.ENTRIES_PER_TABLE.bit_length() - 1
    pml4_shift = abi.PAGE_SHIFT + 3 * index_bits
    spare_bits = 64 - abi.PTE_ADDR_MASK.bit_length()  # above an entry's address
    # pv_abi_addr_ok tests an address by shifts: it needs this exact
    assert abi.HYPERVISOR_VIRT_END % (1 << pml4_shift) == 0
    assert abi.UVMF_LOCAL == 0  # 37_pv_mmu.S tests it with jz
    return {
        "PML4_SHIFT": pml4_shift,
        "PT_INDEX_BITS": index_bits,
        "PT_INDEX_MASK": abi.ENTRIES_PER_TABLE - 1,
        "PTE_SIZE": U64.size,
        "PTE_FLAGS_MASK": abi.PAGE_SIZE - 1,
        "PTE_PRESENT": abi.PTE_PRESENT,
        "PTE_LARGE": abi.PTE_LARGE,
        "PTE_ADDR_SPARE_BITS": spare_bits,
        # shl by the spare bits, then shr by this: an entry's frame number
        "PTE_FRAME_SHIFT": spare_bits + abi.PAGE_SHIFT,
        "PAGE_MASK32": -abi.PAGE_SIZE,  # an imm32 the CPU sign-extends
        "SHIM_DIRECTMAP_VIRT": abi.SHIM_DIRECTMAP_VIRT,
        "GUEST_LOW_SLOTS": 1 << (abi.VIRTUAL_ADDRESS_BITS - 1 - pml4_shift),
        "HYPERVISOR_END_SLOT": abi.HYPERVISOR_VIRT_END >> pml4_shift,
        "PV_ABI_GUEST_MAX": abi.PAGE_SIZE,
        "PTE_GNTTAB_BIT": abi.PTE_GNTTAB_BIT,
        "UVMF_INVLPG": abi.UVMF_INVLPG,
        "UVMF_FLUSHTYPE_MASK": abi.UVMF_FLUSHTYPE_MASK,
        "UVMF_TARGET_MASK": ~abi.UVMF_FLUSHTYPE_MASK,  # sign-extended: the bits above
        "UVMF_ALL": abi.UVMF_ALL,
        "XEN_ULONG_SIZE": U64.size,
        "NEG_EFAULT": -abi.EFAULT,
        **_pv_mmu_batch_values(),
    }


# the registers pv_mmu_batch_start pushes, in its order (37_pv_mmu.S)
_BATCH_SAVED = ("rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11")


def _pv_mmu_batch_values() -> dict[str, int | str]:
    """mmu_update, mmuext_op and multicall (37_pv_mmu.S, 96_pv_mmu_data.S)."""
    slot_shift = abi.PAGE_SHIFT + 3 * (abi.ENTRIES_PER_TABLE.bit_length() - 1)
    slot_mask = abi.ENTRIES_PER_TABLE - 1
    stub_shift = abi.HYPERCALL_STUB_SIZE.bit_length() - 1
    assert abi.INVALID_M2P_ENTRY == MASK64  # cmpq with INVALID_M2P_ENTRY_IMM
    assert 1 << stub_shift == abi.HYPERCALL_STUB_SIZE
    table = pv_abi.mmuext_table()
    return {
        "DOMID_SELF": abi.DOMID_SELF,
        "PT_OWNER_MASK": abi.MMU_PT_OWNER_MASK,
        "NEG_ESRCH": -abi.ESRCH,
        "NEG_E2BIG": -abi.E2BIG,
        "NEG_EACCES": -abi.EACCES,
        "NEG_EOPNOTSUPP": -abi.EOPNOTSUPP,
        "PV_MMU_BATCH_MAX": pv_abi.MMU_BATCH_MAX,
        "PV_MULTICALL_MAX": pv_abi.MULTICALL_MAX,
        "PV_MMU_SAVED_RDX": (len(_BATCH_SAVED) - 1 - _BATCH_SAVED.index("rdx")) * U64.size,
        "PV_MMU_DONE_SIZE": U32.size,  # unsigned int *done (xen.h)
        "PTE_PRESENT_WRITE": abi.PTE_PRESENT | abi.PTE_WRITE,
        "PTE_ACCESSED_DIRTY": abi.PTE_ACCESSED | abi.PTE_DIRTY,
        "MMU_UPDATE_SIZE": abi.MMU_UPDATE.size,
        "MMU_UPDATE_PTR": abi.MMU_UPDATE.offset_of("ptr"),
        "MMU_UPDATE_VAL": abi.MMU_UPDATE.offset_of("val"),
        "MMU_CMD_MASK": abi.MMU_CMD_MASK,
        "MMU_MACHPHYS_UPDATE": abi.MMU_MACHPHYS_UPDATE,
        "MMU_PT_UPDATE_PRESERVE_AD": abi.MMU_PT_UPDATE_PRESERVE_AD,
        "MMU_PT_UPDATE_NO_TRANSLATE": abi.MMU_PT_UPDATE_NO_TRANSLATE,
        "MACH2PHYS_VIRT_START": abi.MACH2PHYS_VIRT_START,
        "M2P_ENTRY_SIZE": abi.M2P_ENTRY_SIZE,
        "INVALID_M2P_ENTRY_IMM": -1,  # ~0UL, as an imm8 the CPU sign-extends
        "MMUEXT_OP_SIZE": abi.MMUEXT_OP.size,
        "MMUEXT_CMD": abi.MMUEXT_OP.offset_of("cmd"),
        "MMUEXT_ARG1": abi.MMUEXT_OP.offset_of("arg1"),
        "MMUEXT_ARG2": abi.MMUEXT_OP.offset_of("arg2"),
        "MMUEXT_TLB_FLUSH_MULTI": abi.Mmuext.TLB_FLUSH_MULTI,
        "MMUEXT_LAST": len(table) - 1,
        "MMUEXT_TABLE": ", ".join(table),
        "LDT_MAX_ENTRIES": abi.LDT_MAX_ENTRIES,
        "PT_ENTRIES": abi.ENTRIES_PER_TABLE,
        "HYPERVISOR_FIRST_SLOT": abi.HYPERVISOR_VIRT_START >> slot_shift & slot_mask,
        "HYPERVISOR_END_SLOT_INDEX": (abi.HYPERVISOR_VIRT_END >> slot_shift & slot_mask),
        "MULTICALL_ENTRY_SIZE": abi.MULTICALL_ENTRY.size,
        "MULTICALL_ARRAY_LIMIT": MASK64 // abi.MULTICALL_ENTRY.size,  # ~0UL / size
        "MULTICALL_OP": abi.MULTICALL_ENTRY.offset_of("op"),
        "MULTICALL_RESULT": abi.MULTICALL_ENTRY.offset_of("result"),
        **{f"MULTICALL_ARG{n}": abi.MULTICALL_ENTRY.offset_of(f"arg{n}") for n in range(5)},
        "HC_MULTICALL": abi.Hypercall.MULTICALL,
        "HYPERCALL_SLOTS": abi.PAGE_SIZE // abi.HYPERCALL_STUB_SIZE,
        "HYPERCALL_STUB_SHIFT": stub_shift,
    }


# 36_pv_traps.S: each IDT gate's stub is 4 bytes (push $vector; jmp to its group's
# end), STUB_GROUP of them then a jump to pv_trap_common, each group padded to 8
STUB_SIZE = 4
STUB_GROUP = 16
STUB_GROUP_SIZE = round_up(STUB_GROUP * STUB_SIZE + 5, 8)  # 5: the longest jmp
OPCODE_PUSH_IMM8 = 0x6A
OPCODE_JMP_REL8 = 0xEB
OPCODE_IRETQ = 0xCF  # after REX.W (Intel SDM vol. 2, IRET)
OPCODE_INT_IMM8 = 0xCD  # int imm8, 2 bytes (Intel SDM vol. 2, INT n)
# The GDT's reserved page past the GDT's limit (which ends after Xen's flat entries):
# Xen's stubs of the calls the layer passes on (shim/pv_abi.py XEN_STUBS), then in
# its second half the trap table, a quad word a vector, handler << 8 | trap_info flags.
XEN_STUBS_OFFSET = 0x80
TRAP_TABLE_OFFSET = abi.PAGE_SIZE // 2
# Xen's TSS entry (TSS_ENTRY in Xen's asm/desc.h: the one after its 64-bit CS32),
# inside the GDT's limit, and the 64-bit TSS it names (SDM vol. 3, 8.7: IST1 at 0x24,
# 0x68 bytes), between the saved stubs and the trap table
GDT_TSS_OFFSET = 0x40
TSS_OFFSET = 0x100
TSS_IST1 = 0x24
TSS_LIMIT = 0x67
TSS_TYPE_AVAILABLE = 0x89  # present, DPL 0, 64-bit TSS (available)
# The vector Xen delivers event upcalls as (any vector no exception uses; Linux's
# HYPERVISOR_CALLBACK_VECTOR)
UPCALL_VECTOR = 0xF3
# set_trap_table stops after this many entries (-E2BIG): 16 times every vector
TRAP_TABLE_MAX = 16 * abi.IDT_VECTORS
CALLBACK_SLOTS = 8  # pv_callbacks holds CALLBACKTYPE_ 0 to 7
TRAP_UNHANDLED_MESSAGE = b"shimgen: pv-abi: unhandled trap 0x"
TRAP_AT_MESSAGE = b" at 0x"
IRET_USER_MESSAGE = b"shimgen: pv-abi: iret to user mode is not supported; halted\n"
SHUTDOWN_MESSAGE = b"shimgen: pv-abi: the kernel shuts down, reason 0x"


def _pv_traps_values() -> dict[str, int | str]:
    """Traps, segments and callbacks (36_pv_traps.S, 95_pv_traps_data.S)."""
    flat = (abi.FLAT_RING3_CS32, abi.FLAT_RING3_DS32, abi.FLAT_RING3_CS64)
    entries = [selector // abi.GDT_DESCRIPTOR_SIZE for selector in flat]
    # pv_gdt_flat holds them in this order, stored by one rep movsq
    assert entries == list(range(entries[0], entries[0] + len(entries)))
    assert entries[0] >= abi.FIRST_RESERVED_GDT_ENTRY
    flat_end = (entries[-1] + 1) * abi.GDT_DESCRIPTOR_SIZE - abi.FIRST_RESERVED_GDT_BYTE
    stubs_end = XEN_STUBS_OFFSET + len(pv_abi.XEN_STUBS) * abi.HYPERCALL_STUB_SIZE
    assert flat_end <= GDT_TSS_OFFSET and GDT_TSS_OFFSET + 16 <= XEN_STUBS_OFFSET
    assert stubs_end <= TSS_OFFSET and TSS_OFFSET + TSS_LIMIT < TRAP_TABLE_OFFSET
    stub_at = {n: i * abi.HYPERCALL_STUB_SIZE for i, n in enumerate(pv_abi.XEN_STUBS)}
    ring0_cs = abi.FLAT_KERNEL_CS64 & ~3
    page_entries = abi.PAGE_SIZE // abi.GDT_DESCRIPTOR_SIZE
    recorded = set(abi.CallbackType) - {abi.CallbackType.NMI}
    assert max(abi.CallbackType) < CALLBACK_SLOTS
    assert abi.CALLBACK_REGISTER.size != abi.CALLBACK_UNREGISTER.size  # tells the cmd
    assert STUB_GROUP_SIZE < 0x80 and abi.IDT_VECTORS % STUB_GROUP == 0
    frame = ("rip", "cs", "rflags", "rsp", "ss")  # the CPU's, from its rip slot
    pushed = ("rcx", "r11")  # pv_trap_common's, above it
    high = 32  # descriptor bits tested in their upper half
    return {
        "RING0_CS": ring0_cs,
        "FLAT_KERNEL_SS": abi.FLAT_KERNEL_SS64,
        "GDT_FLAT_OFFSET": entries[0] * abi.GDT_DESCRIPTOR_SIZE - abi.FIRST_RESERVED_GDT_BYTE,
        "SHIM_GDT_VIRT": abi.SHIM_GDT_VIRT,
        "PTE_PRESENT_WRITE": abi.PTE_PRESENT | abi.PTE_WRITE,
        "GDT_FLAT_ENTRIES": len(entries),
        "GDT_CODE32_DPL3": abi.GDT_CODE32_DPL3,
        "GDT_DATA_DPL3": abi.GDT_DATA_DPL3,
        "PV_GDT_LIMIT": abi.FIRST_RESERVED_GDT_BYTE + GDT_TSS_OFFSET + 16 - 1,
        "GDT_TSS_OFFSET": GDT_TSS_OFFSET,
        "TSS_OFFSET": TSS_OFFSET,
        "TSS_IST1": TSS_IST1,
        "TSS_SELECTOR": abi.FIRST_RESERVED_GDT_BYTE + GDT_TSS_OFFSET,
        "GATE_IST_AT": 4,  # a gate's IST field: the low bits of its byte 4
        "EXC_DF": 8,
        "HC_XEN_VERSION": abi.Hypercall.XEN_VERSION,
        "HC_SCHED_OP": abi.Hypercall.SCHED_OP,
        "HC_GRANT_TABLE_OP": abi.Hypercall.GRANT_TABLE_OP,
        "HC_PHYSDEV_OP": abi.Hypercall.PHYSDEV_OP,
        "XEN_VERSION_STUB_AT": stub_at[abi.Hypercall.XEN_VERSION],
        "SCHED_OP_STUB_AT": stub_at[abi.Hypercall.SCHED_OP],
        "GRANT_TABLE_OP_STUB_AT": stub_at[abi.Hypercall.GRANT_TABLE_OP],
        "PHYSDEV_OP_STUB_AT": stub_at[abi.Hypercall.PHYSDEV_OP],
        "SCHEDOP_BLOCK": abi.SCHEDOP_BLOCK,
        "UPCALL_VECTOR": UPCALL_VECTOR,
        "HVMOP_SET_PARAM": abi.HVMOP_SET_PARAM,
        "HVM_PARAM_CALLBACK_IRQ": abi.HvmParam.CALLBACK_IRQ,
        "HVM_PARAM_SIZE": abi.XEN_HVM_PARAM.size,
        "HP_VALUE": abi.XEN_HVM_PARAM.offset_of("value"),
        "CALLBACK_VECTOR_VALUE": abi.HVM_PARAM_CALLBACK_TYPE_VECTOR
        << abi.HVM_PARAM_CALLBACK_TYPE_SHIFT
        | UPCALL_VECTOR,
        "FIRST_RESERVED_GDT_ENTRY": abi.FIRST_RESERVED_GDT_ENTRY,
        "FIRST_RESERVED_GDT_PAGE": abi.FIRST_RESERVED_GDT_PAGE,
        "GDT_PAGE_ENTRIES": page_entries,
        "GDT_PAGE_ENTRIES_SHIFT": page_entries.bit_length() - 1,
        "GDT_ENTRIES_PER_PAGE_MASK": page_entries - 1,
        "PAGE_OFFSET_MASK": abi.PAGE_SIZE - 1,
        "DIRECTMAP_FRAMES": abi.SHIM_DIRECTMAP_SIZE >> abi.PAGE_SHIFT,
        "DESC_P_BIT": abi.DESC_P.bit_length() - 1,
        "DESC_S_BIT": abi.DESC_S.bit_length() - 1,
        "DESC_TYPE_SHIFT": abi.DESC_TYPE_SHIFT,
        "DESC_TYPE_MASK": abi.DESC_TYPE_MASK,
        "DESC_P_S_CODE_HIGH": (abi.DESC_P | abi.DESC_S | abi.DESC_CODE) >> high,
        "DESC_P_S_HIGH": (abi.DESC_P | abi.DESC_S) >> high,
        "DESC_DPL3_HIGH": abi.DESC_DPL_MASK >> high,
        "IDT_VECTORS": abi.IDT_VECTORS,
        "IDT_GATE_SIZE": abi.IDT_GATE_SIZE,
        "IDT_GATE_FIXED": ring0_cs << 16 | abi.IDT_INTERRUPT_GATE << 40,
        "STUB_SIZE": STUB_SIZE,
        "STUB_GROUP": STUB_GROUP,
        "STUB_GROUP_SHIFT": STUB_GROUP.bit_length() - 1,
        "STUB_GROUP_MASK": STUB_GROUP - 1,
        "STUB_GROUP_SIZE": STUB_GROUP_SIZE,
        "OPCODE_PUSH_IMM8": OPCODE_PUSH_IMM8,
        "OPCODE_JMP_REL8": OPCODE_JMP_REL8,
        "OPCODE_INT_IMM8": OPCODE_INT_IMM8,
        "FRAME_ALIGN_MASK": -16,  # a 64-bit CPU aligns its trap frame (SDM vol. 3, 6.14.2)
        "IRETQ_BYTES": OPCODE_IRETQ << 8 | OPCODE_REX_W,  # read as a little-endian word
        "INT_IMM8_SIZE": 2,  # as REX.W iretq's (pv_trap_code2_ok checks both)
        "FIRST_SOFTINT_VECTOR": abi.FIRST_SOFTINT_VECTOR,
        "TI_DPL_MASK": abi.TI_DPL_MASK,
        "ERROR_CODE_IDT": abi.ERROR_CODE_IDT,
        "EFER_SCE": abi.EFER_SCE,
        "EFER_NXE": abi.EFER_NXE,
        "CPUID_EXT_FEATURES": abi.CPUID_EXT_FEATURES,
        "CPUID_EXT_EDX_NX_BIT": abi.CPUID_EXT_EDX_NX.bit_length() - 1,
        "MSR_STAR": abi.MSR_STAR,
        "MSR_LSTAR": abi.MSR_LSTAR,
        "MSR_SFMASK": abi.MSR_SFMASK,
        # as Xen's hypercall entry: events off, no single-step, string ops upward
        "SYSCALL_RFLAGS_CLEARED": abi.EFLAGS_IF | abi.EFLAGS_TF | abi.EFLAGS_DF,
        "ERROR_CODE_INDEX_SHIFT": abi.ERROR_CODE_INDEX_SHIFT,
        "EXC_ERRCODE_MASK": sum(1 << vector for vector in abi.EXC_WITH_ERROR_CODE),
        "EXC_BITMAP_REST_QUADS": abi.IDT_VECTORS // 64 - 1,  # the bitmap's quads after it
        "GATE_MID_SHIFT": 16,  # a gate's offset bits 16-31 (SDM vol. 3, 6.14.1) ...
        "GATE_MID_AT": 48,  # ... sit at bits 48-63 of its first quad word
        "BYTE_MASK": 0xFF,
        "VECTOR_HEX_DIGITS": 2,
        "ADDRESS_HEX_DIGITS": 16,
        "HEX_DIGIT_SHIFT": 2,  # 4 bits a digit
        "HEX_DIGIT_BITS": 4,
        "HEX_DIGIT_MASK": 0xF,
        "SELECTOR_RPL_MASK": 3,
        "DESC_HIGH": 4,  # the offset of a descriptor's upper 32 bits
        "DESC_ALIGN_MASK": abi.GDT_DESCRIPTOR_SIZE - 1,
        "EXC_GP": abi.EXC_GP,
        "EXC_UD": abi.EXC_UD,
        "XEN_CPUID_SIZE": len(abi.XEN_CPUID),
        "XEN_CPUID_HEAD": int.from_bytes(abi.XEN_CPUID[:4], "little"),
        "XEN_CPUID_TAIL": int.from_bytes(abi.XEN_CPUID[-4:], "little"),
        "XEN_CPUID_TAIL_AT": len(abi.XEN_CPUID) - 4,
        "EXC_PF": abi.EXC_PF,
        "EXC_NMI": abi.EXC_NMI,
        **{f"FRAME_{name.upper()}": n * 8 for n, name in enumerate(frame) if n},
        "FRAME_RIP_SLOT": len(pushed) * 8,
        "VI_UPCALL_MASK": abi.VCPU_INFO.offset_of("evtchn_upcall_mask"),
        "VI_UPCALL_PENDING": abi.VCPU_INFO.offset_of("evtchn_upcall_pending"),
        "VI_CR2": abi.VCPU_INFO.offset_of("cr2"),
        "TI_FLAG_IF": abi.TI_FLAG_IF,
        "TI_VECTOR": abi.TRAP_INFO.offset_of("vector"),
        "TI_FLAGS": abi.TRAP_INFO.offset_of("flags"),
        "TI_ADDRESS": abi.TRAP_INFO.offset_of("address"),
        "TRAP_INFO_SIZE": abi.TRAP_INFO.size,
        "TRAP_TABLE_MAX": TRAP_TABLE_MAX,
        "EFLAGS_IF": abi.EFLAGS_IF,
        "EFLAGS_IF_BIT": abi.EFLAGS_IF.bit_length() - 1,
        "EFLAGS_MBS": abi.EFLAGS_MBS,
        "NOT_IF": ~abi.EFLAGS_IF,
        "NOT_IF_IOPL": ~(abi.EFLAGS_IF | abi.EFLAGS_IOPL),
        "IRET_EFLAGS_KEPT": abi.EFLAGS_ALL & ~(abi.EFLAGS_IOPL | abi.EFLAGS_VM),
        **{
            f"IC_{name.upper()}": abi.IRET_CONTEXT.offset_of(name)
            for name in ("cs", "rflags", "rip", "flags", "ss", "r11")
        },
        "VGCF_IN_SYSCALL": abi.VGCF_IN_SYSCALL,
        "CALLBACK_SLOTS": CALLBACK_SLOTS,
        "CALLBACK_RECORDED": sum(1 << kind for kind in recorded),
        "CALLBACK_EVENT": abi.CallbackType.EVENT,
        "CALLBACK_FAILSAFE": abi.CallbackType.FAILSAFE,
        "CALLBACK_SYSCALL": abi.CallbackType.SYSCALL,
        "CALLBACK_NMI": abi.CallbackType.NMI,
        "CALLBACKOP_REGISTER": abi.CALLBACKOP_REGISTER,
        "CALLBACKOP_UNREGISTER": abi.CALLBACKOP_UNREGISTER,
        "CALLBACKF_MASK_EVENTS": abi.CALLBACKF_MASK_EVENTS,
        "CALLBACK_REGISTER_SIZE": abi.CALLBACK_REGISTER.size,
        "CALLBACK_UNREGISTER_SIZE": abi.CALLBACK_UNREGISTER.size,
        "CB_TYPE": abi.CALLBACK_REGISTER.offset_of("type"),
        "CB_FLAGS": abi.CALLBACK_REGISTER.offset_of("flags"),
        "CB_ADDRESS": abi.CALLBACK_REGISTER.offset_of("address"),
        "NEG_E2BIG": -abi.E2BIG,
        "NEWLINE": ord("\n"),
        "ASCII_ZERO": ord("0"),
        "ASCII_NINE": ord("9"),
        "ASCII_HEX_GAP": ord("a") - ord("9") - 1,
        "MSG_PV_TRAP_UNHANDLED_BYTES": _hex_bytes(TRAP_UNHANDLED_MESSAGE),
        "MSG_PV_TRAP_AT_BYTES": _hex_bytes(TRAP_AT_MESSAGE),
        "MSG_PV_IRET_USER_BYTES": _hex_bytes(IRET_USER_MESSAGE),
        "MSG_PV_SHUTDOWN_BYTES": _hex_bytes(SHUTDOWN_MESSAGE),
        "SHUTDOWN_REASON_SIZE": 4,  # struct sched_shutdown: an unsigned int (sched.h)
    }


# The PV memory layout the shim builds at boot at the top of the kernel's RAM below
# 4 GiB (35_pv_memory.S; docs/pv-abi.md): from its first page, the M2P's
# page-directory pointer table and page directory, the two M2P pages for the ring
# frames outside the RAM, the two for the grant frames, then N M2P page tables (N
# the direct map's end in GiB, at least 4), the direct map's N - 4 page directories
# past 4 GiB, the M2P pages of the RAM's frames, mfn_list, the pool.
PV_M2P_TABLES = 2  # the PDPT and the page directory of PML4 slot 256
PV_RING_M2P_PAGES = 2  # console and xenstore: at most one M2P page each
# the grant table's gfns (38_pv_grant.S), PV_GRANT_FRAMES of them: two M2P pages at
# most, after the rings'
PV_GRANT_M2P_PAGES = 2
PV_FIXED_PAGES = PV_M2P_TABLES + PV_RING_M2P_PAGES + PV_GRANT_M2P_PAGES
# one page directory of 2 MiB pages maps 1 GiB of the direct map; one M2P page table
# holds the M2P of as many frames
PV_DM_PD_SHIFT = abi.PAGE_SHIFT + 2 * (abi.ENTRIES_PER_TABLE.bit_length() - 1)
PV_LOW_PDS = abi.SHIM_DIRECTMAP_SIZE >> PV_DM_PD_SHIFT  # the patch-time direct map's
# Tables mapping mfn_list and the padding after the shim segment in the kernel's
# region: one page table per 512 pages taken, and spare ones: for mfn_list two
# across a page-table boundary, two page directories (across a 1 GiB boundary), a
# page-directory pointer table; for the padding two page tables and a directory.
PV_POOL_SPARE = 8
PV_NO_RAM_MESSAGE = (
    b"shimgen: pv-abi: no RAM entry of the memory map holds the kernel, not entering it; halted\n"
)
PV_NO_ROOM_MESSAGE = (
    b"shimgen: pv-abi: too little RAM after the kernel for its mfn_list and M2P, "
    b"not entering it; halted\n"
)
PV_TOO_MUCH_MESSAGE = (
    b"shimgen: pv-abi: RAM past %d GiB, more than the shim maps, not entering the kernel; "
    b"halted\n" % (abi.SHIM_DIRECTMAP_LIMIT >> 30)
)


def _pv_memory_values() -> dict[str, int | str]:
    """The PV memory layout (35_pv_memory.S, 94_pv_memory_data.S)."""
    entries_per_page = abi.PAGE_SIZE // abi.M2P_ENTRY_SIZE
    assert pagetables.ENTRY_SIZE == abi.M2P_ENTRY_SIZE  # one scale indexes both
    # the layout lies where the shim's identity map reaches, the direct map's first part
    assert abi.SHIM_DIRECTMAP_SIZE == IDENTITY_MAP_SIZE
    # one page directory of the M2P (PV_M2P_TABLES) holds the tables of the most
    # the direct map reaches, which ends before the PV GDT in its PDPT
    assert abi.SHIM_DIRECTMAP_LIMIT >> PV_DM_PD_SHIFT <= abi.ENTRIES_PER_TABLE
    assert abi.SHIM_GDT_VIRT >= abi.SHIM_DIRECTMAP_VIRT + abi.SHIM_DIRECTMAP_LIMIT
    m2p_page_span = entries_per_page * abi.PAGE_SIZE  # the RAM one M2P page covers
    si = start_info(64)
    return {
        "PV_FIXED_PAGES": PV_FIXED_PAGES,
        "PV_RING_M2P_OFFSET": PV_M2P_TABLES * PAGE,
        "PV_GRANT_M2P_OFFSET": (PV_M2P_TABLES + PV_RING_M2P_PAGES) * PAGE,
        "PV_L1_OFFSET": PV_FIXED_PAGES * PAGE,
        "PV_ZEROED_QUADS": PV_M2P_TABLES * entries_per_page,
        "PV_SPARE_M2P_QUADS": (PV_RING_M2P_PAGES + PV_GRANT_M2P_PAGES) * entries_per_page,
        "PV_LOW_END": abi.SHIM_DIRECTMAP_SIZE,
        "PV_LOW_PDS": PV_LOW_PDS,
        "PV_LIMIT_PDS": abi.SHIM_DIRECTMAP_LIMIT >> PV_DM_PD_SHIFT,
        "PV_LIMIT_M2P_PAGES": abi.SHIM_DIRECTMAP_LIMIT // m2p_page_span,
        "PV_DM_PD_SHIFT": PV_DM_PD_SHIFT,
        "PV_DM_PD_SIZE": 1 << PV_DM_PD_SHIFT,
        "PV_DM_PD_FRAME_SHIFT": PV_DM_PD_SHIFT - abi.PAGE_SHIFT,
        "PV_DM_FIRST_ENTRY": abi.SHIM_DIRECTMAP_SIZE
        | abi.PTE_PRESENT
        | abi.PTE_WRITE
        | abi.PTE_LARGE,
        "LARGE_PAGE_SIZE": abi.LARGE_PAGE_SIZE,
        "PV_DIRECTMAP_PML4_OFFSET": pagetables.table_index(abi.SHIM_DIRECTMAP_VIRT, 4)
        * pagetables.ENTRY_SIZE,
        "PV_M2P_PML4_OFFSET": pagetables.table_index(abi.MACH2PHYS_VIRT_START, 4)
        * pagetables.ENTRY_SIZE,
        "PV_M2P_SHIFT": (entries_per_page - 1).bit_length(),  # gfn -> its M2P page
        "PV_M2P_INDEX_MASK": entries_per_page - 1,
        "PV_TABLE_FLAGS": abi.PTE_PRESENT | abi.PTE_WRITE,
        "PV_READ_ONLY_FLAGS": abi.PTE_PRESENT,
        "PV_ENTRY_SIZE": abi.M2P_ENTRY_SIZE,  # also a page-table entry's (checked above)
        "PV_POOL_SPARE": PV_POOL_SPARE,
        "PV_QUADS_PER_PAGE": abi.PAGE_SIZE // pagetables.ENTRY_SIZE,
        # a kernel linked in the upper half (sign bit set) or in the lower half
        "PV_HIGH_HALF_BIT": MASK64.bit_length() - 1,
        "PV_LOW_HALF_END": 1 << (abi.VIRTUAL_ADDRESS_BITS - 1),
        "CR0_WP": abi.CR0_WP,
        "SI_MFN_LIST": si.offset_of("mfn_list"),
        "MSG_PV_NO_RAM_BYTES": _hex_bytes(PV_NO_RAM_MESSAGE),
        "MSG_PV_NO_ROOM_BYTES": _hex_bytes(PV_NO_ROOM_MESSAGE),
        "MSG_PV_TOO_MUCH_BYTES": _hex_bytes(PV_TOO_MUCH_MESSAGE),
    }


# grant_table_op setup_table (38_pv_grant.S): the gfns reserved for the grant
# table's frames, after the RAM (35_pv_memory.S): as many as Xen gives a domU by
# default (Mini-OS asks for 4).
PV_GRANT_FRAMES = abi.MAX_GRANT_FRAMES


def _pv_grant_values() -> dict[str, int | str]:
    """grant_table_op (38_pv_grant.S, 97_pv_grant_data.S) and the gfns 35_pv_memory.S
    reserves for it."""
    assert PV_GRANT_FRAMES <= abi.PAGE_SIZE // abi.M2P_ENTRY_SIZE  # two M2P pages at most
    return {
        "PV_GRANT_FRAMES": PV_GRANT_FRAMES,
        "PV_GRANT_SIZE": PV_GRANT_FRAMES * abi.PAGE_SIZE,
        "GNTTABOP_SETUP_TABLE": abi.GNTTABOP_SETUP_TABLE,
        "GNTTAB_SETUP_SIZE": abi.GNTTAB_SETUP_TABLE.size,
        "GS_DOM": abi.GNTTAB_SETUP_TABLE.offset_of("dom"),
        "GS_NR_FRAMES": abi.GNTTAB_SETUP_TABLE.offset_of("nr_frames"),
        "XENMAPSPACE_GRANT_TABLE": abi.XENMAPSPACE_GRANT_TABLE,
        "AP_SPACE": abi.XEN_ADD_TO_PHYSMAP.offset_of("space"),
        "AP_IDX": abi.XEN_ADD_TO_PHYSMAP.offset_of("idx"),
        "ADD_TO_PHYSMAP_SIZE": abi.XEN_ADD_TO_PHYSMAP.size,
    }


# --- values the plan decides ----------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Where the plan put the shim and what the shim points at (virtual addresses
    unless named physical)."""

    shim_vaddr: int
    shim_paddr: int
    offsets: Mapping[str, int]  # tables, each reserved page, stack_top: from the shim start
    frames: int  # page-table frames
    kernel_entry: int  # virtual; physical for pvh-passthrough
    boot_mode_virt: int
    boot_mode_phys: int
    hypercall_virt: int  # the hypercall page the shim calls through (0: none)
    hypercall_phys: int
    pv_virt_base: int  # what the PV path subtracts for a pseudo-physical address
    pv_abi: bool = False  # the PV ABI layer is in (33_hypercall_page.S installs it)
    kernel_frames: int = 0  # the layer's tables for the kernel, at offsets["kernel_tables"]

    def virt(self, name: str) -> int:
        return (self.shim_vaddr + self.offsets[name]) & MASK64

    def phys(self, name: str) -> int:
        return self.shim_paddr + self.offsets[name]

    def phys_or_zero(self, name: str) -> int:
        """phys(name), or 0 when this layout has no such page (a shim without the PV
        ABI layer: the values are then used by no template it assembles)."""
        return self.phys(name) if name in self.offsets else 0


PageValues = Callable[[Placement], dict[str, int]]


def template_values(place: Placement, page_values: PageValues) -> dict[str, int | str]:
    """Every value a shim's templates take: fixed ones, the addresses every shim
    takes, and those of its handoff's reserved pages."""
    return {**fixed_values(), **shim_values(place), **page_values(place)}


def layout_keys(source: str) -> set[str]:
    """The placeholders of a template text the plan's layout provides."""
    return placeholders(source) - set(fixed_values())


def shim_values(place: Placement) -> dict[str, int]:
    """Addresses every handoff's shim may take."""
    stub = abi.HYPERCALL_STUB_SIZE
    hcall = place.hypercall_virt
    return {
        "SHIM_VIRT": place.shim_vaddr,
        "SHIM_PHYS": place.shim_paddr,
        "KERNEL_ENTRY": place.kernel_entry,
        "BOOT_MODE_VIRT": place.boot_mode_virt,
        "BOOT_MODE_PHYS": place.boot_mode_phys,
        "STACK_TOP_VIRT": place.virt("stack_top"),
        "STACK_TOP_PHYS": place.phys("stack_top"),
        "PML4_PHYS": place.phys("tables"),
        "PML4_VIRT": place.virt("tables"),
        "NR_PT_FRAMES": place.frames,
        "HCALL_PAGE_PHYS": place.hypercall_phys,
        "HCALL_PAGE_VIRT": hcall,  # the kernel's page, as its own tables map it
        "HCALL_CONSOLE_IO": hcall + abi.Hypercall.CONSOLE_IO * stub,
        "HCALL_SCHED_OP": hcall + abi.Hypercall.SCHED_OP * stub,
        "HCALL_MEMORY_OP": hcall + abi.Hypercall.MEMORY_OP * stub,
        "HCALL_HVM_OP": hcall + abi.Hypercall.HVM_OP * stub,
        "PV_VIRT_BASE": place.pv_virt_base,
        "PV_ABI": int(place.pv_abi),
        **(pv_traps_pages(place) if place.pv_abi else {}),
        **pv_memory_pages(place),
    }


def pv_memory_pages(place: Placement) -> dict[str, int]:
    """The PV ABI layer's pages (35_pv_memory.S): the kernel's tables, the end of the
    shim segment (they end it), the pfns standing for the console and xenstore rings
    and the kernel-table entries mapping those pfns."""
    tables = place.phys_or_zero("kernel_tables")
    end = tables + place.kernel_frames * PAGE
    return {
        "KERNEL_PML4_PHYS": tables,
        "KERNEL_PML4_VIRT": (tables - place.shim_paddr + place.shim_vaddr) & MASK64,
        "KERNEL_PT_FRAMES": place.kernel_frames,
        "PV_SHIM_END": end,
        "PV_SHIM_END_PFN": end >> abi.PAGE_SHIFT,
        # the padding xen.h promises after the kernel's region ends at this pfn
        "PV_PADDING_END_PFN": (end + abi.PV_BOOTSTRAP_PADDING) >> abi.PAGE_SHIFT,
        "PV_KERNEL_DELTA": (place.shim_vaddr - place.shim_paddr) & MASK64,
        "PV_CONSOLE_PFN": place.phys_or_zero("pv_console") >> abi.PAGE_SHIFT,
        "PV_STORE_PFN": place.phys_or_zero("pv_store") >> abi.PAGE_SHIFT,
        "PV_CONSOLE_PTE": place.phys_or_zero("pv_console_pte"),
        "PV_STORE_PTE": place.phys_or_zero("pv_store_pte"),
    }


def tss_descriptor(base: int) -> dict[str, int]:
    """The two quad words of a 64-bit TSS descriptor for a TSS at base (SDM vol. 3,
    8.2.3)."""
    low = TSS_LIMIT | (base & 0xFFFFFF) << 16 | TSS_TYPE_AVAILABLE << 40 | (base >> 24 & 0xFF) << 56
    return {"TSS_DESC_LOW": low, "TSS_DESC_HIGH": base >> 32 & 0xFFFFFFFF}


def pv_traps_pages(place: Placement) -> dict[str, int]:
    """The PV ABI layer's reserved pages (shim/pv_abi.py RESERVED_PAGES): the IDT, the
    GDT's reserved page with the trap table in its second half, the zero page, and
    vcpu_info[0] at the start of the start-info handoff's shared_info page."""
    return {
        "PV_IDT_VIRT": place.virt("pv_idt"),
        "PV_GDT_PAGE_VIRT": place.virt("pv_gdt"),
        "PV_TRAP_TABLE_VIRT": place.virt("pv_gdt") + TRAP_TABLE_OFFSET,
        "PV_XEN_STUBS_VIRT": place.virt("pv_gdt") + XEN_STUBS_OFFSET,
        **tss_descriptor(place.virt("pv_gdt") + TSS_OFFSET),
        "PV_ZERO_PTE": place.phys("pv_zero") | abi.PTE_PRESENT,  # read-only
        "VCPU_INFO_VIRT": place.virt("shared_info"),
    }


def start_info_pages(place: Placement) -> dict[str, int]:
    """start-info: the start_info page it fills, the scratch page its hypercalls use,
    the page Xen's shared_info is mapped into."""
    shared_info = place.phys("shared_info")
    return {
        "START_INFO_VIRT": place.virt("start_info"),
        "SHARED_INFO_PHYS": shared_info,
        "SHARED_INFO_PFN": shared_info >> abi.PAGE_SHIFT,
        **scratch_from_start_info(place.offsets["scratch"] - place.offsets["start_info"]),
    }


def scratch_from_start_info(scratch: int) -> dict[str, int]:
    """Displacements from the start_info page (r13 in 40_start_info.S) into scratch
    (not addresses: the same wherever the shim goes)."""
    places = scratch_layout()
    return {
        "SI_TO_HVM_PARAM": scratch + places["hvm_param"],
        "SI_TO_HVM_PARAM_VALUE": scratch
        + places["hvm_param"]
        + abi.XEN_HVM_PARAM.offset_of("value"),
        "SI_TO_ADD_TO_PHYSMAP": scratch + places["add_to_physmap"],
        "SI_TO_MEMORY_MAP": scratch + places["memory_map"],
        "SI_TO_MEMORY_MAP_NR": scratch
        + places["memory_map"]
        + abi.XEN_MEMORY_MAP.offset_of("nr_entries"),
        "SI_TO_E820_BUF": scratch + places["e820"],
    }


def hvm_info_pages(place: Placement) -> dict[str, int]:
    """hvm-start-info: the page its PV path builds an hvm_start_info in."""
    return {"HVM_INFO_VIRT": place.virt("hvm_info"), "HVM_INFO_PHYS": place.phys("hvm_info")}


def passthrough_pages(place: Placement) -> dict[str, int]:
    """pvh-passthrough: where it saves the loader's esp in its scratch page."""
    return {"SAVED_ESP_PHYS": place.phys("scratch") + SAVED_ESP_OFFSET}
