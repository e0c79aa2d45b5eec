"""The few ELF constants shimgen reads and writes (System V gABI, x86 psABI)."""

from __future__ import annotations

import enum
from functools import cache

from .clayout import U8, U16, U32, U64, CharArray, Field, Record, Scalar

ELF_MAGIC = b"\x7fELF"
EI_CLASS = 4
EI_DATA = 5
ELFCLASS32 = 1
ELFCLASS64 = 2
ELFDATA2LSB = 1
GZIP_MAGIC = b"\x1f\x8b"


class Machine(enum.IntEnum):
    X86 = 3  # EM_386
    X86_64 = 62  # EM_X86_64


class SegmentType(enum.IntEnum):
    NULL = 0
    LOAD = 1
    DYNAMIC = 2
    INTERP = 3
    NOTE = 4
    SHLIB = 5
    PHDR = 6
    TLS = 7
    GNU_EH_FRAME = 0x6474E550
    GNU_STACK = 0x6474E551
    GNU_RELRO = 0x6474E552
    GNU_PROPERTY = 0x6474E553


class SegmentFlags(enum.IntFlag):
    X = 1
    W = 2
    R = 4


SHT_NOTE = 7
SHT_NOBITS = 8

# Multiboot v1 header: QEMU's -kernel prefers it over the PVH note when present.
MULTIBOOT_HEADER_MAGIC = 0x1BADB002
MULTIBOOT_SEARCH_BYTES = 8192

# rust-vmm linux-loader refuses ELF kernels whose e_entry is below this (HIMEM_START).
LINUX_LOADER_MIN_ENTRY = 0x100000


# --- the ELF tables, declared once per class ------------------------------------------
# Word-size dependent like pyelftools' structs: addresses, offsets and sizes are 4
# bytes in ELF32 and 8 in ELF64, and Elf32_Phdr orders its members differently.

SHT_SYMTAB = 2
SHT_STRTAB = 3
SHT_DYNSYM = 11
SHN_UNDEF = 0
# Dynamic section tags (gABI): the shared libraries a program needs.
DT_NULL = 0
DT_NEEDED = 1
SHN_XINDEX = 0xFFFF
PN_XNUM = 0xFFFF


def _word(bits: int) -> Scalar:
    return U64 if bits == 64 else U32


@cache
def elf_header(bits: int) -> Record:
    word = _word(bits)
    return Record(
        f"Elf{bits}_Ehdr",
        (
            Field("e_ident", CharArray(16)),
            Field("e_type", U16),
            Field("e_machine", U16),
            Field("e_version", U32),
            Field("e_entry", word),
            Field("e_phoff", word),
            Field("e_shoff", word),
            Field("e_flags", U32),
            Field("e_ehsize", U16),
            Field("e_phentsize", U16),
            Field("e_phnum", U16),
            Field("e_shentsize", U16),
            Field("e_shnum", U16),
            Field("e_shstrndx", U16),
        ),
    )


@cache
def program_header(bits: int) -> Record:
    word = _word(bits)
    if bits == 64:
        order = (
            "p_type",
            "p_flags",
            "p_offset",
            "p_vaddr",
            "p_paddr",
            "p_filesz",
            "p_memsz",
            "p_align",
        )
    else:
        order = (
            "p_type",
            "p_offset",
            "p_vaddr",
            "p_paddr",
            "p_filesz",
            "p_memsz",
            "p_flags",
            "p_align",
        )
    widths = {"p_type": U32, "p_flags": U32}
    return Record(f"Elf{bits}_Phdr", tuple(Field(name, widths.get(name, word)) for name in order))


@cache
def section_header(bits: int) -> Record:
    word = _word(bits)
    return Record(
        f"Elf{bits}_Shdr",
        (
            Field("sh_name", U32),
            Field("sh_type", U32),
            Field("sh_flags", word),
            Field("sh_addr", word),
            Field("sh_offset", word),
            Field("sh_size", word),
            Field("sh_link", U32),
            Field("sh_info", U32),
            Field("sh_addralign", word),
            Field("sh_entsize", word),
        ),
    )


@cache
def symbol(bits: int) -> Record:
    if bits == 64:
        fields = (
            Field("st_name", U32),
            Field("st_info", U8),
            Field("st_other", U8),
            Field("st_shndx", U16),
            Field("st_value", U64),
            Field("st_size", U64),
        )
    else:
        fields = (
            Field("st_name", U32),
            Field("st_value", U32),
            Field("st_size", U32),
            Field("st_info", U8),
            Field("st_other", U8),
            Field("st_shndx", U16),
        )
    return Record(f"Elf{bits}_Sym", fields)


@cache
def dynamic_entry(bits: int) -> Record:
    word = _word(bits)
    return Record(f"Elf{bits}_Dyn", (Field("d_tag", word), Field("d_val", word)))
