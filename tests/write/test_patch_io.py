"""patch_file writes the output without moving the input through Python: the input
is mapped, hashed by a background thread and copied by the kernel into the temp
file, then the changed ELF header and the appended bytes are written over and after
it. The in-memory build (patch_bytes, build_output) is the reference: every output
here is compared with it byte for byte, the recorded sha256 included, and each test
checks which way the output was written, so that a silent fall back to the
in-memory build cannot pass for the fast one.
"""

from __future__ import annotations

import dataclasses
import errno
import gzip
import hashlib
import os
import tracemalloc
from pathlib import Path

import imagegen
import pytest

from shimgen.errors import BadInput, OutputError, ShimgenError
from shimgen.read.image import read_image
from shimgen.read.shim_view import shim_meta
from shimgen.write import fileio
from shimgen.write import patch as patch_module
from shimgen.write.fileio import copy_prefix, sha256_of_file
from shimgen.write.patch import OutputParts, build_output, patch_bytes, patch_file

SAMPLE_CASES = [
    ("pv-hello", {}),
    ("pv-highhalf", {}),
    ("pv-hello", {"single_entry": True}),
    ("pvh-hello", {"handoff": "pvh-passthrough"}),
    ("hvm64-hello", {"handoff": "hvm-start-info", "entry64": "_start"}),
]


class Ways:
    """Which way patch_file wrote: the lengths copy_prefix copied, and how many
    outputs OutputParts.join built in memory."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.copied: list[int] = []
        self.joined = 0
        real_copy, real_join = patch_module.copy_prefix, OutputParts.join

        def copy(src: int, dst: int, length: int) -> int:
            self.copied.append(length)
            return real_copy(src, dst, length)

        def join(parts: OutputParts, original) -> bytes:
            self.joined += 1
            return real_join(parts, original)

        monkeypatch.setattr(patch_module, "copy_prefix", copy)
        monkeypatch.setattr(OutputParts, "join", join)

    @property
    def streamed(self) -> bool:
        return bool(self.copied) and self.joined == 0


def _reference(source: Path, **options) -> bytes:
    """The in-memory build of the same patch (before a Ways, which would count it)."""
    data = patch_bytes(source.read_bytes(), str(source), **options).data
    assert data is not None
    return data


# --- the same bytes as the in-memory build ---------------------------------------------


@pytest.mark.parametrize(("sample", "options"), SAMPLE_CASES)
def test_samples_streamed_match_the_in_memory_build(
    samples_build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample: str, options: dict
) -> None:
    source = samples_build / sample
    expected = _reference(source, **options)
    ways = Ways(monkeypatch)
    result = patch_file(source, tmp_path / "out", **options)
    written = (tmp_path / "out").read_bytes()
    assert ways.streamed and ways.copied == [source.stat().st_size]
    assert written == expected
    assert result.size == len(written) and result.data is None
    meta = shim_meta(read_image(tmp_path / "out"))
    assert meta is not None and meta.original_sha256 == hashlib.sha256(source.read_bytes()).digest()


@pytest.mark.parametrize("case", imagegen.cases(), ids=lambda c: c.name)
def test_generated_images_match_the_in_memory_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: imagegen.Case
) -> None:
    """Every imagegen shape: the same bytes, or the same refusal and nothing written.
    Only gzip and ELF32 containers (transformed in memory) are built in memory."""
    source = case.build(tmp_path / "in")
    try:
        expected = _reference(source)
    except ShimgenError as error:
        with pytest.raises(type(error)) as raised:
            patch_file(source, tmp_path / "out")
        assert str(raised.value) == str(error)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
        return
    ways = Ways(monkeypatch)
    patch_file(source, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == expected
    in_memory = case.gzip or case.spec.elf_class == 32
    assert ways.streamed != in_memory, (ways.copied, ways.joined)


def test_a_large_image_across_many_copy_and_hash_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Steps of odd sizes, so that no boundary lines up with a page or the image."""
    monkeypatch.setattr(fileio, "COPY_CHUNK", 3 << 20 | 123)
    monkeypatch.setattr(fileio, "HASH_CHUNK", 100_003)
    spec = dataclasses.replace(imagegen.case("pv64").spec, text_size=11 << 20)
    source = tmp_path / "large.elf"
    source.write_bytes(imagegen.write_elf(spec))
    expected = _reference(source)
    ways = Ways(monkeypatch)
    patch_file(source, tmp_path / "out")
    assert ways.streamed
    assert (tmp_path / "out").read_bytes() == expected


