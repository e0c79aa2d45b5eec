"""Write the universal image: the input's bytes, then the shim segment and a new
program header table.

The ELF is written here directly rather than through LIEF: a patch only appends
(shim segment, then the program headers, which cannot grow in place) and rewrites
three header fields (e_entry, e_phoff, e_phnum). That keeps every original byte
where it was, adds no PT_LOAD for the header table (LIEF 1.0 adds one), and
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

Since a patch keeps the input's bytes, patch_file never moves them through Python
(the file machinery is fileio.py): the input is mapped (parsing reads only its
headers and notes), its sha256 is computed by a background thread while the patch
is planned (the CLI starts it before importing the planner: fileio.EarlyDigest),
and the output's temp file is filled by an in-kernel copy of the input
whose writeback (fdatasync) also runs in the background; the changed header and
the appended bytes are then written over and after it (OutputParts). Inputs
transformed in memory (gzip, ELF32 containers) are built in memory, as patch_bytes
does for every input. The plan's image then reads a mapping of the input: a
concurrent truncation of the input would end the process with SIGBUS.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInput, Refused
from ..plan import PAGE, Plan, make_plan
from ..read.container import needs_conversion
from ..read.image import Buffer, Image, image_from_bytes
from ..read.shim_view import shim_meta
from ..structs import ELF_NOTE_HEADER, LEGACY_GUEST_SECTION, NOTE_ALIGN, round_up
from ..structs.elf import PN_XNUM, SHT_NOTE, SegmentFlags, SegmentType, elf_header, program_header
from ..structs.shim_meta import ShimMeta
from .fileio import (
    Background,
    EarlyDigest,
    InputFile,
    TempFile,
    check_output,
    copy_prefix,
    file_digest,
    input_changed,
    input_unchanged,
    writing,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on the patch path
if TYPE_CHECKING:
    from typing import Any

# The ELF64 tables the writer edits, from the one declaration in structs/elf.py.
ELF64_EHDR = elf_header(64)
ELF64_PHDR = program_header(64)
MAX_PHNUM = PN_XNUM  # e_phnum itself cannot say more
NOTE_HEADER_SIZE = ELF_NOTE_HEADER.size
PATCHED_HEADER_FIELDS = ("e_entry", "e_phoff", "e_phnum")


def ehdr_fields(data: Buffer) -> dict[str, Any]:
    return ELF64_EHDR.unpack_from(data)


def _set_ehdr(data: bytearray | mmap.mmap, name: str, value: int) -> None:
    offset, size = ELF64_EHDR.offset_of(name), ELF64_EHDR.size_of(name)
    data[offset : offset + size] = value.to_bytes(size, "little")


# --- already patched? -------------------------------------------------------------------


def _input_forms(meta: ShimMeta) -> list[str]:
    return str(meta.options.get("input", "")).split(",")


def _restore_header(data: bytearray | mmap.mmap, meta: ShimMeta) -> None:
    _set_ehdr(data, "e_entry", meta.original_e_entry)
    _set_ehdr(data, "e_phoff", meta.original_e_phoff)
    _set_ehdr(data, "e_phnum", meta.original_e_phnum)


def original_bytes(data: Buffer, meta: ShimMeta) -> bytes:
    """The input a patch started from, rebuilt and checked against its sha256.

    An ELF32 container converted to ELF64 (container.py) sits unchanged at the
    recorded offset; any other input is the start of the output with the three
    header fields restored. A gzip-compressed input comes back decompressed. A patch
    made with --no-digest recorded no sha256: its original is rebuilt unchecked.
    """
    if "elf32" in _input_forms(meta):
        offset = int(meta.options.get("input_offset", 0))
        original = bytearray(data[offset : offset + meta.original_size])
    else:
        original = bytearray(data[: meta.original_size])
        _restore_header(original, meta)
    if meta.has_digest and hashlib.sha256(original).digest() != meta.original_sha256:
        raise _modified()
    return bytes(original)


def _modified() -> BadInput:
    return BadInput("the patched image was modified: its original bytes cannot be recovered")


# --- what the output is -------------------------------------------------------------------


@dataclass
class PatchResult:
    """What patch_bytes and patch_file did."""

    plan: Plan
    size: int  # of the output, in bytes
    repatched: bool
    # The output itself, from patch_bytes; patch_file writes it without holding it.
    data: bytes | None = None


@dataclass(frozen=True)
class OutputParts:
    """The output as the patched image's first ``kept`` bytes (the whole input, or the
    original bytes of a re-patched one) with its ELF header replaced by ``header``,
    then ``tail``: padding, the shim segment, padding, the program header table."""

    header: bytes
    kept: int
    tail: bytes

    @property
    def size(self) -> int:
        return self.kept + len(self.tail)

    def join(self, original: Buffer) -> bytes:
        with memoryview(original) as view, view[len(self.header) : self.kept] as body:
            return b"".join((self.header, body, self.tail))


def _p_type(raw: bytes) -> int:
    return ELF64_PHDR.unpack_from(raw)["p_type"]


def _phdr(**values: int) -> bytes:
    return ELF64_PHDR.pack(values)


def _cut_by_end(image: Image, shoff: int, dropped: tuple[int, ...] = ()) -> str | None:
    """Something loaders read that the end of the input file cuts short: in the output
    the shim's bytes would follow, and be read as part of it. PT_NOTEs the output
    leaves out of its program headers (`dropped`) are read by no loader."""
    data = image.data
    size = len(data)
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
    # find, not `in data[at:]`: a slice would copy the rest of a large (mapped) file.
    for note in (n for n in image.notes if n.source not in unread):
        # libelf reads a note's name up to its NUL (not namesz), and only Xen's payloads.
        name_at = note.offset + NOTE_HEADER_SIZE
        if note.is_xen and name_at + round_up(note.namesz, NOTE_ALIGN) + note.descsz > size:
            return f"the Xen note at {note.offset:#x} runs past the end of the file"
        if name_at + note.namesz > size and data.find(b"\0", name_at) < 0:
            return f"the name of the note at {note.offset:#x} runs past the end of the file"
    if image.legacy_guest_text is not None:
        legacy = next(s for s in image.sections if s.name == LEGACY_GUEST_SECTION)
        if data.find(b"\0", legacy.offset) < 0:
            return f"{LEGACY_GUEST_SECTION} runs to the end of the file without a NUL"
    return None


def _check_appendable(plan: Plan, header: dict[str, Any]) -> None:
    image = plan.image
    if header["e_phentsize"] != ELF64_PHDR.size:
        raise BadInput(f"e_phentsize {header['e_phentsize']} is not {ELF64_PHDR.size}")
    if image.header_overflow:  # the table is copied as the header says: it must exist
        raise BadInput(f"{image.path}: {image.header_overflow[0]}")
    cut = _cut_by_end(image, header["e_shoff"], plan.dropped_note_segments)
    if cut is not None:
        raise BadInput(f"{image.path}: {cut}: what patch appends would be read in its place")
    if header["e_phnum"] + 2 >= MAX_PHNUM:
        raise Refused(f"{image.path}: {header['e_phnum']} program headers: no room for 2 more")


def layout_output(plan: Plan) -> OutputParts:
    original = plan.image.data
    header = ehdr_fields(original)
    _check_appendable(plan, header)
    phoff, phnum = header["e_phoff"], header["e_phnum"]
    # PT_NOTEs the plan supersedes are left out (plan/notes.py superseded_note_segments).
    phdrs = [
        original[phoff + n * ELF64_PHDR.size : phoff + (n + 1) * ELF64_PHDR.size]
        for n in range(phnum)
        if n not in plan.dropped_note_segments
    ]
    kept = len(original)
    tail = bytearray(-kept % PAGE)
    shim_offset = kept + len(tail)
    tail += plan.segment_bytes()
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
        p_align=NOTE_ALIGN,  # Xen pads notes to 4; QEMU pads them to p_align
    )
    loads = (n for n, raw in enumerate(phdrs) if _p_type(raw) == SegmentType.LOAD)
    last_load = max(loads, default=len(phdrs) - 1)
    table = [*phdrs[: last_load + 1], shim_load, *phdrs[last_load + 1 :], shim_note]
    tail += bytes(-(kept + len(tail)) % 8)
    new_phoff = kept + len(tail)
    tail += b"".join(table)
    new_header = bytearray(original[: ELF64_EHDR.size])
    _set_ehdr(new_header, "e_entry", plan.e_entry)
    _set_ehdr(new_header, "e_phoff", new_phoff)
    _set_ehdr(new_header, "e_phnum", len(table))
    return OutputParts(header=bytes(new_header), kept=kept, tail=bytes(tail))


def build_output(plan: Plan) -> bytes:
    return layout_output(plan).join(plan.image.data)


def _options(
    handoff: str,
    entry: str | None,
    entry64: str | None,
    single_entry: bool,
    replace_pvh_entry: bool = False,
    digest: bool = True,
    pv_abi: bool | None = None,
) -> dict[str, Any]:
    return {
        "handoff": handoff,
        "entry": entry,
        "entry64": entry64,
        "single_entry": single_entry,
        "replace_pvh_entry": replace_pvh_entry,
        "digest": digest,
        "pv_abi": pv_abi,
    }


def _plan(
    image: Image,
    meta: ShimMeta | None,
    sha256: Callable[[], bytes] | None,
    options: dict[str, Any],
) -> Plan:
    gzip_input = meta is not None and "gzip" in _input_forms(meta)
    return make_plan(image, gzip_input=gzip_input, sha256=sha256, **options)


def _read_image(data: Buffer, name: str, force: bool) -> tuple[Image, ShimMeta | None]:
    """The image and, when it is patched already (and --force says re-patch), its note."""
    image = image_from_bytes(data, name)
    meta = shim_meta(image)
    if meta is not None and not force:
        raise Refused(
            f"{name} is already patched by shimgen {meta.tool_version} "
            f"(handoff {meta.handoff}); use --force to re-patch it from its original bytes"
        )
    return image, meta


def patch_bytes(
    data: bytes,
    name: str,
    handoff: str = "auto",
    entry: str | None = None,
    force: bool = False,
    *,
    entry64: str | None = None,
    single_entry: bool = False,
    replace_pvh_entry: bool = False,
    digest: bool = True,
    pv_abi: bool | None = None,
) -> PatchResult:
    """Patch an image held in memory; see plan.make_plan for the options."""
    image, meta = _read_image(data, name, force)
    sha256 = None  # the planner hashes the input itself
    if meta is not None:
        image = image_from_bytes(original_bytes(image.data, meta), name)
        if meta.has_digest:
            sha256 = _known(meta.original_sha256)  # checked by original_bytes
    options = _options(handoff, entry, entry64, single_entry, replace_pvh_entry, digest, pv_abi)
    plan = _plan(image, meta, sha256, options)
    output = build_output(plan)
    return PatchResult(plan=plan, size=len(output), repatched=meta is not None, data=output)


def _known(digest: bytes) -> Callable[[], bytes]:
    return lambda: digest


# --- the input, mapped ----------------------------------------------------------------


@dataclass
class _Original:
    """The bytes a patch starts from, held as ``image.data``. ``in_file`` when they are
    the input file's first ``size`` bytes, except that the first len(head) of them
    are ``head``: the output can then be copied from the input file."""

    image: Image
    size: int
    head: bytes = b""
    in_file: bool = True


def _original(held: InputFile, image: Image, meta: ShimMeta | None) -> _Original:
    if meta is None:
        return _Original(image, len(image.data), in_file=held.mapped and not image.compressed)
    view = _recovered_view(held, meta)
    if view is None:
        recovered = original_bytes(image.data, meta)
        return _Original(image_from_bytes(recovered, image.path), len(recovered), in_file=False)
    head = bytes(view[: ELF64_EHDR.size])
    return _Original(image_from_bytes(view, image.path), len(view), head)


def _recovered_view(held: InputFile, meta: ShimMeta) -> mmap.mmap | None:
    """A patched input's original bytes without reading them: a private mapping of
    its first original_size bytes, the three header fields restored in its own copy
    of the first page. None when they are not such a prefix (an ELF32 container) or
    cannot be (the size is wrong): original_bytes rebuilds or refuses those."""
    if not held.mapped or "elf32" in _input_forms(meta):
        return None
    if not ELF64_EHDR.size <= meta.original_size <= len(held.data):
        return None
    try:
        view = mmap.mmap(held.fd, meta.original_size, access=mmap.ACCESS_COPY)
    except (OSError, ValueError):
        return None
    _restore_header(view, meta)
    return view


def _original_digest(
    original: _Original,
    held: InputFile,
    meta: ShimMeta | None,
    stack: ExitStack,
    early: EarlyDigest | None = None,
) -> Callable[[], bytes]:
    """The sha256 the metadata records, hashed in the background (the planner asks
    for it last). For a re-patched input it is the recorded one: bytes recovered in
    memory were checked by original_bytes; bytes recovered from the file are checked
    by the returned callable, which raises when they do not match. A re-patched input
    that recorded none (--no-digest) has its recovered bytes hashed, unchecked."""
    checkable = meta is not None and meta.has_digest
    if checkable and not original.in_file:
        return _known(meta.original_sha256)
    early_fits = early is not None and not original.head
    if original.in_file and early_fits and early.covers(held.fingerprint, original.size):
        worker = early.worker  # started before the imports (fileio.EarlyDigest)
    elif original.in_file:
        worker = file_digest(held.fd, original.size, original.head, held.source)
    else:  # gzip: the decompressed bytes, or a pipe's, in memory
        data = original.image.data
        worker = Background(lambda stop: hashlib.sha256(data).digest())
    stack.callback(worker.cancel)
    if not checkable:
        return worker.result
    recorded = meta.original_sha256

    def checked() -> bytes:
        if worker.result() != recorded:
            raise _modified()
        return recorded

    return checked


def _copy_input(held: InputFile, temp: TempFile, length: int) -> Background[None]:
    """Copy the input's first ``length`` bytes into the temp file, and start writing
    them to the disk in the background (fdatasync) so that commit's fsync has only
    the rest: the writeback overlaps the planning and the hash. Returns that worker.

    The copy itself is not in the background: it would compete for the two cores
    with the hash and the planner, and measured no faster than here, where the
    kernel copies while the hash has the GIL and a core to itself."""
    with writing(temp.output):
        if copy_prefix(held.fd, temp.fd, length) < length:
            raise input_changed(held.source)

    def writeback(stop: threading.Event) -> None:
        with writing(temp.output):
            os.fdatasync(temp.fd)

    return Background(writeback)


def _write_output(
    temp: TempFile, plan: Plan, original: _Original, writeback: Background[None] | None
) -> int:
    """Fill the temp file; the output's size. When the input's bytes were copied into
    it (``writeback``) and the plan kept them, only the header and the tail are
    written; otherwise (an ELF32 container, converted by the planner) the whole
    output is built in memory."""
    parts = layout_output(plan)
    if writeback is not None and plan.image is original.image:
        temp.write(parts.header, 0)
        temp.write(parts.tail, parts.kept)
        writeback.result()  # its errors (EIO, ENOSPC at writeback) are the output's
        return parts.size
    if writeback is not None:
        writeback.result()
    data = parts.join(plan.image.data)
    temp.write(data, 0)
    with writing(temp.output):
        os.ftruncate(temp.fd, len(data))  # shorter than a copy made before planning
    return len(data)


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
    replace_pvh_entry: bool = False,
    digest: bool = True,
    pv_abi: bool | None = None,
    early: EarlyDigest | None = None,
) -> PatchResult:
    """Patch the file ``source`` into ``output``: see patch_bytes and the module's
    docstring. The output is written atomically (or not at all, with dry_run).
    Without ``digest`` the input is not hashed (nor a re-patched one's original
    checked against its recorded sha256). ``early``: the input's digest, already
    under way (used when it is the one needed; its owner closes it)."""
    source, output = Path(source), Path(output)
    options = _options(handoff, entry, entry64, single_entry, replace_pvh_entry, digest, pv_abi)
    with InputFile(source) as held, ExitStack() as stack:  # the stack ends first
        check_output(output, held.fingerprint)
        image, meta = _read_image(held.data, str(source), force)
        original = _original(held, image, meta)
        sha256 = _original_digest(original, held, meta, stack, early) if digest else None
        temp = writeback = None
        if not dry_run:
            temp = stack.enter_context(TempFile(output))
            if original.in_file and not needs_conversion(original.image):
                writeback = _copy_input(held, temp, original.size)
                stack.callback(writeback.cancel)  # ends before the temp file is closed
        if meta is not None and sha256 is not None:
            sha256()  # a re-patched image's original is checked before it is planned from
        plan = _plan(original.image, meta, sha256, options)
        if temp is None:
            return PatchResult(plan=plan, size=layout_output(plan).size, repatched=meta is not None)
        size = _write_output(temp, plan, original, writeback)
        temp.commit(input_unchanged(source, held.fingerprint))
    return PatchResult(plan=plan, size=size, repatched=meta is not None)
