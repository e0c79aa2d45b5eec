"""The cache of assembled templates: what it returns is what Keystone returns, a bad
entry is ignored and rewritten, and concurrent writers leave whole entries."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shimgen.read.image import read_image
from shimgen.shim import asmcache
from shimgen.shim.assemble import keystone_assemble
from shimgen.write.patch import patch_bytes

SOURCE = ".code64\nshim_start:\n\tmovq $0x1234, %rax\n\tjmp shim_start\n"


class CountingAssembler:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, source: str) -> bytes:
        self.calls += 1
        return keystone_assemble(source)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SHIMGEN_CACHE", str(tmp_path))
    return tmp_path / "asm"


def test_hit_gives_keystones_bytes_without_keystone(cache: Path) -> None:
    assembler = CountingAssembler()
    first = asmcache.cached_assembly(SOURCE, assembler)
    second = asmcache.cached_assembly(SOURCE, assembler)
    assert first == second == keystone_assemble(SOURCE)
    assert assembler.calls == 1
    assert len(list(cache.glob("*.bin"))) == 1
    other = SOURCE.replace("0x1234", "0x1235")  # another value: another key
    assert asmcache.cached_assembly(other, assembler) == keystone_assemble(other)
    assert assembler.calls == 2


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) - 1],  # cut short
        lambda data: data[:-1] + bytes([data[-1] ^ 1]),  # a flipped bit in the code
        lambda data: b"garbage",
        lambda data: b"",
    ],
    ids=["short", "bitflip", "garbage", "empty"],
)
def test_a_bad_entry_is_ignored_and_rewritten(cache: Path, damage) -> None:
    assembler = CountingAssembler()
    good = asmcache.cached_assembly(SOURCE, assembler)
    (entry,) = cache.glob("*.bin")
    entry.write_bytes(damage(entry.read_bytes()))
    assert asmcache.cached_assembly(SOURCE, assembler) == good
    assert assembler.calls == 2
    assert asmcache.cached_assembly(SOURCE, assembler) == good
    assert assembler.calls == 2  # rewritten whole: a hit again


def test_an_unwritable_cache_only_costs_the_assembly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SHIMGEN_CACHE", str(blocker))
    assert asmcache.cached_assembly(SOURCE, keystone_assemble) == keystone_assemble(SOURCE)


def test_concurrent_writers_leave_whole_entries(cache: Path) -> None:
    sources = [SOURCE.replace("0x1234", f"{n:#x}") for n in range(0x20, 0x30)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(
            pool.map(lambda s: asmcache.cached_assembly(s, keystone_assemble), sources * 4)
        )
    assert results == [keystone_assemble(s) for s in sources * 4]
    assert len(list(cache.glob("*.bin"))) == len(sources)
    assert not [p for p in cache.iterdir() if not p.name.endswith(".bin")]  # no temp left


def test_a_patch_is_the_same_from_a_cold_and_a_warm_cache(cache: Path, samples_build) -> None:
    image = (samples_build / "pv-hello").read_bytes()
    cold = patch_bytes(image, "pv-hello").data
    assert list(cache.glob("*.bin"))
    warm = patch_bytes(image, "pv-hello").data
    assert cold == warm
    for entry in cache.glob("*.bin"):
        entry.write_bytes(b"shimgen-asm 1\n" + bytes(40))
    assert patch_bytes(image, "pv-hello").data == cold
    assert read_image(samples_build / "pv-hello")  # the input itself is untouched


def test_old_entries_are_pruned(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asmcache, "MAX_ENTRIES", 8)
    for n in range(12):
        asmcache.cached_assembly(SOURCE.replace("0x1234", f"{0x100 + n:#x}"), keystone_assemble)
    assert len(list(cache.glob("*.bin"))) <= 8
