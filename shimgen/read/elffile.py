"""The ELF tables of an image, read with the declarations in structs/elf.py.

This is all `image` needs from an ELF parser: the header, the program headers, the
section headers with their names, and the symbols. Reading them here instead of
through LIEF keeps `inspect` and `check` fast (importing LIEF alone takes about
0.45 s on the development machine) and lets every bound be checked the way Xen's
libelf checks it: a table that runs past the end of the file is reported, not
trusted. The test suite compares this reader with LIEF on every image it has.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import BadInput
from ..structs.clayout import Record
from ..structs.elf import (
    EI_CLASS,
    ELFCLASS64,
    PN_XNUM,
    SHT_DYNSYM,
    SHT_SYMTAB,
    elf_header,
    program_header,
    section_header,
    symbol,
)

MAX_SYMBOLS = 1 << 20  # no unikernel has a million symbols; bounds hostile tables


@dataclass(frozen=True)
class ElfTables:
    """The ELF header, program headers and section headers, as decoded."""

    bits: int
    header: dict[str, int]
    program_headers: list[dict[str, int]]
    section_headers: list[dict[str, int]]
    section_names: list[str]
    symbols: dict[str, int]
    problems: list[str]  # tables cut by the end of the file, as libelf's elf_init sees them
    warnings: list[str]  # read, but not as the gABI lays them out (entries that overlap)


def read_tables(data: bytes, name: str) -> ElfTables:
    bits = 64 if data[EI_CLASS] == ELFCLASS64 else 32
    header = _parse(elf_header(bits), data, 0)
    if header is None:
        raise BadInput(f"{name}: truncated: {len(data)} bytes, shorter than an ELF header")
    problems: list[str] = []
    warnings: list[str] = []
    phdrs = _table(
        data,
        program_header(bits),
        header["e_phoff"],
        header["e_phentsize"],
        _phnum(header),
        "program header",
        problems,
        warnings,
    )
    shdrs = _table(
        data,
        section_header(bits),
        header["e_shoff"],
        header["e_shentsize"],
        _shnum(header, data, bits),
        "section header",
        problems,
        warnings,
    )
    names = _section_names(data, shdrs, header["e_shstrndx"])
    return ElfTables(
        bits=bits,
        header=header,
        program_headers=phdrs,
        section_headers=shdrs,
        section_names=names,
        symbols=_symbols(data, bits, shdrs),
        problems=problems,
        warnings=warnings,
    )


def _parse(record: Record, data: bytes, offset: int) -> dict[str, int] | None:
    if offset < 0 or offset + record.size > len(data):
        return None
    return record.unpack_from(data, offset)  # type: ignore[return-value]


def _phnum(header: dict[str, int]) -> int:
    # PN_XNUM (extended numbering) keeps the real count in section 0; Xen's libelf
    # does not support it, so neither do we: such an image has no usable segments.
    return 0 if header["e_phnum"] == PN_XNUM else header["e_phnum"]


def _shnum(header: dict[str, int], data: bytes, bits: int) -> int:
    if header["e_shnum"] or not header["e_shoff"]:
        return header["e_shnum"]
    # e_shnum 0 with a table: the count is in section 0's sh_size (gABI).
    first = _parse(section_header(bits), data, header["e_shoff"])
    return min(first["sh_size"], len(data) // section_header(bits).size) if first else 0


def _table(
    data: bytes,
    record: Record,
    offset: int,
    entry_size: int,
    count: int,
    what: str,
    problems: list[str],
    warnings: list[str],
) -> list[dict[str, int]]:
    """count entries of record's size, entry_size apart, as Xen's libelf reads them
    (elf_phdr_by_index, elf_shdr_by_index): a table whose entries are smaller than
    the record overlaps itself, and libelf reads it that way instead of refusing it;
    only a table that ends past the file is refused (elf_init)."""
    if count == 0:
        return []
    end = offset + entry_size * count
    if end > len(data):
        problems.append(f"{what} table ends at {end:#x}, past the end of the file")
    if entry_size < record.size:
        warnings.append(
            f"{what} entries are {entry_size} bytes, smaller than {record.size}: read "
            f"{record.size} bytes every {entry_size}, overlapping, as Xen's libelf does"
        )
    entries = []
    for index in range(count):
        entry = _parse(record, data, offset + index * entry_size)
        if entry is None:
            break
        entries.append(entry)
    return entries


def _string(data: bytes, table: dict[str, int] | None, index: int) -> str:
    if table is None or index >= table["sh_size"]:
        return ""
    start = table["sh_offset"] + index
    end = min(table["sh_offset"] + table["sh_size"], len(data))
    if start >= end:
        return ""
    # find, not slice-then-split: a symbol costs its name's length, not the table's.
    stop = data.find(b"\0", start, end)
    return data[start : end if stop < 0 else stop].decode("latin-1")


def _section_names(data: bytes, shdrs: list[dict[str, int]], strndx: int) -> list[str]:
    table = shdrs[strndx] if 0 < strndx < len(shdrs) else None
    return [_string(data, table, shdr["sh_name"]) for shdr in shdrs]


def _symbols(data: bytes, bits: int, shdrs: list[dict[str, int]]) -> dict[str, int]:
    """Named symbols of .symtab, then .dynsym; the first definition of a name wins.

    The gABI allows one table of each kind, so only the first of each is read (a
    hostile file with thousands of symbol tables costs no more than a real one).
    """
    record = symbol(bits)
    table: dict[str, int] = {}
    for kind in (SHT_SYMTAB, SHT_DYNSYM):
        shdr = next((s for s in shdrs if s["sh_type"] == kind), None)
        if shdr is None:
            continue
        strings = shdrs[shdr["sh_link"]] if shdr["sh_link"] < len(shdrs) else None
        in_file = max(0, len(data) - shdr["sh_offset"]) // record.size
        count = min(shdr["sh_size"] // record.size, in_file, MAX_SYMBOLS)
        for index in range(count):
            entry = _parse(record, data, shdr["sh_offset"] + index * record.size)
            if entry is None:
                break
            name = _string(data, strings, entry["st_name"])
            if name and name not in table:
                table[name] = entry["st_value"]
    return table
