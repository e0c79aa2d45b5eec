"""Hand-made hostile ELFs: one named case per way a header can lie.

Every case starts from `base()`, a small valid 64-bit PV kernel (Xen notes in a
PT_NOTE and in an SHT_NOTE section, a symbol table), and breaks one thing. Each is a
seed for the mutating fuzzer and is run through every oracle on its own.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable

from .elf import (
    NOTE_HEADER,
    PF_R,
    PF_W,
    PF_X,
    PT_LOAD,
    PT_NOTE,
    SHT_NOTE,
    SHT_PROGBITS,
    SHT_STRTAB,
    SHT_SYMTAB,
    SYM64_FIELDS,
    RawElf,
    note,
    pack,
)

VIRT_BASE = 0xFFFFFFFF80000000
PHYS = 0x100000
VIRT = VIRT_BASE + PHYS
TEXT_OFFSET = 0x1000
TEXT_SIZE = 0x2000
NOTES_OFFSET = TEXT_OFFSET + TEXT_SIZE
TOP = 1 << 64
XEN = b"Xen"
# XEN_ELFNOTE_* (xen/include/public/elfnote.h)
ENTRY, HYPERCALL_PAGE, VIRT_BASE_NOTE, PADDR_OFFSET = 1, 2, 3, 4
XEN_VERSION, GUEST_OS, LOADER, FEATURES, PHYS32_ENTRY = 5, 6, 8, 10, 18
SHIMGEN_META_TYPE = 0x5348


def xen_notes(entry: int = VIRT, extra: tuple[bytes, ...] = ()) -> bytes:
    return b"".join(
        (
            note(XEN, GUEST_OS, b"hostile\0"),
            note(XEN, XEN_VERSION, b"xen-3.0\0"),
            note(XEN, LOADER, b"generic\0"),
            note(XEN, VIRT_BASE_NOTE, struct.pack("<Q", VIRT_BASE)),
            note(XEN, PADDR_OFFSET, struct.pack("<Q", 0)),
            note(XEN, ENTRY, struct.pack("<Q", entry)),
            note(XEN, HYPERCALL_PAGE, struct.pack("<Q", VIRT + 0x1000)),
            *extra,
        )
    )


def _strtab(names: list[bytes]) -> tuple[bytes, dict[bytes, int]]:
    table, index = b"\0", {}
    for name in names:
        index[name] = len(table)
        table += name + b"\0"
    return table, index


def base(notes: bytes | None = None) -> RawElf:
    """A valid PV64 kernel: text PT_LOAD, a PT_NOTE, sections, symbols."""
    notes = xen_notes() if notes is None else notes
    text = bytes([0xF4, 0xEB, 0xFD]).ljust(TEXT_SIZE, b"\xcc")
    symbols_at = NOTES_OFFSET + len(notes) + -len(notes) % 8
    strings, sym_index = _strtab([b"_start", b"hypercall_page"])
    symbols = pack(SYM64_FIELDS, {}) + b"".join(
        pack(SYM64_FIELDS, {"st_name": sym_index[name], "st_info": 0x10, "st_value": value})
        for name, value in ((b"_start", VIRT), (b"hypercall_page", VIRT + 0x1000))
    )
    strings_at = symbols_at + len(symbols)
    names, name_index = _strtab([b".text", b".note.Xen", b".symtab", b".strtab", b".shstrtab"])
    names_at = strings_at + len(strings)
    elf = RawElf(
        header={"e_entry": VIRT},
        phdrs=[
            _load(TEXT_OFFSET, VIRT, PHYS, TEXT_SIZE, TEXT_SIZE),
            {
                "p_type": PT_NOTE,
                "p_flags": PF_R,
                "p_offset": NOTES_OFFSET,
                "p_filesz": len(notes),
                "p_memsz": len(notes),
                "p_align": 4,
            },
        ],
        blobs=[
            (TEXT_OFFSET, text),
            (NOTES_OFFSET, notes),
            (symbols_at, symbols),
            (strings_at, strings),
            (names_at, names),
        ],
    )
    elf.shdrs = [
        {},
        _section(name_index[b".text"], SHT_PROGBITS, TEXT_OFFSET, TEXT_SIZE, addr=VIRT, flags=6),
        _section(name_index[b".note.Xen"], SHT_NOTE, NOTES_OFFSET, len(notes)),
        _section(name_index[b".symtab"], SHT_SYMTAB, symbols_at, len(symbols), link=4, entsize=24),
        _section(name_index[b".strtab"], SHT_STRTAB, strings_at, len(strings)),
        _section(name_index[b".shstrtab"], SHT_STRTAB, names_at, len(names)),
    ]
    return elf


def _load(offset: int, vaddr: int, paddr: int, filesz: int, memsz: int) -> dict[str, int]:
    return {
        "p_type": PT_LOAD,
        "p_flags": PF_R | PF_X,
        "p_offset": offset,
        "p_vaddr": vaddr,
        "p_paddr": paddr,
        "p_filesz": filesz,
        "p_memsz": memsz,
        "p_align": 0x1000,
    }


def _section(
    name: int, kind: int, offset: int, size: int, addr: int = 0, flags: int = 0, **more: int
) -> dict[str, int]:
    return {
        "sh_name": name,
        "sh_type": kind,
        "sh_flags": flags,
        "sh_addr": addr,
        "sh_offset": offset,
        "sh_size": size,
        "sh_addralign": 4,
        **{f"sh_{key}": value for key, value in more.items()},
    }


def _with(elf: RawElf, change: Callable[[RawElf], None]) -> bytes:
    change(elf)
    return elf.build()


def _set_load(**values: int) -> Callable[[RawElf], None]:
    return lambda elf: elf.phdrs[0].update(values)


def _set_header(**values: int) -> Callable[[RawElf], None]:
    return lambda elf: elf.header.update(values)


# --- segments ---------------------------------------------------------------------


def overlapping_loads() -> bytes:
    """Two PT_LOADs over the same virtual range, mapped to different physical pages."""
    other = _load(TEXT_OFFSET, VIRT, PHYS + 0x1000, 0x2000, 0x3000)
    return _with(base(), lambda elf: elf.phdrs.insert(1, other))


def overlapping_loads_identical() -> bytes:
    return _with(base(), lambda e: e.phdrs.insert(1, dict(e.phdrs[0])))


def zero_size_segments() -> bytes:
    def change(elf: RawElf) -> None:
        elf.phdrs.insert(0, _load(0, VIRT - 0x1000, PHYS - 0x1000, 0, 0))
        elf.phdrs.append({"p_type": PT_NOTE, "p_offset": NOTES_OFFSET, "p_align": 4})

    return _with(base(), change)


def filesz_above_memsz() -> bytes:
    return _with(base(), _set_load(p_filesz=0x4000, p_memsz=0x1000))


def segment_at_top_of_address_space() -> bytes:
    top = TOP - 0x1000
    notes = xen_notes(entry=top)
    return _with(base(notes), _set_load(p_vaddr=top, p_paddr=PHYS, p_memsz=0x1000, p_filesz=0x1000))


def segment_wrapping_address_space() -> bytes:
    """p_vaddr + p_memsz wraps past 2**64."""
    top = TOP - 0x1000
    return _with(base(xen_notes(entry=top)), _set_load(p_vaddr=top, p_memsz=0x3000))


def paddr_at_top() -> bytes:
    return _with(base(), _set_load(p_paddr=TOP - 0x1000))


def paddr_page_offset_differs() -> bytes:
    """p_vaddr and p_paddr disagree modulo the page size."""
    return _with(base(), _set_load(p_paddr=PHYS + 0x123))


def huge_memsz() -> bytes:
    return _with(base(), _set_load(p_memsz=1 << 62))


def segment_offset_past_end() -> bytes:
    return _with(base(), _set_load(p_offset=1 << 63))


def note_segment_past_end() -> bytes:
    return _with(base(), lambda e: e.phdrs[1].update(p_offset=1 << 40, p_filesz=1 << 40))


def no_loadable_segment() -> bytes:
    return _with(base(), _set_load(p_flags=0))


def thousands_of_segments() -> bytes:
    """10 000 small PT_LOADs, one page apart (p_memsz 0x10)."""
    loads = [
        _load(TEXT_OFFSET, VIRT + 0x10000 + n * 0x1000, PHYS + 0x10000 + n * 0x1000, 0x10, 0x10)
        for n in range(10_000)
    ]
    return _with(base(), lambda elf: elf.phdrs.extend(loads))


def thousands_of_segment_types() -> bytes:
    """20 000 program headers, each of its own (processor-specific) type."""
    others = [{"p_type": 0x70000000 + n} for n in range(20_000)]
    return _with(base(), lambda elf: elf.phdrs.extend(others))


# --- header counts and sizes ------------------------------------------------------------


def phnum_xnum() -> bytes:
    return _with(base(), _set_header(e_phnum=0xFFFF))


def phnum_huge() -> bytes:
    return _with(base(), _set_header(e_phnum=0xFFFE))


def shnum_huge() -> bytes:
    return _with(base(), _set_header(e_shnum=0xFFFF))


def shnum_extended_huge() -> bytes:
    """e_shnum 0: the count is section 0's sh_size, here 2**40."""

    def change(elf: RawElf) -> None:
        elf.header["e_shnum"] = 0
        elf.shdrs[0] = {"sh_size": 1 << 40}

    return _with(base(), change)


