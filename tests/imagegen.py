"""Test ELF images built byte by byte, for the Xen oracle tests and shimgen's own.

Every image is a complete, valid ELF (header, program headers, section headers with a
.shstrtab) that `readelf -a` reads without a warning. Nothing here uses shimgen's own
definitions: the images are what an independent oracle (libxenguest, readnotes)
judges, so a wrong constant in shimgen must not leak into the fixtures too.

Layout of every image (file offsets):

    0x0000  ELF header, program headers (PT_LOAD, then one PT_NOTE per note group)
    0x1000  .text: one PT_LOAD of `text_size` bytes (+ `bss_size` of .bss in memory)
    ...     note sections, each aligned to its own alignment (8 at most), non-alloc
    ...     __xen_guest (if any), .shstrtab, section headers

Notes sit outside the PT_LOAD, so libelf's [pstart, pend) is exactly
[paddr, paddr + text_size + bss_size) whatever notes an image carries.

`cases()` lists every image with a name; `build(name, out_dir)` writes one.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass, replace
from pathlib import Path

# --- constants (ELF gABI; xen/include/public/elfnote.h) ---------------------------

EM_386 = 3
EM_X86_64 = 62
PT_LOAD = 1
PT_NOTE = 4
SHT_PROGBITS = 1
SHT_STRTAB = 3
SHT_NOTE = 7
SHT_NOBITS = 8
SHF_WRITE = 1
SHF_ALLOC = 2
SHF_EXECINSTR = 4
PF_X, PF_W, PF_R = 1, 2, 4
TEXT_OFFSET = 0x1000

XEN_ENTRY = 1
XEN_HYPERCALL_PAGE = 2
XEN_VIRT_BASE = 3
XEN_PADDR_OFFSET = 4
XEN_XEN_VERSION = 5
XEN_GUEST_OS = 6
XEN_GUEST_VERSION = 7
XEN_LOADER = 8
XEN_PAE_MODE = 9
XEN_FEATURES = 10
XEN_SUSPEND_CANCEL = 14
XEN_PHYS32_ENTRY = 18

NT_GNU_BUILD_ID = 3
NT_GNU_PROPERTY_TYPE_0 = 5
GNU_PROPERTY_X86_FEATURE_1_AND = 0xC0000002

# The addresses every PV64 image uses: Linux's trick, p_paddr = p_vaddr - VIRT_BASE.
PV64_VIRT_BASE = 0xFFFFFFFF80000000
PHYS_BASE = 0x100000  # 1 MiB: linux-loader refuses a lower e_entry
PV32_VIRT_BASE = 0xC0000000
PVH_ENTRY = PHYS_BASE + 0x10  # inside the text, distinct from ENTRY

# hlt; jmp back to it: a harmless body for every entry point.
HALT_LOOP = bytes([0xF4, 0xEB, 0xFD])


# --- notes -------------------------------------------------------------------------


@dataclass(frozen=True)
class Note:
    owner: bytes  # without the NUL
    type: int
    desc: bytes
    align: int = 4  # 4 for Xen notes; 8 for .note.gnu.property in ELF64

    def encode(self) -> bytes:
        name = self.owner + b"\0"
        header = struct.pack("<III", len(name), len(self.desc), self.type)
        # Padding counts from the note's start: with 8-byte alignment the desc of
        # "GNU\0" starts at 16, not at 12 + 8.
        return _pad(_pad(header + name, self.align) + self.desc, self.align)


def xen_number(note_type: int, value: int, width: int = 8) -> Note:
    return Note(b"Xen", note_type, value.to_bytes(width, "little"))


def xen_string(note_type: int, value: str) -> Note:
    return Note(b"Xen", note_type, value.encode() + b"\0")


def gnu_property_ibt_shstk() -> Note:
    """The 8-aligned `.note.gnu.property` gcc -fcf-protection puts in every object."""
    prop = struct.pack("<III", GNU_PROPERTY_X86_FEATURE_1_AND, 4, 0x3) + b"\0" * 4
    return Note(b"GNU", NT_GNU_PROPERTY_TYPE_0, prop, align=8)


def gnu_build_id() -> Note:
    return Note(b"GNU", NT_GNU_BUILD_ID, bytes(range(20)))


@dataclass(frozen=True)
class NoteSection:
    name: str
    notes: tuple[Note, ...]

    @property
    def align(self) -> int:
        return max((note.align for note in self.notes), default=4)

    def encode(self) -> bytes:
        """Notes placed as a linker would: each at its own alignment, zero padding."""
        out = bytearray()
        for note in self.notes:
            out += b"\0" * (-len(out) % note.align)
            out += note.encode()
        return bytes(out)


# --- image description -------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    elf_class: int = 64
    machine: int = EM_X86_64
    vaddr: int = PV64_VIRT_BASE + PHYS_BASE  # of the text PT_LOAD
    paddr: int = PHYS_BASE
    entry: int = PV64_VIRT_BASE + PHYS_BASE  # e_entry
    text_size: int = 0x2000
    bss_size: int = 0
    # Each inner tuple is one PT_NOTE covering these sections back to back.
    note_segments: tuple[tuple[NoteSection, ...], ...] = ()
    # SHT_NOTE sections no PT_NOTE covers.
    loose_note_sections: tuple[NoteSection, ...] = ()
    xen_guest: str | None = None


@dataclass
class _Section:
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    align: int
    entsize: int = 0


def _pad(data: bytes, align: int) -> bytes:
    return data + b"\0" * (-len(data) % align)


def _text_bytes(spec: Spec) -> bytes:
    text = bytearray(spec.text_size)
    # Every entry the cases use (ENTRY, PHYS32_ENTRY) is 0 or 0x10 into the text.
    for at in (0, PVH_ENTRY - PHYS_BASE):
        text[at : at + len(HALT_LOOP)] = HALT_LOOP
    return bytes(text)


class _Writer:
    """Lays out one image; the sizes of ELF32 and ELF64 structures differ."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.is64 = spec.elf_class == 64
        self.ehsize = 64 if self.is64 else 52
        self.phentsize = 56 if self.is64 else 32
        self.shentsize = 64 if self.is64 else 40
        self.body = bytearray()
        self.sections: list[_Section] = [_Section("", 0, 0, 0, 0, 0, 0)]
        self.phdrs: list[tuple[int, int, int, int, int, int, int, int]] = []

    def place(self, data: bytes, align: int) -> int:
        """Append data at the next offset aligned to align; return that offset."""
        offset = self._aligned_end(align)
        self.body += b"\0" * (offset - self._end())
        self.body += data
        return offset

    def _end(self) -> int:
        return TEXT_OFFSET + len(self.body)

    def _aligned_end(self, align: int) -> int:
        end = self._end()
        return end + (-end % align)

    def build(self) -> bytes:
        spec = self.spec
        text = _text_bytes(spec)
        self.place(text, 1)
        self.sections.append(
            _Section(
                ".text",
                SHT_PROGBITS,
                SHF_ALLOC | SHF_EXECINSTR,
                spec.vaddr,
                TEXT_OFFSET,
                len(text),
                16,
            )
        )
        if spec.bss_size:
            self.sections.append(
                _Section(
                    ".bss",
                    SHT_NOBITS,
                    SHF_ALLOC | SHF_WRITE,
                    spec.vaddr + len(text),
                    TEXT_OFFSET + len(text),
                    spec.bss_size,
                    16,
                )
            )
        memsz = len(text) + spec.bss_size
        self.phdrs.append(
            (
                PT_LOAD,
                PF_R | PF_W | PF_X,
                TEXT_OFFSET,
                spec.vaddr,
                spec.paddr,
                len(text),
                memsz,
                0x1000,
            )
        )
        for group in spec.note_segments:
            self._note_segment(group)
        for section in spec.loose_note_sections:
            self._note_section(section)
        if spec.xen_guest is not None:
            payload = spec.xen_guest.encode() + b"\0"
            offset = self.place(payload, 1)
            self.sections.append(
                _Section("__xen_guest", SHT_PROGBITS, 0, 0, offset, len(payload), 1)
            )
        return self._finish()

    def _note_section(self, section: NoteSection) -> tuple[int, int]:
        data = section.encode()
        offset = self.place(data, section.align)
        self.sections.append(
            _Section(section.name, SHT_NOTE, 0, 0, offset, len(data), section.align)
        )
        return offset, len(data)

    def _note_segment(self, group: tuple[NoteSection, ...]) -> None:
        align = max(section.align for section in group)
        placed = [self._note_section(section) for section in group]
        start = placed[0][0]
        end = placed[-1][0] + placed[-1][1]
        self.phdrs.append((PT_NOTE, PF_R, start, 0, 0, end - start, end - start, align))

    def _finish(self) -> bytes:
        names = bytearray(b"\0")
        name_offsets = []
        self.sections.append(_Section(".shstrtab", SHT_STRTAB, 0, 0, 0, 0, 1))
        for section in self.sections:
            if section.name:
                name_offsets.append(len(names))
                names += section.name.encode() + b"\0"
            else:
                name_offsets.append(0)
        shstrtab = self.sections[-1]
        shstrtab.offset = self.place(bytes(names), 1)
        shstrtab.size = len(names)
        shoff = self._aligned_end(8)
        self.body += b"\0" * (shoff - self._end())
        for section, name in zip(self.sections, name_offsets, strict=True):
            self.body += self._shdr(section, name)
        header = self._ehdr(shoff) + b"".join(self._phdr(p) for p in self.phdrs)
        if len(header) > TEXT_OFFSET:
            raise ValueError("too many program headers for the fixed layout")
        return header + b"\0" * (TEXT_OFFSET - len(header)) + bytes(self.body)

    def _ehdr(self, shoff: int) -> bytes:
        ident = b"\x7fELF" + bytes([2 if self.is64 else 1, 1, 1]) + b"\0" * 9
        fmt = "<HHIQQQIHHHHHH" if self.is64 else "<HHIIIIIHHHHHH"
        return ident + struct.pack(
            fmt,
            2,
            self.spec.machine,
            1,
            self.spec.entry,
            self.ehsize,
            shoff,
            0,
            self.ehsize,
            self.phentsize,
            len(self.phdrs),
            self.shentsize,
            len(self.sections),
            len(self.sections) - 1,
        )

    def _phdr(self, p: tuple[int, int, int, int, int, int, int, int]) -> bytes:
        ptype, flags, offset, vaddr, paddr, filesz, memsz, align = p
        if self.is64:
            return struct.pack(
                "<IIQQQQQQ", ptype, flags, offset, vaddr, paddr, filesz, memsz, align
            )
        return struct.pack("<IIIIIIII", ptype, offset, vaddr, paddr, filesz, memsz, flags, align)

    def _shdr(self, s: _Section, name: int) -> bytes:
        fmt = "<IIQQQQIIQQ" if self.is64 else "<IIIIIIIIII"
        return struct.pack(
            fmt, name, s.type, s.flags, s.addr, s.offset, s.size, 0, 0, s.align, s.entsize
        )


