"""Read an x86 ELF image the way Xen's loaders see it.

The ELF tables come from shimgen.read.elffile (declared in structs/elf.py; checked
against LIEF in the tests); the note bytes are walked here, from the raw file,
with the same steps as Xen's libelf (12-byte header in both classes, name and desc
padded to 4), so that a malformed note is reported where it is instead of being
normalised away. Every Xen note keeps where it came from: a PT_NOTE segment, an
SHT_NOTE section, or a key of the legacy ``__xen_guest`` section.
"""

from __future__ import annotations

import hashlib
import io
import mmap
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

from ..errors import BadInput, Refused
from ..structs import (
    ELF_NOTE_HEADER,
    LEGACY_GUEST_KEYS,
    LEGACY_GUEST_SECTION,
    NOTE_ALIGN,
    XEN_NOTE_NAME,
    XEN_NUMBER_SIZES,
    XEN_STRING_MAX,
    Payload,
    XenNote,
    round_up,
)
from ..structs.clayout import MASK64
from ..structs.elf import (
    EI_CLASS,
    EI_DATA,
    ELF_MAGIC,
    ELFCLASS32,
    ELFCLASS64,
    ELFDATA2LSB,
    GZIP_MAGIC,
    SHT_NOTE,
    Machine,
    SegmentFlags,
    SegmentType,
    elf_header,
)
from .elffile import ElfTables, read_tables

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on the patch path
if TYPE_CHECKING:
    from typing import Any

# An image's bytes: as read, or a read-only mapping of the file (patch maps a large
# input instead of reading it; everything here only indexes, slices and finds).
Buffer = bytes | bytearray | mmap.mmap
MAX_DECOMPRESSED = 1 << 30  # refuse gzip bombs: no unikernel is larger than 1 GiB
MAX_NOTES_PER_CONTAINER = 65536  # libelf's ELF_MAX_TOTAL_NOTE_COUNT, over all containers
# Notes libelf ORs together when repeated (elf_xen_parse_note); for every other type
# the last one read wins.
ACCUMULATED_NOTES = frozenset({XenNote.FEATURES, XenNote.SUPPORTED_FEATURES})


@dataclass(frozen=True)
class Segment:
    """One program header."""

    index: int
    type: int
    type_name: str
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    flags: int
    align: int

    @property
    def is_load(self) -> bool:
        return self.type == SegmentType.LOAD

    @property
    def loadable(self) -> bool:
        """libelf's elf_phdr_is_loadable: PT_LOAD with any of R, W, X set."""
        return self.is_load and bool(
            self.flags & (SegmentFlags.R | SegmentFlags.W | SegmentFlags.X)
        )

    @property
    def executable(self) -> bool:
        return bool(self.flags & SegmentFlags.X)

    @property
    def flags_text(self) -> str:
        return "".join(
            letter if self.flags & bit else "-"
            for letter, bit in (("R", SegmentFlags.R), ("W", SegmentFlags.W), ("X", SegmentFlags.X))
        )


@dataclass(frozen=True)
class Section:
    """One section header, its name resolved."""

    index: int
    name: str
    type: int
    offset: int
    addr: int
    size: int
    align: int


@dataclass(frozen=True)
class Finding:
    """Something malformed or suspicious, with where it was found."""

    severity: str  # "error" | "warning" | "info"
    where: str
    message: str


@dataclass(frozen=True)
class Note:
    """One ELF note as the bytes say, Xen or not."""

    owner: str
    type: int
    namesz: int
    descsz: int
    offset: int  # file offset of the note header
    source: str  # "PT_NOTE[3]", "section .note.Xen"
    desc: bytes = field(repr=False)

    @property
    def is_xen(self) -> bool:
        return self.owner == XEN_NOTE_NAME.decode()


@dataclass(frozen=True)
class XenNoteRecord:
    """A Xen note decoded the way libelf reads its type."""

    type: int
    name: str
    value: int | str | list[int] | None
    width: int  # desc size in bytes (for __xen_guest: length of the value text)
    source: str
    offset: int | None  # file offset of the note header (None for __xen_guest)
    raw: bytes = field(repr=False, default=b"")

    @property
    def known(self) -> bool:
        return self.type in XenNote._value2member_map_

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["raw"] = self.raw.hex()
        return data


