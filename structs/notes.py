"""Xen ELF notes (xen/include/public/elfnote.h) and the ELF note header.

Each note type carries the kind of payload Xen's libelf reads from it, so decoding,
validation and writing all follow one table.
"""

from __future__ import annotations

import enum

from .clayout import U32, Field, Record

XEN_NOTE_NAME = b"Xen"
NOTE_ALIGN = 4  # Xen pads name and desc to 4 bytes in both ELF classes
XEN_STRING_NOTE_CUT = 16  # libelf keeps 16 bytes of GUEST_OS, LOADER, XEN_VERSION, GUEST_VERSION
XEN_STRING_MAX = 4096  # libelf reads a string note up to the first NUL, at most this far
XEN_NUMBER_SIZES = (1, 2, 4, 8)  # any other desc size reads as 0

# The ELF note header is three 32-bit words in both ELF classes.
ELF_NOTE_HEADER = Record(
    "elf_note_header",
    (
        Field("namesz", U32, "bytes of name, NUL included"),
        Field("descsz", U32, "bytes of payload"),
        Field("type", U32, "note type within the owner's namespace"),
    ),
)


class Payload(enum.Enum):
    """How libelf reads a note's desc."""

    NUMBER = "number"  # 1, 2, 4 or 8 bytes, little endian
    STRING = "string"  # NUL-terminated
    FEATURES = "features"  # string, '|'-separated, '!' marks a required feature
    BITMAPS = "bitmaps"  # array of u32 feature bitmaps, OR'ed
    MASK_PAIRS = "mask_pairs"  # (mask, value) pairs of PTE bits
    U32 = "u32"  # read as a u32 whatever descsz says (PHYS32_ENTRY)
    U32_ARRAY = "u32_array"  # 0 to 3 u32 (PHYS32_RELOC)


class XenNote(enum.IntEnum):
    """XEN_ELFNOTE_* types."""

    ENTRY = 1
    HYPERCALL_PAGE = 2
    VIRT_BASE = 3
    PADDR_OFFSET = 4
    XEN_VERSION = 5
    GUEST_OS = 6
    GUEST_VERSION = 7
    LOADER = 8
    PAE_MODE = 9
    FEATURES = 10
    BSD_SYMTAB = 11
    HV_START_LOW = 12
    L1_MFN_VALID = 13
    SUSPEND_CANCEL = 14
    INIT_P2M = 15
    MOD_START_PFN = 16
    SUPPORTED_FEATURES = 17
    PHYS32_ENTRY = 18
    PHYS32_RELOC = 19

    @property
    def payload(self) -> Payload:
        return NOTE_PAYLOAD[self]

    @property
    def cut_to_16(self) -> bool:
        """libelf keeps only the first 16 bytes of these strings."""
        return self in (
            XenNote.GUEST_OS,
            XenNote.LOADER,
            XenNote.XEN_VERSION,
            XenNote.GUEST_VERSION,
        )

    @property
    def accumulates(self) -> bool:
        """Repeated notes of these types add up; for all others the last one wins."""
        return self in (XenNote.FEATURES, XenNote.SUPPORTED_FEATURES)


NOTE_PAYLOAD: dict[XenNote, Payload] = {
    XenNote.ENTRY: Payload.NUMBER,
    XenNote.HYPERCALL_PAGE: Payload.NUMBER,
    XenNote.VIRT_BASE: Payload.NUMBER,
    XenNote.PADDR_OFFSET: Payload.NUMBER,
    XenNote.XEN_VERSION: Payload.STRING,
    XenNote.GUEST_OS: Payload.STRING,
    XenNote.GUEST_VERSION: Payload.STRING,
    XenNote.LOADER: Payload.STRING,
    XenNote.PAE_MODE: Payload.STRING,
    XenNote.FEATURES: Payload.FEATURES,
    XenNote.BSD_SYMTAB: Payload.STRING,
    XenNote.HV_START_LOW: Payload.NUMBER,
    XenNote.L1_MFN_VALID: Payload.MASK_PAIRS,
    XenNote.SUSPEND_CANCEL: Payload.NUMBER,
    XenNote.INIT_P2M: Payload.NUMBER,
    XenNote.MOD_START_PFN: Payload.NUMBER,
    XenNote.SUPPORTED_FEATURES: Payload.BITMAPS,
    XenNote.PHYS32_ENTRY: Payload.U32,
    XenNote.PHYS32_RELOC: Payload.U32_ARRAY,
}

# Keys of the legacy `__xen_guest` section ("NAME=VALUE,...") and the note each stands for.
# HYPERCALL_PAGE there is a page number relative to VIRT_BASE, not an address.
LEGACY_GUEST_KEYS: dict[str, XenNote] = {
    "LOADER": XenNote.LOADER,
    "GUEST_OS": XenNote.GUEST_OS,
    "GUEST_VER": XenNote.GUEST_VERSION,
    "XEN_VER": XenNote.XEN_VERSION,
    "PAE": XenNote.PAE_MODE,
    "BSD_SYMTAB": XenNote.BSD_SYMTAB,
    "VIRT_BASE": XenNote.VIRT_BASE,
    "VIRT_ENTRY": XenNote.ENTRY,
    "ELF_PADDR_OFFSET": XenNote.PADDR_OFFSET,
    "HYPERCALL_PAGE": XenNote.HYPERCALL_PAGE,
    "FEATURES": XenNote.FEATURES,
}
LEGACY_GUEST_SECTION = "__xen_guest"
