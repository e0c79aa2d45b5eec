"""Xen's boot structures: start_info_t (PV) and struct hvm_start_info (PVH).

Declared once here, in the order and with the C types of Xen's public headers
(xen/include/public/xen.h, arch-x86/hvm/start_info.h); offsets and sizes come from
the layout engine, and tests compare them with gcc's view of the real headers.
Word-size dependent structures take the guest's word size, as pyelftools does for
ELF32/ELF64.
"""

from __future__ import annotations

import enum
from functools import cache

from .clayout import U32, U64, CharArray, Field, Record, Scalar

# --- constants of the boot protocols ---------------------------------------------

HVM_START_MAGIC = 0x336EC578  # XEN_HVM_START_MAGIC_VALUE
MAX_GUEST_CMDLINE = 1024
# Every PV magic Xen writes is "xen-<version>-<platform>" (xen/include/public/xen.h,
# start_info_t) and guests (Linux, Mini-OS) only insist on this prefix; the platform
# part tells the word size.
START_INFO_MAGIC_PREFIX = b"xen-3.0-"
START_INFO_MAGIC = {
    64: START_INFO_MAGIC_PREFIX + b"x86_64",
    32: START_INFO_MAGIC_PREFIX + b"x86_32p",
}


class StartInfoFlags(enum.IntFlag):
    """SIF_* bits of start_info_t.flags and hvm_start_info.flags."""

    PRIVILEGED = 1 << 0  # the guest is a privileged domain
    INITDOMAIN = 1 << 1  # the guest is the initial domain (dom0)
    MULTIBOOT_MOD = 1 << 2  # mod_start/mod_len describe a multiboot module list
    MOD_START_PFN = 1 << 3  # mod_start is a PFN, not a virtual address
    VIRT_P2M_4TOOLS = 1 << 4  # the toolstack may use the virtual P2M list


SIF_PM_MASK = 0xFF << 8  # power-management bits, reserved for dom0


class E820Type(enum.IntEnum):
    """Memory-map entry types (hvm_memmap_table_entry.type)."""

    RAM = 1
    RESERVED = 2
    ACPI = 3
    NVS = 4
    UNUSABLE = 5
    DISABLED = 6
    PMEM = 7


# --- start_info_t -------------------------------------------------------------------


def _ulong(word_bits: int) -> Scalar:
    return Scalar("unsigned long", word_bits // 8)


@cache
def start_info(word_bits: int = 64) -> Record:
    """start_info_t as a PV guest of the given word size (64 or 32) receives it."""
    if word_bits not in (32, 64):
        raise ValueError("word_bits must be 32 or 64")
    ulong = _ulong(word_bits)
    pfn = Scalar("xen_pfn_t", word_bits // 8)
    console = Record(
        "start_info_console",
        (
            Field(
                "domU",
                Record(
                    "start_info_console_domU",
                    (
                        Field("mfn", pfn, "machine frame of the console ring"),
                        Field("evtchn", U32, "event channel of the console ring"),
                    ),
                ),
            ),
            Field(
                "dom0",
                Record(
                    "start_info_console_dom0",
                    (
                        Field("info_off", U32, "offset of console_info in start_info page"),
                        Field("info_size", U32, "size of console_info"),
                    ),
                ),
            ),
        ),
        kind="union",
    )
    return Record(
        "start_info",
        (
            Field("magic", CharArray(32), f'"{START_INFO_MAGIC[word_bits].decode()}"'),
            Field("nr_pages", ulong, "total pages allocated to the guest"),
            Field("shared_info", ulong, "machine address of shared_info"),
            Field("flags", U32, "SIF_* flags"),
            Field("store_mfn", pfn, "machine frame of the xenstore ring"),
            Field("store_evtchn", U32, "event channel of the xenstore ring"),
            Field("console", console),
            Field("pt_base", ulong, "virtual address of the boot page tables"),
            Field("nr_pt_frames", ulong, "number of boot page-table frames"),
            Field("mfn_list", ulong, "virtual address of the P2M list"),
            Field("mod_start", ulong, "virtual address (or PFN) of the first module"),
            Field("mod_len", ulong, "size of the first module in bytes"),
            Field("cmd_line", CharArray(MAX_GUEST_CMDLINE), "NUL-terminated command line"),
            Field("first_p2m_pfn", ulong, "first PFN of the P2M table"),
            Field("nr_p2m_frames", ulong, "frames of the P2M table"),
        ),
        doc="What Xen hands a PV guest in rsi (xen/include/public/xen.h)",
    )


# --- struct hvm_start_info and its tables --------------------------------------------

_HVM_START_INFO_V0_FIELDS = (
    Field("magic", U32, "XEN_HVM_START_MAGIC_VALUE"),
    Field("version", U32, "0 or 1"),
    Field("flags", U32, "SIF_* flags"),
    Field("nr_modules", U32, "entries in the module list"),
    Field("modlist_paddr", U64, "physical address of hvm_modlist_entry[]"),
    Field("cmdline_paddr", U64, "physical address of the command line"),
    Field("rsdp_paddr", U64, "physical address of the ACPI RSDP"),
)
_HVM_START_INFO_V1_FIELDS = (
    Field("memmap_paddr", U64, "physical address of hvm_memmap_table_entry[]"),
    Field("memmap_entries", U32, "entries in the memory map"),
    Field("reserved", U32, "must be zero"),
)


@cache
def hvm_start_info(version: int = 1) -> Record:
    """struct hvm_start_info as the given version defines it (0: 40 bytes, 1: 56)."""
    if version == 0:
        fields = _HVM_START_INFO_V0_FIELDS
    elif version == 1:
        fields = _HVM_START_INFO_V0_FIELDS + _HVM_START_INFO_V1_FIELDS
    else:
        raise ValueError("hvm_start_info versions are 0 and 1")
    return Record(
        "hvm_start_info",
        fields,
        doc=f"What a PVH loader hands the guest in ebx, version {version}",
    )


HVM_MODLIST_ENTRY = Record(
    "hvm_modlist_entry",
    (
        Field("paddr", U64, "physical address of the module"),
        Field("size", U64, "size of the module in bytes"),
        Field("cmdline_paddr", U64, "physical address of its command line"),
        Field("reserved", U64, "must be zero"),
    ),
)

HVM_MEMMAP_TABLE_ENTRY = Record(
    "hvm_memmap_table_entry",
    (
        Field("addr", U64, "base address"),
        Field("size", U64, "length in bytes"),
        Field("type", U32, "E820 type"),
        Field("reserved", U32, "must be zero"),
    ),
)


def boot_structures() -> dict[str, Record]:
    """Every boot structure by the name the CLI uses for it."""
    return {
        "start_info": start_info(64),
        "start_info_x86_32": start_info(32),
        "hvm_start_info": hvm_start_info(1),
        "hvm_start_info_v0": hvm_start_info(0),
        "hvm_modlist_entry": HVM_MODLIST_ENTRY,
        "hvm_memmap_table_entry": HVM_MEMMAP_TABLE_ENTRY,
    }