def write_elf(spec: Spec) -> bytes:
    return _Writer(spec).build()


# --- the note sets the cases are built from -----------------------------------------


def pv64_notes(
    *,
    entry: int = PV64_VIRT_BASE + PHYS_BASE,
    loader: str | None = "generic",
    xen_version: str = "xen-3.0",
    guest_os: str = "imagegen",
    extra: tuple[Note, ...] = (),
) -> tuple[Note, ...]:
    notes = [
        xen_string(XEN_GUEST_OS, guest_os),
        xen_string(XEN_GUEST_VERSION, "1.0"),
        xen_string(XEN_XEN_VERSION, xen_version),
        xen_number(XEN_VIRT_BASE, PV64_VIRT_BASE),
        xen_number(XEN_PADDR_OFFSET, 0),
        xen_number(XEN_ENTRY, entry),
        xen_number(XEN_HYPERCALL_PAGE, PV64_VIRT_BASE + PHYS_BASE + 0x1000),
    ]
    if loader is not None:
        notes.append(xen_string(XEN_LOADER, loader))
    return (*notes, *extra)


def _in_pt_note(*notes: Note, name: str = ".note.Xen") -> tuple[tuple[NoteSection, ...], ...]:
    return ((NoteSection(name, notes),),)


PV64 = Spec(note_segments=_in_pt_note(*pv64_notes()))
PVH64 = Spec(
    vaddr=PHYS_BASE,
    entry=PHYS_BASE,
    note_segments=_in_pt_note(xen_number(XEN_PHYS32_ENTRY, PHYS_BASE, 4)),
)


