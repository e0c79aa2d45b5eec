"""Declarative boot structures and Xen ABI constants: the one source of every number.

Shipped inside the package as ``shimgen.structs``; downstream code and assembly
templates take offsets, sizes and constants from here, never typing them again.
"""

from .boot import (
    HVM_MEMMAP_TABLE_ENTRY,
    HVM_MODLIST_ENTRY,
    HVM_START_MAGIC,
    MAX_GUEST_CMDLINE,
    SIF_PM_MASK,
    START_INFO_MAGIC,
    START_INFO_MAGIC_PREFIX,
    E820Type,
    StartInfoFlags,
    boot_structures,
    hvm_start_info,
    start_info,
)
from .clayout import Field, Leaf, Record, round_up
from .notes import (
    ELF_NOTE_HEADER,
    LEGACY_GUEST_KEYS,
    LEGACY_GUEST_SECTION,
    NOTE_ALIGN,
    XEN_NOTE_NAME,
    XEN_NUMBER_SIZES,
    XEN_STRING_MAX,
    XEN_STRING_NOTE_CUT,
    Payload,
    XenNote,
)

__all__ = [
    "ELF_NOTE_HEADER",
    "HVM_MEMMAP_TABLE_ENTRY",
    "HVM_MODLIST_ENTRY",
    "HVM_START_MAGIC",
    "LEGACY_GUEST_KEYS",
    "LEGACY_GUEST_SECTION",
    "MAX_GUEST_CMDLINE",
    "NOTE_ALIGN",
    "SIF_PM_MASK",
    "START_INFO_MAGIC",
    "START_INFO_MAGIC_PREFIX",
    "XEN_NOTE_NAME",
    "XEN_NUMBER_SIZES",
    "XEN_STRING_MAX",
    "XEN_STRING_NOTE_CUT",
    "E820Type",
    "Field",
    "Leaf",
    "Payload",
    "Record",
    "StartInfoFlags",
    "XenNote",
    "boot_structures",
    "hvm_start_info",
    "round_up",
    "start_info",
]