@dataclass
class Image:
    """An ELF image as loaders see it: segments, sections, notes, findings."""

    path: str
    size: int
    compressed: bool
    elf_class: int  # 32 or 64
    machine: int
    machine_name: str
    elf_type: int
    entry: int
    segments: list[Segment]
    sections: list[Section]
    notes: list[Note]  # every note in every PT_NOTE segment and SHT_NOTE section
    segment_xen_notes: list[XenNoteRecord]
    section_xen_notes: list[XenNoteRecord]
    legacy_xen_notes: list[XenNoteRecord]
    legacy_guest_text: str | None
    findings: list[Finding]
    symbols: dict[str, int]
    data: Buffer = field(repr=False)  # the ELF bytes (decompressed when compressed)
    raw: Buffer = field(repr=False, default=b"")  # the file's bytes as read
    header_overflow: list[str] = field(default_factory=list)
    notes_cut: bool = False  # the note walk stopped at its bound (_NoteBudget)

    @cached_property
    def sha256(self) -> str:
        """Of the file as read; computed on demand (hashing 100 MB takes 70 ms)."""
        return hashlib.sha256(self.raw or self.data).hexdigest()

    # --- what libelf would use -------------------------------------------------

    @property
    def note_origin(self) -> str | None:
        """Where a PV loader takes the Xen notes from: libelf's search order."""
        if self.segment_xen_notes:
            return "segments"
        if self.section_xen_notes:
            return "sections"
        if self.legacy_guest_text is not None:
            return "legacy"
        return None

    @property
    def xen_notes(self) -> list[XenNoteRecord]:
        """The Xen notes libelf parses for a PV guest (first non-empty source)."""
        return {
            "segments": self.segment_xen_notes,
            "sections": self.section_xen_notes,
            "legacy": self.legacy_xen_notes,
            None: [],
        }[self.note_origin]

    def note_uses(self) -> list[tuple[XenNoteRecord, bool, str | None]]:
        """(note, used, overridden_by) for every Xen note of every origin: a note is
        used when libelf reads its origin and no later note of the same type there
        replaces it; overridden_by names where the one that wins sits."""
        rows = []
        for group, notes in (
            ("segments", self.segment_xen_notes),
            ("sections", self.section_xen_notes),
            ("legacy", self.legacy_xen_notes),
        ):
            read = group == self.note_origin
            last = {note.type: note for note in notes}
            for note in notes:
                winner = last[note.type]
                replaced = note is not winner and note.type not in ACCUMULATED_NOTES
                overridden_by = _where(winner) if read and replaced else None
                rows.append((note, read and not replaced, overridden_by))
        return rows

    @property
    def loadable_segments(self) -> list[Segment]:
        return [segment for segment in self.segments if segment.loadable]

    @property
    def paddr_range(self) -> tuple[int, int] | None:
        """libelf's [pstart, pend): lowest p_paddr and highest p_paddr + p_memsz."""
        loads = self.loadable_segments
        if not loads:
            return None
        return min(s.paddr for s in loads), max(s.paddr + s.memsz for s in loads)

    def segment_of(self, vaddr: int) -> Segment | None:
        """The loadable segment whose virtual range holds vaddr (an empty one holds
        its own p_vaddr)."""
        for segment in self.loadable_segments:
            if segment.vaddr <= vaddr < segment.vaddr + max(segment.memsz, 1):
                return segment
        return None

    def virt_to_phys(self, vaddr: int, what: str) -> int:
        """Where the loader puts virtual address vaddr (p_paddr of its segment)."""
        segment = self.segment_of(vaddr)
        if segment is None:
            raise Refused(f"{self.path}: {what} {vaddr:#x} is outside every loadable segment")
        return segment.paddr + (vaddr - segment.vaddr)

    def note_segments(self) -> list[Segment]:
        return [segment for segment in self.segments if segment.type == SegmentType.NOTE]

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "compressed": self.compressed,
            "class": f"ELF{self.elf_class}",
            "machine": self.machine_name,
            "entry": self.entry,
            "segments": [asdict(s) | {"flags_text": s.flags_text} for s in self.segments],
            "sections": [asdict(s) for s in self.sections],
            "notes": [
                {k: v for k, v in asdict(n).items() if k != "desc"} | {"desc": n.desc.hex()}
                for n in self.notes
            ],
            "xen_notes": self._xen_notes_json(),
            "findings": [asdict(f) for f in self.findings],
        }

    def _xen_notes_json(self) -> dict[str, Any]:
        uses = {id(note): (used, by) for note, used, by in self.note_uses()}

        def entries(notes: list[XenNoteRecord]) -> list[dict[str, Any]]:
            return [
                n.to_json() | {"used": uses[id(n)][0], "overridden_by": uses[id(n)][1]}
                for n in notes
            ]

        return {
            "origin": self.note_origin,
            "segments": entries(self.segment_xen_notes),
            "sections": entries(self.section_xen_notes),
            "legacy": entries(self.legacy_xen_notes),
            "legacy_text": self.legacy_guest_text,
        }