def _pvh64_with(phys32: int) -> Spec:
    return replace(PVH64, note_segments=_in_pt_note(xen_number(XEN_PHYS32_ENTRY, phys32, 4)))


def _image_end(spec: Spec) -> int:
    """libelf's pend: highest p_paddr + p_memsz."""
    return spec.paddr + spec.text_size + spec.bss_size


# --- the cases ---------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    spec: Spec
    gzip: bool = False

    def build(self, out_dir: Path) -> Path:
        data = write_elf(self.spec)
        if self.gzip:
            data = gzip.compress(data, mtime=0)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / (self.name + (".elf.gz" if self.gzip else ".elf"))
        path.write_bytes(data)
        return path


def _gnu_property_after_xen() -> Spec:
    # Xen notes whose total size is 4 mod 8, so the linker pads 4 zero bytes before
    # the 8-aligned GNU property: what `ld` makes of .note.Xen + .note.gnu.property.
    xen = NoteSection(".note.Xen", pv64_notes(extra=(xen_number(XEN_SUSPEND_CANCEL, 1, 4),)))
    assert len(xen.encode()) % 8 == 4, "padding case needs Xen notes of 4 mod 8 bytes"
    gnu = NoteSection(".note.gnu.property", (gnu_property_ibt_shstk(),))
    return replace(PV64, note_segments=((xen, gnu),))


