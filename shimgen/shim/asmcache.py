"""Keystone's output for a shim source, kept in the shimgen cache.

Keystone gives the same bytes for the same source, and the rendered source holds
the template text and every value put into it: that source (with the identity of
the Keystone library that assembled it) is the key. A hit saves importing Keystone
and running it twice per patch, most of a small image's patch time.

Entries live in ``<cache>/asm/`` (shimgen/cachedir.py), one file per source:
a header line, the sha256 of the bytes, the bytes. A writer fills a temp file in
the same folder and renames it into place, so a reader sees a whole entry or none,
and concurrent writers of one key write the same bytes. An entry that does not
check out (cut short, overwritten, another format) is ignored and rewritten; a
cache that cannot be read or written only costs the assembly.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path

from ..cachedir import cache_dir

ENTRY_MAGIC = b"shimgen-asm 1\n"
DIGEST_SIZE = hashlib.sha256().digest_size
KEYSTONE_LIBRARY = "libkeystone.so"
# Entries are a few KiB; two per image patched. Past this many, the oldest quarter
# is dropped (by write time) when a new one is added.
MAX_ENTRIES = 2048


def folder() -> Path:
    return cache_dir() / "asm"


def cached_assembly(source: str, assemble: Callable[[str], bytes]) -> bytes:
    """assemble(source), from the cache when an entry for source checks out."""
    path = folder() / f"{_key(source)}.bin"
    found = _read_entry(path)
    if found is not None:
        return found
    code = assemble(source)
    _write_entry(path, code)
    return code


def _key(source: str) -> str:
    key = hashlib.sha256(ENTRY_MAGIC)
    key.update(_assembler_identity().encode())
    key.update(b"\0")
    key.update(source.encode())
    return key.hexdigest()


def _assembler_identity() -> str:
    """Which Keystone build would assemble, found without importing it: its library's
    path, size and modification time (another Keystone may encode differently)."""
    spec = find_spec("keystone")
    if spec is None or not spec.submodule_search_locations:
        return "keystone: not found"
    library = Path(next(iter(spec.submodule_search_locations))) / KEYSTONE_LIBRARY
    try:
        info = library.stat()
    except OSError:
        return f"keystone: {spec.origin}"
    return f"keystone: {library} {info.st_size} {info.st_mtime_ns}"


def _read_entry(path: Path) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    header = len(ENTRY_MAGIC) + DIGEST_SIZE
    if len(data) <= header or not data.startswith(ENTRY_MAGIC):
        return None
    digest, code = data[len(ENTRY_MAGIC) : header], data[header:]
    if hashlib.sha256(code).digest() != digest:
        return None
    return code


def _write_entry(path: Path, code: bytes) -> None:
    entry = ENTRY_MAGIC + hashlib.sha256(code).digest() + code
    import tempfile  # only on a miss: a hit costs no import beyond hashlib

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{path.stem[:16]}.", dir=path.parent)
    except OSError:
        return
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(entry)
        os.replace(name, path)
    except OSError:
        Path(name).unlink(missing_ok=True)
        return
    _prune(path.parent)


def _prune(directory: Path) -> None:
    try:
        entries = [e for e in os.scandir(directory) if e.name.endswith(".bin")]
        if len(entries) <= MAX_ENTRIES:
            return
        entries.sort(key=lambda e: e.stat().st_mtime_ns)
        for entry in entries[: len(entries) // 4]:
            Path(entry.path).unlink(missing_ok=True)
    except OSError:
        pass  # another process pruned first