def _where(note: XenNoteRecord) -> str:
    """A note's place for a reader: its container, and its offset when it has one."""
    return note.source if note.offset is None else f"{note.source} @ {note.offset:#x}"


# --- reading -----------------------------------------------------------------------


def read_image(path: str | Path) -> Image:
    """Read and decode an image; BadInput for anything that is not an x86 ELF."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise BadInput(f"{path}: is a directory, not an image") from None
    except OSError as error:
        raise BadInput(f"{path}: cannot read: {error.strerror or error}") from None
    return image_from_bytes(raw, str(path))


def image_from_bytes(raw: Buffer, name: str = "<bytes>") -> Image:
    compressed = raw[:2] == GZIP_MAGIC
    data = _gunzip(raw, name) if compressed else raw
    _check_ident(data, name)
    tables = read_tables(data, name)
    machine = tables.header["e_machine"]
    findings: list[Finding] = [Finding("warning", "ELF header", w) for w in tables.warnings]
    if machine not in Machine._value2member_map_:
        # Xen's PVH loaders take any e_machine (libxenguest's guest type for an HVM
        # container does not look at it); its PV loader refuses it (check.py).
        findings.append(
            Finding(
                "warning",
                "ELF header",
                f"e_machine {machine} is not x86: Xen's PV loader refuses it, its PVH "
                "loader does not look at it",
            )
        )
    segments = _segments(tables)
    sections = _sections(tables)
    notes: list[Note] = []
    budget = _NoteBudget.for_file(data)
    segment_xen: list[XenNoteRecord] = []
    for segment in segments:
        if segment.type != SegmentType.NOTE:
            continue
        where = f"PT_NOTE[{segment.index}]"
        if segment.offset == 0:
            # libelf skips these: some binutils leave p_offset 0 in note segments.
            findings.append(
                Finding("warning", where, "p_offset is 0: Xen's libelf skips this PT_NOTE")
            )
            continue
        found = _walk_notes(data, segment.offset, segment.filesz, where, findings, budget)
        notes.extend(found)
        segment_xen.extend(_decode_xen_note(data, n, findings) for n in found if n.is_xen)
        findings.extend(_note_segment_layout(segment, found, where))
    section_xen: list[XenNoteRecord] = []
    for section in sections:
        if section.type != SHT_NOTE or section.index == 0:
            continue
        where = f"section {section.name or f'[{section.index}]'}"
        found = _walk_notes(data, section.offset, section.size, where, findings, budget)
        notes.extend(found)
        section_xen.extend(_decode_xen_note(data, n, findings) for n in found if n.is_xen)
    legacy_text, legacy_notes = _legacy_guest(data, sections, findings)
    return Image(
        path=name,
        size=len(raw),
        raw=raw,
        compressed=compressed,
        elf_class=tables.bits,
        machine=machine,
        machine_name=_machine_name(machine),
        elf_type=tables.header["e_type"],
        entry=tables.header["e_entry"],
        segments=segments,
        sections=sections,
        notes=notes,
        segment_xen_notes=segment_xen,
        section_xen_notes=section_xen,
        legacy_xen_notes=legacy_notes,
        legacy_guest_text=legacy_text,
        findings=findings,
        symbols=tables.symbols,
        data=data,
        header_overflow=tables.problems,
        notes_cut=budget.reported,
    )


def _machine_name(machine: int) -> str:
    if machine in Machine._value2member_map_:
        return Machine(machine).name.replace("_", "-").lower()
    return f"e_machine {machine}"


def _gunzip(raw: Buffer, name: str) -> bytes:
    import gzip  # only for a compressed input: a plain ELF's patch does not import it
    import zlib

    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as stream:
            data = stream.read(MAX_DECOMPRESSED + 1)
    except (OSError, EOFError, zlib.error) as error:
        raise BadInput(f"{name}: gzip data is corrupt: {error}") from None
    if len(data) > MAX_DECOMPRESSED:
        raise BadInput(f"{name}: decompresses to more than {MAX_DECOMPRESSED >> 20} MiB")
    return data


def _check_ident(data: Buffer, name: str) -> int:
    if len(data) < 16 or data[:4] != ELF_MAGIC:
        what = "empty" if not data else "not an ELF file"
        raise BadInput(f"{name}: {what} (no ELF magic)")
    elf_class = data[EI_CLASS]
    if elf_class not in (ELFCLASS32, ELFCLASS64):
        # Xen's libelf reads every class but ELFCLASS64 as ELF32 (elf_64bit), so Xen
        # may boot such a file; the byte is invalid by the gABI and QEMU, linux-loader
        # and readelf refuse it, so shimgen does too, and says so.
        raise BadInput(
            f"{name}: unknown ELF class {elf_class}: Xen would read it as ELF32 and may boot "
            "it; shimgen refuses because the class byte is invalid (QEMU, linux-loader and "
            "readelf refuse it too)"
        )
    if data[EI_DATA] != ELFDATA2LSB:
        raise BadInput(f"{name}: big-endian ELF: not an x86 image")
    if len(data) < elf_header(64 if elf_class == ELFCLASS64 else 32).size:
        raise BadInput(f"{name}: truncated: {len(data)} bytes, shorter than an ELF header")
    return elf_class


def _segments(tables: ElfTables) -> list[Segment]:
    result = []
    for index, phdr in enumerate(tables.program_headers):
        kind = phdr["p_type"]
        known = kind in SegmentType._value2member_map_
        result.append(
            Segment(
                index=index,
                type=kind,
                type_name=SegmentType(kind).name if known else f"{kind:#x}",
                offset=phdr["p_offset"],
                vaddr=phdr["p_vaddr"],
                paddr=phdr["p_paddr"],
                filesz=phdr["p_filesz"],
                memsz=phdr["p_memsz"],
                flags=phdr["p_flags"],
                align=phdr["p_align"],
            )
        )
    return result


def _sections(tables: ElfTables) -> list[Section]:
    return [
        Section(
            index=index,
            name=name,
            type=shdr["sh_type"],
            offset=shdr["sh_offset"],
            addr=shdr["sh_addr"],
            size=shdr["sh_size"],
            align=shdr["sh_addralign"],
        )
        for index, (shdr, name) in enumerate(
            zip(tables.section_headers, tables.section_names, strict=True)
        )
    ]


# --- notes -------------------------------------------------------------------------


@dataclass
class _NoteBudget:
    """What the note containers of one image may still yield, all together.

    libelf counts notes over every container it walks (ELF_MAX_TOTAL_NOTE_COUNT);
    the payload bound stops containers that overlap (thousands of PT_NOTEs over the
    same bytes) from copying the file again and again.
    """

    notes: int
    payload: int
    reported: bool = False  # said once, not once per remaining container

    @classmethod
    def for_file(cls, data: Buffer) -> _NoteBudget:
        # Legitimate images walk each note at most twice (a PT_NOTE and its section).
        return cls(notes=MAX_NOTES_PER_CONTAINER, payload=2 * len(data) + (1 << 20))

    def exhausted(self) -> str | None:
        if self.notes <= 0:
            return f"more than {MAX_NOTES_PER_CONTAINER} notes in all: Xen stops here"
        if self.payload < 0:
            return "note containers overlap and repeat too many payload bytes: not read further"
        return None


def _walk_notes(
    data: Buffer,
    start: int,
    length: int,
    where: str,
    findings: list[Finding],
    budget: _NoteBudget | None = None,
) -> list[Note]:
    """Every note in data[start:start+length], as libelf's elf_note_next steps."""
    if budget is None:
        budget = _NoteBudget.for_file(data)
    end = start + length
    if end > len(data):
        findings.append(
            Finding("error", where, f"runs past the end of the file ({end:#x} > {len(data):#x})")
        )
        end = len(data)
    if start % NOTE_ALIGN:
        findings.append(Finding("warning", where, f"starts at {start:#x}, not 4-byte aligned"))
    header_size = ELF_NOTE_HEADER.size
    notes: list[Note] = []
    position = start
    while position < end:
        if (exhausted := budget.exhausted()) is not None:
            if not budget.reported:
                findings.append(Finding("error", where, exhausted))
                budget.reported = True
            break
        if position + header_size > len(data):
            findings.append(
                Finding(
                    "error", where, f"note header at {position:#x} is cut by the end of the file"
                )
            )
            break
        header = _NoteHeader(**ELF_NOTE_HEADER.unpack_from(data, position))
        name_at = position + header_size
        desc_at = name_at + round_up(header.namesz, NOTE_ALIGN)
        next_at = desc_at + round_up(header.descsz, NOTE_ALIGN)
        if desc_at + header.descsz > len(data):
            # libelf's accessors read what the file holds (a string stops at its
            # NUL) and take missing bytes as absent: decode the part that exists.
            findings.append(
                Finding(
                    "error",
                    where,
                    f"note at {position:#x} (namesz {header.namesz}, descsz {header.descsz}) "
                    f"is cut by the end of the file "
                    f"({max(0, len(data) - desc_at)} payload bytes left)",
                )
            )
        if next_at > end:
            # libelf only asks that a note *start* inside its container, so it
            # still reads this one; other readers stop at the container's end.
            findings.append(
                Finding(
                    "warning",
                    where,
                    f"note at {position:#x} (namesz {header.namesz}, descsz {header.descsz}) "
                    f"runs {next_at - end} bytes past the end of its container",
                )
            )
        owner = _note_owner(data, name_at)
        if owner == XEN_NOTE_NAME.decode() and header.namesz != len(XEN_NOTE_NAME) + 1:
            findings.append(
                Finding(
                    "warning",
                    where,
                    f"note at {position:#x} has namesz {header.namesz}: Xen's libelf reads "
                    "the owner up to its NUL ('Xen') and takes it as a Xen note; other "
                    "readers may not",
                )
            )
        budget.notes -= 1
        budget.payload -= min(header.descsz, max(0, len(data) - desc_at))
        notes.append(
            Note(
                owner=owner,
                type=header.type,
                namesz=header.namesz,
                descsz=header.descsz,
                offset=position,
                source=where,
                desc=data[desc_at : desc_at + header.descsz],
            )
        )
        position = next_at
    return notes


