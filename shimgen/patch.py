"""Write the universal image: the input's bytes, then the shim segment and a new
program header table.

The ELF is written here directly rather than through LIEF: a patch only appends
(shim segment, then the program headers, which cannot grow in place) and rewrites
three header fields (e_entry, e_phoff, e_phnum). That keeps every original byte
where it was, adds no PT_LOAD for the header table (LIEF adds one, FACTS 7), and
gives byte-identical output for the same input and options. It also makes the
input recoverable from the output (structs/shim_meta.py), which is how --force
re-patches an already patched image from its original bytes.

New program headers: the shim's PT_LOAD right after the last original PT_LOAD
(PT_LOADs stay sorted) and the new PT_NOTE last of all (linux-loader reads only
the last PT_NOTE), p_align 4, pointing at the exact note bytes inside the shim's
PT_LOAD so no padding is read as notes. An input PT_NOTE that would confuse a
loader (one holding a PHYS32_ENTRY the shim replaces, or Xen notes aligned beyond 4)
is left out of the new table; its Xen notes are in the shim's PT_NOTE.

The input is normalised first: gzip is decompressed (image.py) and an ELF32
container of x86-64 code becomes ELF64 (container.py); the output is always a plain
ELF64.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import construct as cs

from .errors import BadInput, OutputError, Refused
from .image import Image, image_from_bytes
from .plan import PAGE, Plan, make_plan
from .structs import ELF_NOTE_HEADER, LEGACY_GUEST_SECTION
from .structs.elf import PN_XNUM, SHT_NOTE, SegmentFlags, SegmentType, elf_header, program_header
from .structs.shim_meta import SHIM_META_NOTE_TYPE, SHIM_META_OWNER, ShimMeta

# The ELF64 tables the writer edits, from the one declaration in structs/elf.py.
ELF64_EHDR = elf_header(64)
ELF64_PHDR = program_header(64)
NOTE_SEGMENT_ALIGN = 4
MAX_PHNUM = PN_XNUM  # e_phnum itself cannot say more
NOTE_HEADER_SIZE = ELF_NOTE_HEADER.size
TEMP_NAME_KEEP = 200  # of the output's name in its temp file's (NAME_MAX is 255)
PATCHED_HEADER_FIELDS = ("e_entry", "e_phoff", "e_phnum")


def ehdr_fields(data: bytes) -> dict[str, Any]:
    return dict(ELF64_EHDR.parse(data[: ELF64_EHDR.size]))


def _set_ehdr(data: bytearray, name: str, value: int) -> None:
    offset, size = ELF64_EHDR.offset_of(name), ELF64_EHDR.size_of(name)
    data[offset : offset + size] = value.to_bytes(size, "little")


# --- already patched? -------------------------------------------------------------------


def shim_meta(image: Image) -> ShimMeta | None:
    for note in image.notes:
        if note.owner.encode() == SHIM_META_OWNER and note.type == SHIM_META_NOTE_TYPE:
            try:
                return ShimMeta.parse(note.desc)
            except (cs.ConstructError, ValueError) as error:
                raise BadInput(
                    f"{image.path}: its shimgen note is corrupt ({type(error).__name__})"
                ) from None
    return None


def original_bytes(data: bytes, meta: ShimMeta) -> bytes:
    """The input a patch started from, rebuilt and checked against its sha256.

    An ELF32 container converted to ELF64 (container.py) sits unchanged at the
    recorded offset; any other input is the start of the output with the three
    header fields restored. A gzip-compressed input comes back decompressed.
    """
    forms = str(meta.options.get("input", "")).split(",")
    if "elf32" in forms:
        offset = int(meta.options.get("input_offset", 0))
        original = bytearray(data[offset : offset + meta.original_size])
    else:
        original = bytearray(data[: meta.original_size])
        _set_ehdr(original, "e_entry", meta.original_e_entry)
        _set_ehdr(original, "e_phoff", meta.original_e_phoff)
        _set_ehdr(original, "e_phnum", meta.original_e_phnum)
    if hashlib.sha256(original).digest() != meta.original_sha256:
        raise BadInput("the patched image was modified: its original bytes cannot be recovered")
    return bytes(original)


# --- writing ------------------------------------------------------------------------------


@dataclass
class PatchResult:
    plan: Plan
    data: bytes
    repatched: bool


def _phdr(**values: int) -> bytes:
    return ELF64_PHDR.build(values)


def _cut_by_end(image: Image, shoff: int, dropped: tuple[int, ...] = ()) -> str | None:
    """Something loaders read that the end of the input file cuts short: in the output
    the shim's bytes would follow, and be read as part of it. PT_NOTEs the output
    leaves out of its program headers (`dropped`) are read by no loader."""
    size = len(image.data)
    unread = {f"PT_NOTE[{index}]" for index in dropped}
    if shoff >= size:
        return f"e_shoff {shoff:#x} is past the end of the file"
    for segment in image.segments:
        if segment.index in dropped:
            continue
        reads = segment.loadable or (segment.type == SegmentType.NOTE and segment.offset)
        if reads and segment.filesz and segment.offset + segment.filesz > size:
            return f"segment {segment.index} runs past the end of the file"
    for section in image.sections:
        if section.type == SHT_NOTE and section.index and section.offset + section.size > size:
            return f"section {section.name or section.index} runs past the end of the file"
    for note in (n for n in image.notes if n.source not in unread):
        # libelf reads a note's name up to its NUL (not namesz), and only Xen's payloads.
        name_at = note.offset + NOTE_HEADER_SIZE
        if note.is_xen and name_at + _align4(note.namesz) + note.descsz > size:
            return f"the Xen note at {note.offset:#x} runs past the end of the file"
        if name_at + note.namesz > size and b"\0" not in image.data[name_at:]:
            return f"the name of the note at {note.offset:#x} runs past the end of the file"
    if image.legacy_guest_text is not None:
        legacy = next(s for s in image.sections if s.name == LEGACY_GUEST_SECTION)
        if b"\0" not in image.data[legacy.offset :]:
            return f"{LEGACY_GUEST_SECTION} runs to the end of the file without a NUL"
    return None


def _align4(value: int) -> int:
    return -(-value // 4) * 4


def build_output(plan: Plan) -> bytes:
    original = plan.image.data
    header = ehdr_fields(original)
    if header["e_phentsize"] != ELF64_PHDR.size:
        raise BadInput(f"e_phentsize {header['e_phentsize']} is not {ELF64_PHDR.size}")
    if plan.image.header_overflow:  # the table is copied as the header says: it must exist
        raise BadInput(f"{plan.image.path}: {plan.image.header_overflow[0]}")
    cut = _cut_by_end(plan.image, header["e_shoff"], plan.dropped_note_segments)
    if cut is not None:
        raise BadInput(f"{plan.image.path}: {cut}: what patch appends would be read in its place")
    phoff, phnum = header["e_phoff"], header["e_phnum"]
    if phnum + 2 >= MAX_PHNUM:
        raise Refused(f"{plan.image.path}: {phnum} program headers: no room for 2 more")
    # PT_NOTEs the plan supersedes are left out (plan._superseded_note_segments).
    phdrs = [
        original[phoff + n * ELF64_PHDR.size : phoff + (n + 1) * ELF64_PHDR.size]
        for n in range(phnum)
        if n not in plan.dropped_note_segments
    ]
    out = bytearray(original)
    out += b"\0" * (-len(out) % PAGE)
    shim_offset = len(out)
    out += plan.segment_bytes()
    shim_load = _phdr(
        p_type=SegmentType.LOAD,
        p_flags=SegmentFlags.R | SegmentFlags.W | SegmentFlags.X,
        p_offset=shim_offset,
        p_vaddr=plan.shim_vaddr,
        p_paddr=plan.shim_paddr,
        p_filesz=plan.filesz,
        p_memsz=plan.memsz,
        p_align=PAGE,
    )
    note_offset = shim_offset + plan.offsets["notes"]
    note_size = len(plan.note_bytes)
    shim_note = _phdr(
        p_type=SegmentType.NOTE,
        p_flags=SegmentFlags.R,
        p_offset=note_offset,
        p_vaddr=plan.shim_vaddr + plan.offsets["notes"],
        p_paddr=plan.shim_paddr + plan.offsets["notes"],
        p_filesz=note_size,
        p_memsz=note_size,
        p_align=NOTE_SEGMENT_ALIGN,
    )
    last_load = max(
        (n for n, raw in enumerate(phdrs) if ELF64_PHDR.parse(raw).p_type == SegmentType.LOAD),
        default=len(phdrs) - 1,
    )
    table = [*phdrs[: last_load + 1], shim_load, *phdrs[last_load + 1 :], shim_note]
    out += b"\0" * (-len(out) % 8)
    new_phoff = len(out)
    out += b"".join(table)
    _set_ehdr(out, "e_entry", plan.e_entry)
    _set_ehdr(out, "e_phoff", new_phoff)
    _set_ehdr(out, "e_phnum", len(table))
    return bytes(out)


def patch_bytes(
    data: bytes,
    name: str,
    handoff: str = "auto",
    entry: str | None = None,
    force: bool = False,
    *,
    entry64: str | None = None,
    single_entry: bool = False,
) -> PatchResult:
    """Patch an image held in memory; see plan.make_plan for the options."""
    image = image_from_bytes(data, name)
    meta = shim_meta(image)
    repatched = gzip_input = False
    if meta is not None:
        if not force:
            raise Refused(
                f"{name} is already patched by shimgen {meta.tool_version} "
                f"(handoff {meta.handoff}); use --force to re-patch it from its original bytes"
            )
        image = image_from_bytes(original_bytes(image.data, meta), name)
        gzip_input = "gzip" in str(meta.options.get("input", "")).split(",")
        repatched = True
    plan = make_plan(
        image,
        handoff=handoff,
        entry=entry,
        entry64=entry64,
        single_entry=single_entry,
        gzip_input=gzip_input,
    )
    return PatchResult(plan=plan, data=build_output(plan), repatched=repatched)


def write_atomically(
    path: Path, data: bytes, before_commit: Callable[[], None] | None = None
) -> None:
    """Temp file in the output's directory, fsync, rename: never a half-written image.

    before_commit runs once the bytes are on disk, before the rename; whatever goes
    wrong up to the rename (an error, ^C) removes the temp file and leaves any
    existing file at path as it was.
    """
    directory = path.parent if str(path.parent) else Path(".")
    try:
        # ".NAME.XXXXXXXX": cut NAME so that a name near NAME_MAX still gets a temp file
        handle, temp = tempfile.mkstemp(prefix=f".{path.name[:TEMP_NAME_KEEP]}.", dir=directory)
    except OSError as error:
        raise OutputError(
            f"{path}: cannot create a file in {directory}: {error.strerror or error}"
        ) from None
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o644 & ~umask)
        if before_commit is not None:
            before_commit()
        os.replace(temp, path)
    except OSError as error:
        Path(temp).unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write: {error.strerror or error}") from None
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    _sync_directory(directory)


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable; the output is complete either way."""
    try:
        handle = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _fingerprint(path: Path) -> tuple[int, ...]:
    """Identity and last change of a file: any write to it changes ctime."""
    info = path.stat()
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _input_unchanged(source: Path, fingerprint: tuple[int, ...]) -> Callable[[], None]:
    def check() -> None:
        try:
            unchanged = _fingerprint(source) == fingerprint
        except OSError:
            unchanged = False
        if not unchanged:
            raise OutputError(f"{source}: the input changed while it was patched: nothing written")

    return check


