"""shimgen's own ELF table reader agrees with LIEF on every image the suite has."""

from __future__ import annotations

from pathlib import Path

import imagegen
import lief
import pytest

from shimgen.read.image import read_image
from shimgen.verify.debcache import unpacked_package

GRUB = ("grub-x86_64-xen.bin", "grub-i386-xen.bin", "grub-i386-xen_pvh.bin")


def _images(samples_build: Path, tmp: Path) -> list[Path]:
    grub = unpacked_package("grub-xen-host") / "usr/lib/grub-xen"
    paths = [grub / name for name in GRUB]
    paths += [samples_build / name for name in ("pv-hello", "pv-highhalf", "pvh-hello")]
    paths += [case.build(tmp) for case in imagegen.cases() if not case.gzip]
    return paths


@pytest.fixture(scope="module")
def images(samples_build: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return _images(samples_build, tmp_path_factory.mktemp("elffile"))


def _lief_view(path: Path) -> dict:
    lief.logging.disable()
    binary = lief.ELF.parse(str(path))
    assert binary is not None
    symbols: dict[str, int] = {}
    for sym in binary.symbols:
        if sym.name and sym.name not in symbols:
            symbols[sym.name] = int(sym.value)
    return {
        "entry": int(binary.header.entrypoint),
        "machine": int(binary.header.machine_type),
        "segments": [
            (
                int(s.type),
                s.file_offset,
                s.virtual_address,
                s.physical_address,
                s.physical_size,
                s.virtual_size,
                int(s.flags),
                s.alignment,
            )
            for s in binary.segments
        ],
        "sections": [
            (s.name, int(s.type), s.offset, s.size, s.virtual_address) for s in binary.sections
        ],
        "symbols": symbols,
    }


def _our_view(path: Path) -> dict:
    image = read_image(path)
    return {
        "entry": image.entry,
        "machine": image.machine,
        "segments": [
            (s.type, s.offset, s.vaddr, s.paddr, s.filesz, s.memsz, s.flags, s.align)
            for s in image.segments
        ],
        "sections": [(s.name, s.type, s.offset, s.size, s.addr) for s in image.sections],
        "symbols": image.symbols,
    }


def test_reader_matches_lief(images: list[Path]) -> None:
    assert len(images) > 20
    for path in images:
        assert _our_view(path) == _lief_view(path), path.name


def test_symbols_are_read(samples_build: Path) -> None:
    image = read_image(samples_build / "pv-hello")
    assert "shimgen_boot_mode" in image.symbols