def shstrndx_out_of_range() -> bytes:
    return _with(base(), _set_header(e_shstrndx=0xFFF0))


def phoff_past_end() -> bytes:
    return _with(base(), _set_header(e_phoff=1 << 32))


def phoff_max() -> bytes:
    return _with(base(), _set_header(e_phoff=TOP - 1))


def shoff_past_end() -> bytes:
    return _with(base(), _set_header(e_shoff=TOP - 8))


def phentsize_small() -> bytes:
    return _with(base(), _set_header(e_phentsize=8))


def phentsize_zero() -> bytes:
    return _with(base(), _set_header(e_phentsize=0))


def phentsize_large() -> bytes:
    return _with(base(), _set_header(e_phentsize=0xFFFF))


def shentsize_small() -> bytes:
    return _with(base(), _set_header(e_shentsize=4))


def header_only() -> bytes:
    """The 64-byte header alone, claiming tables."""
    return base().build()[:64]


def entry_max() -> bytes:
    return _with(base(xen_notes(entry=TOP - 1)), _set_header(e_entry=TOP - 1))


# --- notes ----------------------------------------------------------------------------


def _note_segment(elf: RawElf, blob: bytes, offset: int) -> None:
    elf.blobs.append((offset, blob))
    elf.phdrs[1].update(p_offset=offset, p_filesz=len(blob), p_memsz=len(blob))


