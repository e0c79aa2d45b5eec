"""ELF table layouts (System V gABI) and a builder that writes any value anywhere.

Written from the gABI, not from shimgen's declarations, so that a wrong constant in
shimgen cannot hide in the fuzz inputs too. `RawElf` places the header, the tables
and arbitrary blobs at explicit offsets and packs every field exactly as given
(masked to its width): nothing is validated, which is the point.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# (name, struct code) per member, in file order.
EHDR_FIELDS = {
    64: (
        ("e_ident", "16s"),
        ("e_type", "H"),
        ("e_machine", "H"),
        ("e_version", "I"),
        ("e_entry", "Q"),
        ("e_phoff", "Q"),
        ("e_shoff", "Q"),
        ("e_flags", "I"),
        ("e_ehsize", "H"),
        ("e_phentsize", "H"),
        ("e_phnum", "H"),
        ("e_shentsize", "H"),
        ("e_shnum", "H"),
        ("e_shstrndx", "H"),
    ),
    32: (
        ("e_ident", "16s"),
        ("e_type", "H"),
        ("e_machine", "H"),
        ("e_version", "I"),
        ("e_entry", "I"),
        ("e_phoff", "I"),
        ("e_shoff", "I"),
        ("e_flags", "I"),
        ("e_ehsize", "H"),
        ("e_phentsize", "H"),
        ("e_phnum", "H"),
        ("e_shentsize", "H"),
        ("e_shnum", "H"),
        ("e_shstrndx", "H"),
    ),
}
PHDR_FIELDS = {
    64: (
        ("p_type", "I"),
        ("p_flags", "I"),
        ("p_offset", "Q"),
        ("p_vaddr", "Q"),
        ("p_paddr", "Q"),
        ("p_filesz", "Q"),
        ("p_memsz", "Q"),
        ("p_align", "Q"),
    ),
    32: (
        ("p_type", "I"),
        ("p_offset", "I"),
        ("p_vaddr", "I"),
        ("p_paddr", "I"),
        ("p_filesz", "I"),
        ("p_memsz", "I"),
        ("p_flags", "I"),
        ("p_align", "I"),
    ),
}
SHDR_FIELDS = {
    64: (
        ("sh_name", "I"),
        ("sh_type", "I"),
        ("sh_flags", "Q"),
        ("sh_addr", "Q"),
        ("sh_offset", "Q"),
        ("sh_size", "Q"),
        ("sh_link", "I"),
        ("sh_info", "I"),
        ("sh_addralign", "Q"),
        ("sh_entsize", "Q"),
    ),
    32: tuple(
        (name, "I")
        for name in (
            "sh_name",
            "sh_type",
            "sh_flags",
            "sh_addr",
            "sh_offset",
            "sh_size",
            "sh_link",
            "sh_info",
            "sh_addralign",
            "sh_entsize",
        )
    ),
}
SYM64_FIELDS = (
    ("st_name", "I"),
    ("st_info", "B"),
    ("st_other", "B"),
    ("st_shndx", "H"),
    ("st_value", "Q"),
    ("st_size", "Q"),
)
NOTE_HEADER = struct.Struct("<III")  # namesz, descsz, type: 12 bytes in both classes

EM_386, EM_X86_64 = 3, 62
PT_LOAD, PT_NOTE = 1, 4
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_NOTE = 1, 2, 3, 7
PF_X, PF_W, PF_R = 1, 2, 4


@dataclass(frozen=True)
class FieldSpot:
    """Where one header field sits in a file: what a structure-aware mutation hits."""

    name: str
    offset: int
    size: int


def layout(fields: tuple[tuple[str, str], ...]) -> struct.Struct:
    return struct.Struct("<" + "".join(code for _, code in fields))


def pack(fields: tuple[tuple[str, str], ...], values: dict[str, int | bytes]) -> bytes:
    packed = []
    for name, code in fields:
        value = values.get(name, b"" if code.endswith("s") else 0)
        if isinstance(value, int):
            value &= (1 << (8 * struct.calcsize(code))) - 1
        packed.append(value)
    return layout(fields).pack(*packed)


def spots(fields: tuple[tuple[str, str], ...], base: int, prefix: str = "") -> list[FieldSpot]:
    result, offset = [], base
    for name, code in fields:
        size = struct.calcsize(code)
        if not code.endswith("s"):
            result.append(FieldSpot(prefix + name, offset, size))
        offset += size
    return result


def ident(bits: int) -> bytes:
    return b"\x7fELF" + bytes([2 if bits == 64 else 1, 1, 1]) + bytes(9)


def note(owner: bytes, kind: int, desc: bytes) -> bytes:
    name = owner + b"\0"
    return (
        NOTE_HEADER.pack(len(name), len(desc), kind)
        + name.ljust(-(-len(name) // 4) * 4, b"\0")
        + desc.ljust(-(-len(desc) // 4) * 4, b"\0")
    )


@dataclass
class RawElf:
    """An ELF file laid out by hand: every offset and count is the caller's."""

    bits: int = 64
    header: dict[str, int | bytes] = field(default_factory=dict)
    phdrs: list[dict[str, int]] = field(default_factory=list)
    shdrs: list[dict[str, int]] = field(default_factory=list)
    blobs: list[tuple[int, bytes]] = field(default_factory=list)
    size: int | None = None  # None: up to the last thing placed; else cut or padded

    @property
    def ehdr_size(self) -> int:
        return layout(EHDR_FIELDS[self.bits]).size

    @property
    def phentsize(self) -> int:
        return layout(PHDR_FIELDS[self.bits]).size

    @property
    def shentsize(self) -> int:
        return layout(SHDR_FIELDS[self.bits]).size

    def build(self) -> bytes:
        pieces = [(0, self._ehdr())]
        phoff, shoff = self._table_offsets()
        pieces.append((phoff, b"".join(pack(PHDR_FIELDS[self.bits], p) for p in self.phdrs)))
        pieces.append((shoff, b"".join(pack(SHDR_FIELDS[self.bits], s) for s in self.shdrs)))
        pieces += self.blobs
        end = max(offset + len(data) for offset, data in pieces)
        out = bytearray(end)
        for offset, data in pieces:
            out[offset : offset + len(data)] = data
        if self.size is not None:
            out = out[: self.size].ljust(self.size, b"\0")
        return bytes(out)

    def _table_offsets(self) -> tuple[int, int]:
        """Where the tables are written (the header may claim something else)."""
        phsize = self.phentsize * len(self.phdrs)
        first_blob = min((offset for offset, _ in self.blobs), default=1 << 64)
        blob_end = max((offset + len(data) for offset, data in self.blobs), default=0)
        blob_end += -blob_end % 8
        # Right after the ELF header when the table fits there, else after the blobs.
        phoff = self.ehdr_size if self.ehdr_size + phsize <= first_blob else blob_end
        shoff = max(phoff + phsize, blob_end)
        shoff += -shoff % 8
        return phoff, shoff

    def _ehdr(self) -> bytes:
        phoff, shoff = self._table_offsets()
        machine = EM_X86_64 if self.bits == 64 else EM_386
        values: dict[str, int | bytes] = {
            "e_ident": ident(self.bits),
            "e_type": 2,
            "e_machine": machine,
            "e_version": 1,
            "e_phoff": phoff if self.phdrs else 0,
            "e_shoff": shoff if self.shdrs else 0,
            "e_ehsize": self.ehdr_size,
            "e_phentsize": self.phentsize,
            "e_phnum": len(self.phdrs),
            "e_shentsize": self.shentsize,
            "e_shnum": len(self.shdrs),
            "e_shstrndx": len(self.shdrs) - 1 if self.shdrs else 0,
        }
        values.update(self.header)
        return pack(EHDR_FIELDS[self.bits], values)


