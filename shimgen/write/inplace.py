"""`patch --in-place`: the input file becomes the patched image, and a crash at any
point leaves it either the original (perhaps with unused bytes after its end) or
the patched image.

A patch keeps the input's bytes, appends the shim segment and a new program header
table, and changes three fields of the ELF header (patch.py). In place that is a
few writes, each made durable (fdatasync) before the next one starts:

1. re-patch only: the original ELF header is written back (the metadata note
   records its fields). The file reads as the original again, with the previous
   patch's bytes unused after its end;
2. the file is cut to the original's size (re-patch only) and the tail (padding,
   shim segment, program header table) is written after it. Nothing the original's
   header points at lies there (patch refuses an input whose tables or notes run
   past its end), so the file still reads as the original;
3. the patched ELF header, 64 bytes, is written at offset 0 in one write: inside
   the first disk sector, which a disk writes whole or not at all.

The output is byte-identical to `patch -o` of the same input. Apart from the
sha256 of the original (hashed in a thread while the patch is planned; skipped
with --no-digest), the work is the size of the tail, not of the image.
"""

from __future__ import annotations

import fcntl
import os
import stat
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from ..errors import OutputError, Refused
from ..read.container import needs_conversion
from ..structs.shim_meta import ShimMeta
from .fileio import EarlyDigest, InputFile, writing
from .patch import (
    ELF64_EHDR,
    OutputParts,
    PatchResult,
    _options,
    _original,
    _original_digest,
    _plan,
    _read_image,
    _restore_header,
    layout_output,
)


@dataclass(frozen=True)
class Write:
    """One durable step: cut the file at ``offset`` when ``truncate``, then write
    ``data`` at ``offset``."""

    what: str
    offset: int
    data: bytes
    truncate: bool = False


def in_place_writes(parts: OutputParts, meta: ShimMeta | None, header: bytes) -> list[Write]:
    """The writes that turn the file into the patched image, in order. ``header`` is
    the file's ELF header as it is now; ``meta`` its shimgen note when re-patched."""
    writes = []
    if meta is not None:
        original = bytearray(header[: ELF64_EHDR.size])
        _restore_header(original, meta)
        writes.append(Write("write the original ELF header back", 0, bytes(original)))
    writes.append(
        Write("append the shim and program headers", parts.kept, parts.tail, meta is not None)
    )
    writes.append(Write("switch to the patched ELF header", 0, parts.header))
    return writes


def apply_writes(fd: int, writes: list[Write], path: Path) -> None:
    with writing(path):
        for step in writes:
            if step.truncate:
                os.ftruncate(fd, step.offset)
            _write_all(fd, step.data, step.offset)
            os.fdatasync(fd)


def _write_all(fd: int, data: bytes, offset: int) -> None:
    with memoryview(data) as view:
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written


def patch_in_place(
    source: str | Path,
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
    """Patch the file ``source`` itself: see the module's docstring and patch_file."""
    source = Path(source)
    options = _options(handoff, entry, entry64, single_entry, replace_pvh_entry, digest, pv_abi)
    with InputFile(source, writable=not dry_run) as held, ExitStack() as stack:
        _require_plain_file(held, source)
        if not dry_run:
            _lock(held.fd, source)
            # the mapping shares the lock (it holds a duplicate of fd): unlock explicitly
            stack.callback(fcntl.flock, held.fd, fcntl.LOCK_UN)
        image, meta = _read_image(held.data, str(source), force)
        if image.compressed or needs_conversion(image):
            form = "gzip-compressed" if image.compressed else "an ELF32 container"
            raise Refused(
                f"{source}: is {form}; the patched image is a plain ELF64, so it cannot be "
                "written over it: patch it with -o OUTPUT"
            )
        original = _original(held, image, meta)
        if not original.in_file:
            raise Refused(
                f"{source}: its original bytes are not the start of the file (it was patched "
                "from a gzip or ELF32 input): re-patch it with -o OUTPUT"
            )
        sha256 = _original_digest(original, held, meta, stack, early) if digest else None
        if meta is not None and sha256 is not None:
            sha256()  # the original is checked before it is planned from, and changed
        plan = _plan(original.image, meta, sha256, options)
        parts = layout_output(plan)
        if not dry_run:
            header = bytes(held.data[: ELF64_EHDR.size])
            apply_writes(held.fd, in_place_writes(parts, meta, header), source)
    return PatchResult(plan=plan, size=parts.size, repatched=meta is not None)


def _require_plain_file(held: InputFile, source: Path) -> None:
    if not stat.S_ISREG(os.fstat(held.fd).st_mode):
        raise OutputError(f"{source}: not a regular file: --in-place cannot write it")


def _lock(fd: int, source: Path) -> None:
    """Two in-place patches of one file would interleave their writes."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise OutputError(
            f"{source}: another process holds a lock on it (a second patch --in-place?)"
        ) from None