def note_namesz_overflow() -> bytes:
    """namesz 0xffffffff: rounding it up to 4 overflows 32 bits (a C reader wraps)."""
    bad = NOTE_HEADER.pack(0xFFFFFFFF, 8, ENTRY) + b"Xen\0" + bytes(8)
    return base(bad + xen_notes()).build()


def note_descsz_overflow() -> bytes:
    bad = NOTE_HEADER.pack(4, 0xFFFFFFFD, ENTRY) + b"Xen\0" + bytes(8)
    return base(bad + xen_notes()).build()


def thousands_of_notes() -> bytes:
    """70 000 empty notes in one PT_NOTE: more than libelf's 65 536."""
    blob = NOTE_HEADER.pack(0, 0, 0) * 70_000 + xen_notes()
    return _with(base(), lambda e: _note_segment(e, blob, 0x10000))


def many_note_segments() -> bytes:
    """2 000 PT_NOTEs over one container of 30 000 notes: 60 million notes to walk."""
    blob = NOTE_HEADER.pack(0, 0, 0) * 30_000

    def change(elf: RawElf) -> None:
        _note_segment(elf, blob, 0x10000)
        elf.phdrs += [dict(elf.phdrs[1]) for _ in range(2_000)]

    return _with(base(), change)


def note_payload_amplification() -> bytes:
    """1 000 PT_NOTEs at successive offsets of a region whose every word reads as a
    note header with a 256 KiB payload: each container copies a different 256 KiB."""
    word = struct.pack("<I", 0x40000)
    region = word * (0x90000 // 4)

    def change(elf: RawElf) -> None:
        elf.blobs.append((0x10000, region))
        elf.phdrs += [
            {"p_type": PT_NOTE, "p_offset": 0x10000 + 4 * n, "p_filesz": 0x100, "p_align": 4}
            for n in range(1_000)
        ]

    return _with(base(), change)


def many_symbol_tables() -> bytes:
    """4 000 SHT_SYMTAB headers over the same 1 MiB of symbols."""

    def change(elf: RawElf) -> None:
        elf.blobs.append((0x10000, bytes(1 << 20)))
        table = _section(0, SHT_SYMTAB, 0x10000, 1 << 20, link=4, entsize=24)
        elf.shdrs[1:1] = [dict(table) for _ in range(4_000)]
        elf.header["e_shstrndx"] = len(elf.shdrs) - 1

    return _with(base(), change)


def note_string_without_nul() -> bytes:
    notes = note(XEN, LOADER, b"generic" * 700) + xen_notes()
    return base(notes).build()


def note_numbers_too_wide() -> bytes:
    notes = xen_notes(extra=(note(XEN, PHYS32_ENTRY, struct.pack("<Q", TOP - 1)),))
    notes += note(XEN, ENTRY, bytes(3))
    return base(notes).build()


def note_cut_by_end_of_file() -> bytes:
    notes = xen_notes() + NOTE_HEADER.pack(4, 4096, ENTRY) + b"Xen\0"
    data = base(notes).build()
    return data[: NOTES_OFFSET + len(notes) + 16]


def shimgen_meta_garbage() -> bytes:
    """A "shimgen" metadata note whose payload is not the metadata record."""
    return base(xen_notes(extra=(note(b"shimgen", SHIMGEN_META_TYPE, b"\xff" * 40),))).build()


def shimgen_meta_truncated() -> bytes:
    desc = struct.pack("<I", 1) + struct.pack("<I", 0xFFFFFFF0) + b"0.1"
    return base(xen_notes(extra=(note(b"shimgen", SHIMGEN_META_TYPE, desc),))).build()


def markup_in_names() -> bytes:
    """Note owners and section names that rich would take for markup ("[/bold]")."""
    extra = (note(b"[/bold]", 1, b"x"), note(b"[link=file:///etc/passwd]x", 2, b"y"))
    elf = base(xen_notes(extra=extra))
    offset, _ = elf.blobs[-1]
    elf.blobs[-1] = (offset, b"\0[/]\0[bold\0[/red]\0.shstrtab\0")
    return elf.build()


# --- sections ---------------------------------------------------------------------------


def sections_past_end() -> bytes:
    def change(elf: RawElf) -> None:
        elf.shdrs[2].update(sh_offset=1 << 62, sh_size=1 << 62)
        elf.shdrs[3].update(sh_offset=1 << 40, sh_size=1 << 40)

    return _with(base(), change)


def string_table_without_nul() -> bytes:
    def change(elf: RawElf) -> None:
        offset = 0x20000
        elf.blobs.append((offset, b"x" * 4096))
        elf.shdrs[-1].update(sh_offset=offset, sh_size=4096)
        elf.shdrs[4].update(sh_offset=offset, sh_size=4096)

    return _with(base(), change)


def section_links_out_of_range() -> bytes:
    def change(elf: RawElf) -> None:
        elf.shdrs[3]["sh_link"] = 0xFFFFFFFF
        for shdr in elf.shdrs:
            shdr["sh_name"] = 0xFFFFFFF0

    return _with(base(), change)


def legacy_guest(text: bytes) -> bytes:
    def change(elf: RawElf) -> None:
        elf.phdrs.pop(1)
        names = b"\0__xen_guest\0"
        offset = 0x20000
        elf.blobs += [(offset, text), (offset + len(text) + 8, names)]
        elf.shdrs[2] = _section(1, SHT_PROGBITS, offset, len(text))
        elf.shdrs[-1] = _section(0, SHT_STRTAB, offset + len(text) + 8, len(names))

    return _with(base(b""), change)


def legacy_guest_overflowing_numbers() -> bytes:
    return legacy_guest(
        b"GUEST_OS=linux,XEN_VER=xen-3.0,VIRT_BASE=0xffffffffffffffffffffffff,"
        b"ELF_PADDR_OFFSET=99999999999999999999999,HYPERCALL_PAGE=0xfffffffffffffffff\0"
    )


def legacy_guest_without_nul() -> bytes:
    return legacy_guest(b"GUEST_OS=linux," * 400)


# --- 32-bit and compressed --------------------------------------------------------------


def elf32_huge_fields() -> bytes:
    elf = RawElf(
        bits=32,
        header={"e_entry": 0xFFFFFFFF, "e_shnum": 0xFFFF},
        phdrs=[
            {
                "p_type": PT_LOAD,
                "p_offset": 0xFFFFFFFF,
                "p_vaddr": 0xFFFFF000,
                "p_paddr": 0xFFFFF000,
                "p_filesz": 0xFFFFFFFF,
                "p_memsz": 0xFFFFFFFF,
                "p_flags": PF_R | PF_W | PF_X,
            },
            {"p_type": PT_NOTE, "p_offset": 0x100, "p_filesz": 0xFFFFFFFF},
        ],
        blobs=[(0x100, note(XEN, PHYS32_ENTRY, b"\xff" * 4))],
    )
    return elf.build()


def gzip_of_hostile() -> bytes:
    return gzip.compress(phnum_huge(), mtime=0)


def gzip_with_trailing_garbage() -> bytes:
    return gzip.compress(base().build(), mtime=0) + b"\x1f\x8bgarbage"


CASES: dict[str, Callable[[], bytes]] = {
    function.__name__: function
    for function in (
        overlapping_loads,
        overlapping_loads_identical,
        zero_size_segments,
        filesz_above_memsz,
        segment_at_top_of_address_space,
        segment_wrapping_address_space,
        paddr_at_top,
        paddr_page_offset_differs,
        huge_memsz,
        segment_offset_past_end,
        note_segment_past_end,
        no_loadable_segment,
        thousands_of_segments,
        thousands_of_segment_types,
        phnum_xnum,
        phnum_huge,
        shnum_huge,
        shnum_extended_huge,
        shstrndx_out_of_range,
        phoff_past_end,
        phoff_max,
        shoff_past_end,
        phentsize_small,
        phentsize_zero,
        phentsize_large,
        shentsize_small,
        header_only,
        entry_max,
        note_namesz_overflow,
        note_descsz_overflow,
        thousands_of_notes,
        many_note_segments,
        note_payload_amplification,
        many_symbol_tables,
        note_string_without_nul,
        note_numbers_too_wide,
        note_cut_by_end_of_file,
        shimgen_meta_garbage,
        shimgen_meta_truncated,
        markup_in_names,
        sections_past_end,
        string_table_without_nul,
        section_links_out_of_range,
        legacy_guest_overflowing_numbers,
        legacy_guest_without_nul,
        elf32_huge_fields,
        gzip_of_hostile,
        gzip_with_trailing_garbage,
    )
}


def build(name: str) -> bytes:
    return CASES[name]()