def _gnu_property_first() -> Spec:
    gnu = NoteSection(".note.gnu.property", (gnu_property_ibt_shstk(),))
    xen = NoteSection(".note.Xen", pv64_notes())
    return replace(PV64, note_segments=((gnu, xen),))


def _pv32_pae() -> Spec:
    vaddr = PV32_VIRT_BASE + PHYS_BASE
    notes = (
        xen_string(XEN_GUEST_OS, "imagegen"),
        xen_string(XEN_XEN_VERSION, "xen-3.0"),
        xen_number(XEN_VIRT_BASE, PV32_VIRT_BASE, 4),
        xen_number(XEN_PADDR_OFFSET, 0, 4),
        xen_number(XEN_ENTRY, vaddr, 4),
        xen_number(XEN_HYPERCALL_PAGE, vaddr + 0x1000, 4),
        xen_string(XEN_LOADER, "generic"),
        xen_string(XEN_PAE_MODE, "yes"),
    )
    return Spec(
        elf_class=32, machine=EM_386, vaddr=vaddr, entry=vaddr, note_segments=_in_pt_note(*notes)
    )


def _xen_guest_only() -> Spec:
    text = ",".join(
        [
            "GUEST_OS=linux",
            "GUEST_VER=2.6",
            "XEN_VER=xen-3.0",
            "LOADER=generic",
            f"VIRT_BASE={PV64_VIRT_BASE:#x}",
            "ELF_PADDR_OFFSET=0x0",  # the legacy default would be VIRT_BASE
            f"VIRT_ENTRY={PV64_VIRT_BASE + PHYS_BASE:#x}",
            f"HYPERCALL_PAGE={(PHYS_BASE + 0x1000) >> 12:#x}",  # page number from VIRT_BASE
        ]
    )
    return replace(PV64, note_segments=(), xen_guest=text)


def _repeated() -> Spec:
    bad_entry = xen_number(XEN_ENTRY, 0x1234)  # out of bounds, then overridden
    bad_loader = xen_string(XEN_LOADER, "bogus")
    bad_phys = xen_number(XEN_PHYS32_ENTRY, 0x10, 4)  # outside, then overridden
    good = (*pv64_notes(), xen_number(XEN_PHYS32_ENTRY, PVH_ENTRY, 4))
    return replace(PV64, note_segments=_in_pt_note(bad_entry, bad_loader, bad_phys, *good))


