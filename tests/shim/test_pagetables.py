"""Prebuilt page tables, walked in Python the way the MMU walks them."""

from __future__ import annotations

from pathlib import Path

import pytest

from shimgen.plan import IDENTITY_MAP_SIZE, make_plan
from shimgen.read.image import read_image
from shimgen.shim import pagetables as pt

MIB = 1 << 20
HIGH = 0xFFFFFFFF80000000


def _walk(tables: pt.PageTables, vaddr: int) -> int | None:
    return pt.translate(pt.reader_for(tables), tables.cr3, vaddr)


def test_identity_map_uses_large_pages() -> None:
    tables = pt.build([pt.Region(0, 0, 1 << 30)], 0x200000)
    assert tables.large_pages == 512 and tables.small_pages == 0
    assert tables.frames == 3 == pt.count_frames([pt.Region(0, 0, 1 << 30)])
    for vaddr in (0, 0x1234, 0x3FFFFFFF, 0x200000 + 5):
        assert _walk(tables, vaddr) == vaddr
    assert _walk(tables, 1 << 30) is None


def test_unaligned_translation_uses_small_pages() -> None:
    # virtual 2 MiB-aligned, physical only 4 KiB-aligned: no large page possible
    region = pt.Region(HIGH, 0x101000, 3 * 0x1000)
    tables = pt.build([region], 0x10000)
    assert tables.large_pages == 0 and tables.small_pages == 3
    assert _walk(tables, HIGH + 0x1ABC) == 0x102ABC
    assert _walk(tables, HIGH + 0x3000) is None
    assert tables.frames == pt.count_frames([region])


def test_later_regions_override() -> None:
    regions = [pt.Region(0, 0, 4 * MIB), pt.Region(0x200000, 0x800000 + 0x1000, 0x1000)]
    tables = pt.build(regions, 0x1000000)
    assert _walk(tables, 0x200000) == 0x801000
    assert _walk(tables, 0x201000) == 0x201000  # rest of the chunk stays identity
    assert _walk(tables, 0x100000) == 0x100000  # first chunk: still a large page


def test_high_half_kernel_mapped_at_vaddr(samples_build: Path) -> None:
    image = read_image(samples_build / "pv-highhalf")
    plan = make_plan(image)
    for segment in image.loadable_segments:
        for offset in (0, segment.memsz - 1):
            assert _walk(plan.tables, segment.vaddr + offset) == segment.paddr + offset
    # the shim: virtual and (for the mode switch) identity
    assert _walk(plan.tables, plan.shim_vaddr) == plan.shim_paddr
    assert _walk(plan.tables, plan.shim_paddr) == plan.shim_paddr
    assert _walk(plan.tables, IDENTITY_MAP_SIZE - 1) == IDENTITY_MAP_SIZE - 1
    assert plan.tables.base == plan.shim_paddr + plan.offsets["tables"]


@pytest.mark.parametrize("base", [0x1001, 0])
def test_alignment_is_checked(base: int) -> None:
    if base % 0x1000:
        with pytest.raises(ValueError):
            pt.build([pt.Region(0, 0, 0x1000)], base)
    else:
        with pytest.raises(ValueError):
            pt.build([pt.Region(0x10, 0, 0x1000)], 0x1000)


def test_tables_are_little_endian_entries() -> None:
    """Each table is 512 little-endian 64-bit entries, as the MMU reads them (packed
    from an array in the host's order, swapped on a big-endian host)."""
    import struct
    from array import array

    entries = array("Q", [(n * 0x9E3779B97F4A7C15) & ((1 << 64) - 1) for n in range(512)])
    assert pt._little_endian(entries) == struct.pack("<512Q", *entries)
    tables = pt.build([pt.Region(0, 0, 4 << 20), pt.Region(HIGH, 0x1000, 0x3000)], 0x200000)
    first_pd = struct.unpack_from("<Q", tables.data, 2 * 4096)[0]  # PML4, PDPT, then a PD
    assert first_pd == 0 | pt.PTE_PRESENT | pt.PTE_WRITE | pt.PTE_LARGE