def field_spots(data: bytes, limit: int = 64) -> list[FieldSpot]:
    """Every ELF header, program header, section header and note header field the
    file's own tables point at (at most `limit` entries per table)."""
    if len(data) < 52 or data[:4] != b"\x7fELF" or data[4] not in (1, 2):
        return []
    bits = 64 if data[4] == 2 else 32
    ehdr_layout = layout(EHDR_FIELDS[bits])
    if len(data) < ehdr_layout.size:
        return []
    names = [name for name, _ in EHDR_FIELDS[bits]]
    header = dict(zip(names, ehdr_layout.unpack_from(data), strict=True))
    found = spots(EHDR_FIELDS[bits], 0)
    phdrs = _table(data, PHDR_FIELDS[bits], header["e_phoff"], header["e_phnum"], limit)
    for index, (offset, _) in enumerate(phdrs):
        found += spots(PHDR_FIELDS[bits], offset, f"phdr[{index}].")
    shdrs = _table(data, SHDR_FIELDS[bits], header["e_shoff"], header["e_shnum"], limit)
    for index, (offset, _) in enumerate(shdrs):
        found += spots(SHDR_FIELDS[bits], offset, f"shdr[{index}].")
    containers = [(p["p_offset"], p["p_filesz"]) for _, p in phdrs if p["p_type"] == PT_NOTE]
    containers += [(s["sh_offset"], s["sh_size"]) for _, s in shdrs if s["sh_type"] == SHT_NOTE]
    for start, size in containers:
        found += _note_spots(data, start, size, limit)
    return found


def _table(
    data: bytes, fields: tuple[tuple[str, str], ...], offset: int, count: int, limit: int
) -> list[tuple[int, dict[str, int]]]:
    record = layout(fields)
    names = [name for name, _ in fields]
    entries = []
    for index in range(min(count, limit)):
        at = offset + index * record.size
        if at + record.size > len(data):
            break
        entries.append((at, dict(zip(names, record.unpack_from(data, at), strict=True))))
    return entries


def _note_spots(data: bytes, start: int, size: int, limit: int) -> list[FieldSpot]:
    found: list[FieldSpot] = []
    position, end = start, min(start + size, len(data))
    while position + NOTE_HEADER.size <= end and len(found) < 3 * limit:
        namesz, descsz, _ = NOTE_HEADER.unpack_from(data, position)
        found += [
            FieldSpot(f"note@{position:#x}.namesz", position, 4),
            FieldSpot(f"note@{position:#x}.descsz", position + 4, 4),
            FieldSpot(f"note@{position:#x}.type", position + 8, 4),
        ]
        position += 12 + -(-namesz // 4) * 4 + -(-descsz // 4) * 4
    return found