def _note_owner(data: Buffer, name_at: int) -> str:
    """The owner as Xen's libelf reads it (elf_note_name): a C string from the name
    field, up to its NUL whatever namesz says; one without a NUL in reach is no
    name at all (shown with a trailing '…', which no owner name ends with)."""
    end = min(len(data), name_at + XEN_STRING_MAX)
    stop = data.find(b"\0", name_at, end) if name_at < end else -1
    if stop < 0:
        return bytes(data[name_at:end]).decode("latin-1") + "…"
    return bytes(data[name_at:stop]).decode("latin-1")


@dataclass(frozen=True)
class _NoteHeader:
    """An ELF note's header (namesz, descsz, type)."""

    namesz: int
    descsz: int
    type: int


def _note_segment_layout(segment: Segment, found: list[Note], where: str) -> list[Finding]:
    """How a PT_NOTE holding Xen notes is laid out, where loaders disagree on it."""
    if not any(note.is_xen for note in found):
        return []
    result = []
    if segment.align > NOTE_ALIGN:
        result.append(
            Finding(
                "info",
                where,
                f"holds Xen notes with p_align {segment.align}: Xen pads notes to 4, "
                f"QEMU pads them to p_align",
            )
        )
    owners = sorted({note.owner for note in found if not note.is_xen})
    if owners:
        result.append(
            Finding("info", where, f"mixes Xen notes with notes of {', '.join(map(repr, owners))}")
        )
    return result