def _check_output(output: Path, source: tuple[int, ...]) -> None:
    """Refuse what the rename into place would get wrong: the input itself (by any
    path, link or hard link), a directory, a device or pipe (replaced, not written)."""
    try:
        info = output.stat()
    except (FileNotFoundError, NotADirectoryError):
        return  # a new file; a missing directory is reported when writing
    except OSError as error:
        raise OutputError(f"{output}: cannot write: {error.strerror or error}") from None
    if (info.st_dev, info.st_ino) == source[:2]:
        raise OutputError(f"{output}: is the input; the input is never modified")
    if stat.S_ISDIR(info.st_mode):
        raise OutputError(f"{output}: is a directory; give the output file's name")
    if not stat.S_ISREG(info.st_mode):
        raise OutputError(f"{output}: is not a regular file (a device, pipe or socket?)")


def patch_file(
    source: str | Path,
    output: str | Path,
    handoff: str = "auto",
    entry: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    *,
    entry64: str | None = None,
    single_entry: bool = False,
) -> PatchResult:
    source, output = Path(source), Path(output)
    try:
        fingerprint = _fingerprint(source)
        data = source.read_bytes()
    except OSError as error:
        raise BadInput(f"{source}: cannot read: {error.strerror or error}") from None
    _check_output(output, fingerprint)
    result = patch_bytes(
        data,
        str(source),
        handoff=handoff,
        entry=entry,
        force=force,
        entry64=entry64,
        single_entry=single_entry,
    )
    if not dry_run:
        write_atomically(output, result.data, _input_unchanged(source, fingerprint))
    return result
