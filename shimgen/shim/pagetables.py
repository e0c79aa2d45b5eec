"""x86-64 4-level page tables computed at patch time.

A PVH loader places every segment at its p_paddr, so the tables the shim needs to
enter long mode can be built here, stored in the shim segment at a known physical
address, and loaded into CR3 at boot with no table-building loop in assembly.

Regions are applied in order; a later region overrides an earlier one page by page
(segments override the identity map where they disagree). A 2 MiB virtual chunk
gets one large page when everything mapped in it shares one 2 MiB-aligned
translation; otherwise it gets a 4 KiB page table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..structs.xen_abi import (
    ENTRIES_PER_TABLE,
    LARGE_PAGE_SIZE,
    PAGE_SIZE,
    PTE_ADDR_MASK,
    PTE_LARGE,
    PTE_PRESENT,
    PTE_WRITE,
)

_ENTRY_SIZE = 8
_TABLE_FLAGS = PTE_PRESENT | PTE_WRITE
_CANONICAL_MASK = (1 << 48) - 1


@dataclass(frozen=True)
class Region:
    """Map [vaddr, vaddr + size) to [paddr, paddr + size)."""

    vaddr: int
    paddr: int
    size: int
    name: str = ""


@dataclass
class PageTables:
    base: int  # physical address of the first table (the PML4)
    data: bytes = field(repr=False)
    large_pages: int = 0
    small_pages: int = 0

    @property
    def frames(self) -> int:
        return len(self.data) // PAGE_SIZE

    @property
    def cr3(self) -> int:
        return self.base


def _chunks(regions: list[Region]) -> dict[int, list[tuple[int, int, int]]]:
    """2 MiB virtual chunk -> [(start, end, delta)] in region order (delta = v - p)."""
    pieces: dict[int, list[tuple[int, int, int]]] = {}
    for region in regions:
        if region.size <= 0:
            continue
        if region.vaddr % PAGE_SIZE or region.paddr % PAGE_SIZE:
            where = region.name or f"{region.vaddr:#x}"
            raise ValueError(f"region {where} is not page aligned")
        delta = region.vaddr - region.paddr
        start, end = region.vaddr, region.vaddr + _page_round_up(region.size)
        chunk = start - start % LARGE_PAGE_SIZE
        while chunk < end:
            piece = (max(start, chunk), min(end, chunk + LARGE_PAGE_SIZE), delta)
            pieces.setdefault(chunk & ((1 << 64) - 1), []).append(piece)
            chunk += LARGE_PAGE_SIZE
    return pieces


def _page_round_up(value: int) -> int:
    return (value + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE


def _uses_large_page(pieces: list[tuple[int, int, int]]) -> bool:
    deltas = {delta for _, _, delta in pieces}
    return len(deltas) == 1 and next(iter(deltas)) % LARGE_PAGE_SIZE == 0


def _index(vaddr: int, level: int) -> int:
    """Table index of vaddr at level 4 (PML4) .. 1 (PT)."""
    return (vaddr >> (12 + 9 * (level - 1))) & (ENTRIES_PER_TABLE - 1)


def count_frames(regions: list[Region]) -> int:
    """How many 4 KiB frames build() will need, without placing them."""
    chunks = _chunks(regions)
    pml4 = {_index(c, 4) for c in chunks}
    pdpt = {(_index(c, 4), _index(c, 3)) for c in chunks}
    pts = sum(1 for pieces in chunks.values() if not _uses_large_page(pieces))
    return 1 + len(pml4) + len(pdpt) + pts


def build(regions: list[Region], base: int) -> PageTables:
    """Tables for regions, laid out from physical address base (PML4 first)."""
    if base % PAGE_SIZE:
        raise ValueError("page tables must start on a page boundary")
    chunks = _chunks(regions)
    tables: dict[tuple, bytearray] = {(): bytearray(PAGE_SIZE)}
    order: list[tuple] = [()]

    def table(key: tuple) -> bytearray:
        if key not in tables:
            tables[key] = bytearray(PAGE_SIZE)
            order.append(key)
        return tables[key]

    # Allocate in virtual-address order so the layout is deterministic.
    for chunk in sorted(chunks, key=lambda c: c & _CANONICAL_MASK):
        table((_index(chunk, 4),))
        table((_index(chunk, 4), _index(chunk, 3)))
    for chunk in sorted(chunks, key=lambda c: c & _CANONICAL_MASK):
        if not _uses_large_page(chunks[chunk]):
            table((_index(chunk, 4), _index(chunk, 3), _index(chunk, 2)))
    address = {key: base + n * PAGE_SIZE for n, key in enumerate(order)}

    def put(tbl: bytearray, index: int, value: int) -> None:
        tbl[index * _ENTRY_SIZE : (index + 1) * _ENTRY_SIZE] = value.to_bytes(_ENTRY_SIZE, "little")

    large = small = 0
    for chunk, pieces in chunks.items():
        i4, i3, i2 = _index(chunk, 4), _index(chunk, 3), _index(chunk, 2)
        put(tables[()], i4, address[(i4,)] | _TABLE_FLAGS)
        put(tables[(i4,)], i3, address[(i4, i3)] | _TABLE_FLAGS)
        pd = tables[(i4, i3)]
        if _uses_large_page(pieces):
            delta = pieces[0][2]
            put(pd, i2, ((chunk - delta) & PTE_ADDR_MASK) | _TABLE_FLAGS | PTE_LARGE)
            large += 1
            continue
        pt = tables[(i4, i3, i2)]
        put(pd, i2, address[(i4, i3, i2)] | _TABLE_FLAGS)
        for start, end, delta in pieces:  # later pieces override earlier ones
            for page in range(start, end, PAGE_SIZE):
                put(pt, _index(page, 1), ((page - delta) & PTE_ADDR_MASK) | _TABLE_FLAGS)
        small += len({p for s, e, _ in pieces for p in range(s, e, PAGE_SIZE)})
    data = b"".join(bytes(tables[key]) for key in order)
    return PageTables(base=base, data=data, large_pages=large, small_pages=small)


def translate(memory_read, cr3: int, vaddr: int) -> int | None:
    """Walk 4-level tables like the MMU; memory_read(paddr, size) -> bytes."""
    table = cr3 & PTE_ADDR_MASK
    for level in (4, 3, 2, 1):
        entry = int.from_bytes(memory_read(table + _index(vaddr, level) * _ENTRY_SIZE, 8), "little")
        if not entry & PTE_PRESENT:
            return None
        if level == 2 and entry & PTE_LARGE:
            return (entry & PTE_ADDR_MASK & ~(LARGE_PAGE_SIZE - 1)) | (vaddr % LARGE_PAGE_SIZE)
        table = entry & PTE_ADDR_MASK
    return table | (vaddr % PAGE_SIZE)


def reader_for(tables: PageTables):
    """memory_read over the tables' own bytes (for tests and the planner)."""

    def read(paddr: int, size: int) -> bytes:
        offset = paddr - tables.base
        if offset < 0 or offset + size > len(tables.data):
            raise ValueError(f"table read outside the tables at {paddr:#x}")
        return tables.data[offset : offset + size]

    return read