def _all_cases() -> list[Case]:
    pv_and_pvh = (*pv64_notes(), xen_number(XEN_PHYS32_ENTRY, PVH_ENTRY, 4))
    kend_pv = PV64_VIRT_BASE + _image_end(PV64)
    return [
        Case("pv64", "64-bit PV: Linux-style VIRT_BASE, notes in a PT_NOTE", PV64),
        Case("pvh64", "ELF64 with only PHYS32_ENTRY", PVH64),
        Case(
            "pv_and_pvh",
            "PV notes plus PHYS32_ENTRY: the universal shape",
            replace(PV64, note_segments=_in_pt_note(*pv_and_pvh)),
        ),
        Case("no_notes", "ELF64 without any Xen note", replace(PV64, note_segments=())),
        Case(
            "no_notes_elf32",
            "ELF32 without any Xen note (HVM firmware shape)",
            replace(_pv32_pae(), note_segments=()),
        ),
        Case(
            "loader_not_generic",
            "LOADER 'foo', GUEST_OS not linux",
            replace(PV64, note_segments=_in_pt_note(*pv64_notes(loader="foo"))),
        ),
        Case(
            "guest_os_linux",
            "no LOADER, but GUEST_OS 'linux'",
            replace(PV64, note_segments=_in_pt_note(*pv64_notes(loader=None, guest_os="linux"))),
        ),
        Case(
            "xen_version_bad",
            "XEN_VERSION 'xen-2.0'",
            replace(PV64, note_segments=_in_pt_note(*pv64_notes(xen_version="xen-2.0"))),
        ),
        Case(
            "entry_out_of_bounds",
            "ENTRY one page past kend",
            replace(PV64, note_segments=_in_pt_note(*pv64_notes(entry=kend_pv + 0x1000))),
        ),
        Case(
            "entry_at_kend",
            "ENTRY exactly at kend (libelf's bound is inclusive)",
            replace(PV64, note_segments=_in_pt_note(*pv64_notes(entry=kend_pv))),
        ),
        Case(
            "notes_in_sections_only",
            "PV notes in an SHT_NOTE section, no PT_NOTE",
            replace(
                PV64,
                note_segments=(),
                loose_note_sections=(NoteSection(".note.Xen", pv64_notes()),),
            ),
        ),
        Case("xen_guest_only", "only a legacy __xen_guest section", _xen_guest_only()),
        Case(
            "phys32_outside",
            "PHYS32_ENTRY one page past pend",
            _pvh64_with(_image_end(PVH64) + 0x1000),
        ),
        Case("phys32_below", "PHYS32_ENTRY below pstart", _pvh64_with(PHYS_BASE - 0x1000)),
        Case("phys32_at_end", "PHYS32_ENTRY exactly at pend", _pvh64_with(_image_end(PVH64))),
        Case("phys32_last_byte", "PHYS32_ENTRY at pend - 1", _pvh64_with(_image_end(PVH64) - 1)),
        Case(
            "foreign_pt_note_xen_section",
            "PT_NOTE holds only a GNU build-id; Xen notes in a separate SHT_NOTE section",
            replace(
                PV64,
                note_segments=((NoteSection(".note.gnu.build-id", (gnu_build_id(),)),),),
                loose_note_sections=(NoteSection(".note.Xen", pv64_notes()),),
            ),
        ),
        Case(
            "two_pt_notes_last_foreign",
            "Xen notes in the first PT_NOTE, a GNU build-id alone in the last",
            replace(
                PV64,
                note_segments=(
                    (NoteSection(".note.Xen", pv64_notes()),),
                    (NoteSection(".note.gnu.build-id", (gnu_build_id(),)),),
                ),
            ),
        ),
        Case(
            "gnu_property_after_xen",
            "one PT_NOTE (p_align 8): Xen notes, 4 bytes of padding, .note.gnu.property",
            _gnu_property_after_xen(),
        ),
        Case(
            "gnu_property_first",
            "one PT_NOTE (p_align 8): .note.gnu.property, then Xen notes",
            _gnu_property_first(),
        ),
        Case(
            "repeated_notes", "ENTRY, LOADER, PHYS32_ENTRY given twice: bad then good", _repeated()
        ),
        Case(
            "features_unknown_required",
            "FEATURES '!foo'",
            replace(
                PV64,
                note_segments=_in_pt_note(*pv64_notes(extra=(xen_string(XEN_FEATURES, "!foo"),))),
            ),
        ),
        Case(
            "features_dom0_required",
            "FEATURES '!dom0': a dom0-only kernel",
            replace(
                PV64,
                note_segments=_in_pt_note(*pv64_notes(extra=(xen_string(XEN_FEATURES, "!dom0"),))),
            ),
        ),
        Case("pv32_pae", "ELF32 EM_386 PV with PAE_MODE 'yes'", _pv32_pae()),
        Case(
            "elf32_em_x86_64",
            "ELF32 whose e_machine is EM_X86_64, with PV notes",
            replace(_pv32_pae(), machine=EM_X86_64),
        ),
        Case("pv64_gzip", "pv64, gzip-compressed", PV64, gzip=True),
    ]


def cases() -> list[Case]:
    """Every test image, in a stable order, with a unique name."""
    return _all_cases()


def case(name: str) -> Case:
    for candidate in _all_cases():
        if candidate.name == name:
            return candidate
    raise KeyError(name)


def build(name: str, out_dir: Path) -> Path:
    return case(name).build(out_dir)


def build_all(out_dir: Path) -> dict[str, Path]:
    return {c.name: c.build(out_dir) for c in _all_cases()}
