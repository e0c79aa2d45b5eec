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
PT_LOAD so no padding is read as notes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BadInput, OutputError, Refused
from .image import Image, image_from_bytes
from .plan import PAGE, Plan, make_plan
from .structs.clayout import U16, U32, U64, CharArray, Field, Record
from .structs.elf import SegmentFlags, SegmentType
from .structs.shim_meta import SHIM_META_NOTE_TYPE, SHIM_META_OWNER, ShimMeta

# ELF64 header and program header (System V gABI), declared, not hand-offset.
ELF64_EHDR = Record(
    "Elf64_Ehdr",
    (
        Field("e_ident", CharArray(16)),
        Field("e_type", U16),
        Field("e_machine", U16),
        Field("e_version", U32),
        Field("e_entry", U64),
        Field("e_phoff", U64),
        Field("e_shoff", U64),
        Field("e_flags", U32),
        Field("e_ehsize", U16),
        Field("e_phentsize", U16),
        Field("e_phnum", U16),
        Field("e_shentsize", U16),
        Field("e_shnum", U16),
        Field("e_shstrndx", U16),
    ),
)
ELF64_PHDR = Record(
    "Elf64_Phdr",
    (
        Field("p_type", U32),
        Field("p_flags", U32),
        Field("p_offset", U64),
        Field("p_vaddr", U64),
        Field("p_paddr", U64),
        Field("p_filesz", U64),
        Field("p_memsz", U64),
        Field("p_align", U64),
    ),
)
NOTE_SEGMENT_ALIGN = 4
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
            return ShimMeta.parse(note.desc)
    return None


def original_bytes(data: bytes, meta: ShimMeta) -> bytes:
    """The input a patch started from, rebuilt and checked against its sha256."""
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


def build_output(plan: Plan) -> bytes:
    original = plan.image.data
    header = ehdr_fields(original)
    if header["e_phentsize"] != ELF64_PHDR.size:
        raise BadInput(f"e_phentsize {header['e_phentsize']} is not {ELF64_PHDR.size}")
    phoff, phnum = header["e_phoff"], header["e_phnum"]
    phdrs = [
        original[phoff + n * ELF64_PHDR.size : phoff + (n + 1) * ELF64_PHDR.size]
        for n in range(phnum)
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
    _set_ehdr(out, "e_entry", plan.pv_entry)
    _set_ehdr(out, "e_phoff", new_phoff)
    _set_ehdr(out, "e_phnum", len(table))
    return bytes(out)


def patch_bytes(
    data: bytes,
    name: str,
    handoff: str = "start-info",
    entry: str | None = None,
    force: bool = False,
) -> PatchResult:
    image = image_from_bytes(data, name)
    meta = shim_meta(image)
    repatched = False
    if meta is not None:
        if not force:
            raise Refused(
                f"{name} is already patched by shimgen {meta.tool_version} "
                f"(handoff {meta.handoff}); use --force to re-patch it from its original bytes"
            )
        image = image_from_bytes(original_bytes(image.data, meta), name)
        repatched = True
    plan = make_plan(image, handoff=handoff, entry=entry)
    return PatchResult(plan=plan, data=build_output(plan), repatched=repatched)


def write_atomically(path: Path, data: bytes) -> None:
    """Temp file in the output's directory, fsync, rename: never a half-written image."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    except OSError as error:
        raise OutputError(f"{path}: cannot write: {error.strerror or error}") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o644 & ~umask)
        os.replace(temp, path)
    except OSError as error:
        Path(temp).unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write: {error.strerror or error}") from None


def patch_file(
    source: str | Path,
    output: str | Path,
    handoff: str = "start-info",
    entry: str | None = None,
    force: bool = False,
    dry_run: bool = False,
) -> PatchResult:
    source, output = Path(source), Path(output)
    try:
        data = source.read_bytes()
    except OSError as error:
        raise BadInput(f"{source}: cannot read: {error.strerror or error}") from None
    if output.exists() and source.exists() and os.path.samefile(source, output):
        raise OutputError(f"{output}: is the input; the input is never modified")
    result = patch_bytes(data, str(source), handoff=handoff, entry=entry, force=force)
    if not dry_run:
        write_atomically(output, result.data)
    return result
