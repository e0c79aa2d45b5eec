"""The few ELF constants shimgen reads and writes (System V gABI, x86 psABI)."""

from __future__ import annotations

import enum

ELF_MAGIC = b"\x7fELF"
EI_CLASS = 4
EI_DATA = 5
ELFCLASS32 = 1
ELFCLASS64 = 2
ELFDATA2LSB = 1
ELF_HEADER_SIZE = {ELFCLASS32: 52, ELFCLASS64: 64}
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