def _decode_xen_note(data: Buffer, note: Note, findings: list[Finding]) -> XenNoteRecord:
    where = f"{note.source} @ {note.offset:#x}"
    try:
        kind = XenNote(note.type)
    except ValueError:
        return XenNoteRecord(
            note.type,
            f"UNKNOWN({note.type})",
            note.desc.hex(),
            note.descsz,
            note.source,
            note.offset,
            note.desc,
        )
    value = _decode_payload(data, note, kind, where, findings)
    return XenNoteRecord(
        int(kind), kind.name, value, note.descsz, note.source, note.offset, note.desc
    )


def _decode_payload(
    data: Buffer, note: Note, kind: XenNote, where: str, findings: list[Finding]
) -> int | str | list[int]:
    payload = kind.payload
    desc = note.desc
    if payload in (Payload.STRING, Payload.FEATURES):
        return _note_string(data, note, kind, where, findings)
    if payload in (Payload.NUMBER, Payload.U32, Payload.MASK_PAIRS):
        value = _note_number(desc, note.descsz)
        if value is None:
            findings.append(
                Finding(
                    "error",
                    where,
                    f"{kind.name} has a {note.descsz}-byte payload"
                    + (f" ({len(desc)} in the file)" if len(desc) != note.descsz else "")
                    + ": Xen reads numbers of 1, 2, 4 or 8 bytes and takes this one as 0",
                )
            )
            value = 0
        if payload is Payload.U32:
            # libelf stores PHYS32_ENTRY in a 32-bit field: upper bytes are dropped.
            if value >> 32:
                findings.append(
                    Finding("error", where, f"{kind.name} {value:#x} does not fit 32 bits")
                )
            value &= 0xFFFFFFFF
        if payload is Payload.MASK_PAIRS:
            return _u32_words(desc, "little")
        return value
    # BITMAPS, U32_ARRAY: arrays of u32
    if len(desc) % 4:
        findings.append(
            Finding("warning", where, f"{kind.name} size {len(desc)} is not a multiple of 4")
        )
    return _u32_words(desc, "little")