def test_repatching_copies_only_the_original_bytes(
    samples_build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = samples_build / "hvm64-hello"
    once, twice = tmp_path / "once", tmp_path / "twice"
    patch_file(source, once, entry64="_start")
    expected = _reference(once, force=True, entry64="_start", single_entry=True)
    assert expected == _reference(source, entry64="_start", single_entry=True)
    ways = Ways(monkeypatch)
    result = patch_file(once, twice, force=True, entry64="_start", single_entry=True)
    assert result.repatched and ways.streamed and ways.copied == [source.stat().st_size]
    assert twice.read_bytes() == expected


@pytest.mark.parametrize("options", [{}, {"entry": "no_such_symbol"}], ids=["plain", "bad-entry"])
def test_repatching_a_modified_original_writes_nothing(
    samples_build: Path, tmp_path: Path, options: dict
) -> None:
    """Reported before anything planned from the modified bytes (as patch_bytes does):
    not the bad --entry, which planning would refuse first."""
    once = tmp_path / "once"
    patch_file(samples_build / "pv-hello", once)
    data = bytearray(once.read_bytes())
    data[0x1000] ^= 0xFF  # inside the original bytes
    once.write_bytes(bytes(data))
    with pytest.raises(BadInput, match="the patched image was modified"):
        patch_bytes(bytes(data), "once", force=True, **options)
    with pytest.raises(BadInput, match="the patched image was modified"):
        patch_file(once, tmp_path / "twice", force=True, **options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["once"]


def test_gzip_input_is_built_in_memory_and_records_the_decompressed_sha256(
    samples_build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = (samples_build / "pv-hello").read_bytes()
    source = tmp_path / "pv-hello.gz"
    source.write_bytes(gzip.compress(plain, mtime=0))
    expected = _reference(source)
    ways = Ways(monkeypatch)
    patch_file(source, tmp_path / "out")
    assert not ways.copied and ways.joined == 1
    assert (tmp_path / "out").read_bytes() == expected
    meta = shim_meta(read_image(tmp_path / "out"))
    assert meta is not None and meta.original_sha256 == hashlib.sha256(plain).digest()


def test_a_pipe_is_read_not_mapped(
    samples_build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = (samples_build / "pv-hello").read_bytes()
    expected = patch_bytes(data, "pipe").data
    ways = Ways(monkeypatch)
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, data)  # fits in a pipe's buffer
        os.close(write_end)
        patch_file(f"/proc/self/fd/{read_end}", tmp_path / "out")
    finally:
        os.close(read_end)
    assert not ways.copied and ways.joined == 1
    assert (tmp_path / "out").read_bytes() == expected


def test_build_output_is_the_parts_joined(samples_build: Path) -> None:
    plan = patch_bytes((samples_build / "pv-highhalf").read_bytes(), "pv-highhalf").plan
    parts = patch_module.layout_output(plan)
    original = plan.image.data
    assert parts.kept == len(original) and len(parts.header) == 64
    assert build_output(plan) == parts.header + original[64:] + parts.tail


# --- copying when the kernel cannot ------------------------------------------------------


def _unsupported(code: int):
    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return refuse


@pytest.mark.parametrize("refused", [1, 2], ids=["sendfile", "read-write"])
def test_copy_falls_back_when_the_kernel_refuses(
    samples_build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused: int
) -> None:
    """copy_file_range refuses across filesystems on some kernels (EXDEV); sendfile
    may not take a file (EINVAL): the copy goes on the next way, same bytes. Each
    way refuses once, then is not asked again."""
    ways = {"copy_file_range": errno.EXDEV, "sendfile": errno.EINVAL}
    calls: list[str] = []
    for number, (name, code) in enumerate(ways.items()):
        real = getattr(os, name)

        def counted(*args, _name=name, _real=real, _code=code, _refuses=number < refused):
            calls.append(_name)
            if _refuses:
                raise OSError(_code, os.strerror(_code))
            return _real(*args)

        monkeypatch.setattr(patch_module.os, name, counted)
    monkeypatch.setattr(fileio, "COPY_CHUNK", 4096)
    source = samples_build / "pv-hello"
    expected = _reference(source)
    patch_file(source, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == expected
    steps = -(-source.stat().st_size // 4096)
    assert calls.count("copy_file_range") == 1
    assert calls.count("sendfile") == (steps if refused == 1 else 1)


def test_a_real_copy_error_is_not_a_fallback(
    samples_build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(patch_module.os, "copy_file_range", _unsupported(errno.ENOSPC))
    monkeypatch.setattr(patch_module.os, "sendfile", _unsupported(errno.EINVAL))
    with pytest.raises(OutputError, match="No space left on device"):
        patch_file(samples_build / "pv-hello", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_copy_prefix_stops_where_the_source_ends(tmp_path: Path) -> None:
    (tmp_path / "src").write_bytes(b"x" * 5000)
    src = os.open(tmp_path / "src", os.O_RDONLY)
    dst = os.open(tmp_path / "dst", os.O_RDWR | os.O_CREAT)
    try:
        assert copy_prefix(src, dst, 8000) == 5000
        assert copy_prefix(src, dst, 3000) == 3000
    finally:
        os.close(src)
        os.close(dst)
    assert (tmp_path / "dst").read_bytes() == b"x" * 5000


# --- the hash -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 4095, 4096, 4097, 3 * 4096 + 7])
@pytest.mark.parametrize("head", [b"", b"H" * 64])
def test_sha256_of_file_with_a_replaced_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, head: bytes
) -> None:
    monkeypatch.setattr(fileio, "HASH_CHUNK", 4096)
    data = bytes(range(256)) * (size // 256 + 1)
    path = tmp_path / "file"
    path.write_bytes(data + b"beyond size")
    head = head[:size]
    fd = os.open(path, os.O_RDONLY)
    try:
        digest = sha256_of_file(fd, size, head)
        with pytest.raises(EOFError):
            sha256_of_file(fd, len(data) + 100)
    finally:
        os.close(fd)
    assert digest == hashlib.sha256(head + data[len(head) : size]).digest()


# --- memory ---------------------------------------------------------------------------


def test_the_input_is_never_held_in_memory(tmp_path: Path) -> None:
    """Python allocations (tracemalloc) stay far below the input's size; building the
    output in memory allocates it several times over."""
    spec = dataclasses.replace(imagegen.case("pv64").spec, text_size=24 << 20)
    source = tmp_path / "large.elf"
    source.write_bytes(imagegen.write_elf(spec))
    tracemalloc.start()
    try:
        result = patch_file(source, tmp_path / "out")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < source.stat().st_size // 8, peak
    assert result.plan.image.data[:4] == b"\x7fELF"  # the mapping outlives patch_file


def test_early_digest_is_taken_only_when_it_is_the_one_needed(samples_build, tmp_path, monkeypatch):
    """The CLI starts hashing the input before the planner is imported; patch_file
    takes that hash for a first patch and hashes itself for a re-patch (the original
    is a prefix with another header there)."""
    started: list[int] = []
    real = fileio.file_digest

    def counted(fd, size, head, source):
        started.append(size)
        return real(fd, size, head, source)

    monkeypatch.setattr(fileio, "file_digest", counted)
    monkeypatch.setattr(patch_module, "file_digest", counted)
    source = samples_build / "pv-hello"
    reference = patch_bytes(source.read_bytes(), "pv-hello").data
    out = tmp_path / "out"
    early = fileio.EarlyDigest.start(source)
    try:
        patch_file(source, out, early=early)
    finally:
        early.close()
    assert started == [len(source.read_bytes())]  # the early one only
    assert out.read_bytes() == reference
    started.clear()
    early = fileio.EarlyDigest.start(out)
    try:
        patch_file(out, tmp_path / "again", force=True, early=early)
    finally:
        early.close()
    assert len(started) == 2 and started[1] == len(source.read_bytes())
    assert (tmp_path / "again").read_bytes() == reference
    assert fileio.EarlyDigest.start(tmp_path / "missing") is None
    assert fileio.EarlyDigest.start(tmp_path) is None  # a folder: not hashed