def _note_number(desc: bytes, descsz: int) -> int | None:
    """libelf's elf_note_numeric: the size is descsz, whatever the file holds; a
    payload cut by the end of the file is out of reach and reads as 0 too."""
    if descsz not in XEN_NUMBER_SIZES or len(desc) != descsz:
        return None
    return int.from_bytes(desc, "little")


def _u32_words(desc: bytes, order: str) -> list[int]:
    return [int.from_bytes(desc[i : i + 4], order) for i in range(0, len(desc) - len(desc) % 4, 4)]


def _note_string(
    data: Buffer, note: Note, kind: XenNote, where: str, findings: list[Finding]
) -> str:
    """libelf reads up to the first NUL, even past the desc; we flag that."""
    if b"\0" in note.desc:
        text = note.desc.split(b"\0", 1)[0]
    else:
        findings.append(
            Finding(
                "warning",
                where,
                f"{kind.name} is not NUL-terminated inside its payload: "
                "Xen reads on until the next NUL",
            )
        )
        desc_at = note.offset + ELF_NOTE_HEADER.size + round_up(note.namesz, NOTE_ALIGN)
        text = data[desc_at : desc_at + XEN_STRING_MAX].split(b"\0", 1)[0]
    return text.decode("latin-1")


# --- the legacy __xen_guest section -------------------------------------------------


def _legacy_guest(
    data: Buffer, sections: list[Section], findings: list[Finding]
) -> tuple[str | None, list[XenNoteRecord]]:
    section = next((s for s in sections if s.name == LEGACY_GUEST_SECTION), None)
    if section is None:
        return None, []
    where = f"section {LEGACY_GUEST_SECTION}"
    if section.offset + section.size > len(data):
        findings.append(Finding("error", where, "runs past the end of the file"))
    # libelf reads from the section start up to the first NUL, not bounded by its size.
    text = data[section.offset : section.offset + XEN_STRING_MAX].split(b"\0", 1)[0]
    decoded = text.decode("latin-1")
    records = []
    for name, value in parse_legacy_guest(decoded):
        kind = LEGACY_GUEST_KEYS.get(name)
        if kind is None:
            findings.append(Finding("info", where, f"unknown key {name!r} ignored by Xen"))
            continue
        parsed: int | str = value
        if kind.payload is Payload.NUMBER:
            parsed = _strtoull(value)
        records.append(
            XenNoteRecord(
                int(kind),
                kind.name,
                parsed,
                len(value),
                f"__xen_guest:{name}",
                None,
                value.encode("latin-1"),
            )
        )
    return decoded, records


def parse_legacy_guest(text: str) -> list[tuple[str, str]]:
    """Split ``NAME=VALUE,NAME=VALUE`` as libelf does (names < 32, values < 128 chars)."""
    pairs = []
    for item in text.split(","):
        if not item:
            continue
        name, _, value = item.partition("=")
        pairs.append((name[:31], value[:127]))
    return pairs


def _strtoull(text: str) -> int:
    """C strtoull(text, NULL, 0): the longest valid prefix, 0 if none."""
    text = text.strip()
    base = 10
    body = text
    if text[:2].lower() == "0x":
        base, body = 16, text[2:]
    elif text.startswith("0") and len(text) > 1:
        base, body = 8, text[1:]
    digits = "0123456789abcdef"[:base]
    prefix = ""
    for char in body.lower():
        if char not in digits:
            break
        prefix += char
    # C saturates at ULLONG_MAX (ERANGE): never a value wider than 64 bits.
    return min(int(prefix, base), MASK64) if prefix else 0
