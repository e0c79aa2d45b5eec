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

import sys
from array import array
from dataclasses import dataclass, field

from ..structs import round_up
from ..structs.clayout import MASK64
from ..structs.xen_abi import (
    ENTRIES_PER_TABLE,
    LARGE_PAGE_SIZE,
    PAGE_SIZE,
    PTE_ADDR_MASK,
    PTE_LARGE,
    PTE_PRESENT,
    PTE_WRITE,
)

ENTRY_SIZE = 8  # bytes of one entry at every level
_ENTRY_SIZE = ENTRY_SIZE
_ENTRY_TYPECODE = "Q"  # array's unsigned 64-bit integers, in the host's byte order
_TABLE_FLAGS = PTE_PRESENT | PTE_WRITE
_CANONICAL_MASK = (1 << 48) - 1
_INDEX_BITS = ENTRIES_PER_TABLE.bit_length() - 1  # 9
_INDEX_MASK = ENTRIES_PER_TABLE - 1
_PML4_SHIFT = 12 + 3 * _INDEX_BITS  # the bits below a PML4 entry's index
_PDPT_SHIFT = 12 + 2 * _INDEX_BITS
_PD_SHIFT = 12 + _INDEX_BITS


@dataclass(frozen=True)
class Region:
    """Map [vaddr, vaddr + size) to [paddr, paddr + size)."""

    vaddr: int
    paddr: int
    size: int
    name: str = ""


@dataclass
class PageTables:
    """Page tables laid out from ``base``, as the bytes the shim segment holds."""

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
        start, end = region.vaddr, region.vaddr + round_up(region.size, PAGE_SIZE)
        if not pieces and not (start | end) % LARGE_PAGE_SIZE:
            # the first region in whole chunks (the identity map): one piece each
            pieces = {
                chunk & MASK64: [(chunk, chunk + LARGE_PAGE_SIZE, delta)]
                for chunk in range(start, end, LARGE_PAGE_SIZE)
            }
            continue
        for chunk in range(start - start % LARGE_PAGE_SIZE, end, LARGE_PAGE_SIZE):
            chunk_end = chunk + LARGE_PAGE_SIZE
            piece = (
                start if start > chunk else chunk,
                end if end < chunk_end else chunk_end,
                delta,
            )
            key = chunk & MASK64
            found = pieces.get(key)
            if found is None:
                pieces[key] = [piece]
            else:
                found.append(piece)
    return pieces


def _large_page_delta(pieces: list[tuple[int, int, int]]) -> int | None:
    """The one translation of a chunk that a large page can map, else None."""
    delta = pieces[0][2]
    if delta % LARGE_PAGE_SIZE:
        return None
    for piece in pieces:
        if piece[2] != delta:
            return None
    return delta


def table_index(vaddr: int, level: int) -> int:
    """Index of vaddr's entry in its table at level 4 (PML4) .. 1 (PT)."""
    return _index(vaddr, level)


def _index(vaddr: int, level: int) -> int:
    """Table index of vaddr at level 4 (PML4) .. 1 (PT)."""
    return (vaddr >> (12 + 9 * (level - 1))) & (ENTRIES_PER_TABLE - 1)


# The tables a 2 MiB chunk goes through, as keys: its PDPT (one per PML4 entry), its
# page directory (one per PDPT entry) and its page table (one per page-directory
# entry): the address shifted down to the index, masked to the indexes above it.
_PDPT_KEY_MASK = _INDEX_MASK
_PD_KEY_MASK = (1 << 2 * _INDEX_BITS) - 1
_PT_KEY_MASK = (1 << 3 * _INDEX_BITS) - 1


def count_frames(regions: list[Region], allow_large: bool = True) -> int:
    """How many 4 KiB frames build() will need, without placing them."""
    chunks = _chunks(regions)
    pml4 = {c >> _PML4_SHIFT & _PDPT_KEY_MASK for c in chunks}
    pdpt = {c >> _PDPT_SHIFT & _PD_KEY_MASK for c in chunks}
    pts = sum(
        1 for pieces in chunks.values() if not allow_large or _large_page_delta(pieces) is None
    )
    return 1 + len(pml4) + len(pdpt) + pts


def build(regions: list[Region], base: int, allow_large: bool = True) -> PageTables:
    """Tables for regions, laid out from physical address base (PML4 first).

    Tables are allocated in virtual-address order (PML4, then each PDPT and page
    directory, then the page tables), so the layout is deterministic. Entries are
    collected as integers and packed once at the end: the identity map alone is
    2048 chunks, so the loop over chunks is kept lean. ``allow_large=False`` maps
    every page through a page table, as a PV kernel expects of the tables it walks
    (docs/pv-abi.md)."""
    if base % PAGE_SIZE:
        raise ValueError("page tables must start on a page boundary")
    chunks = _chunks(regions)
    ordered = sorted(chunks, key=lambda c: c & _CANONICAL_MASK)
    large = {chunk: _large_page_delta(chunks[chunk]) if allow_large else None for chunk in ordered}
    keys: dict[tuple[int, int], None] = {(0, 0): None}  # (level, key); the PML4 is (0, 0)
    for chunk in ordered:
        keys[(3, chunk >> _PML4_SHIFT & _PDPT_KEY_MASK)] = None
        keys[(2, chunk >> _PDPT_SHIFT & _PD_KEY_MASK)] = None
    for chunk in ordered:
        if large[chunk] is None:
            keys[(1, chunk >> _PD_SHIFT & _PT_KEY_MASK)] = None
    empty = array(_ENTRY_TYPECODE, bytes(_ENTRY_SIZE * ENTRIES_PER_TABLE))
    tables = {key: array(_ENTRY_TYPECODE, empty) for key in keys}
    address = {key: base + n * PAGE_SIZE for n, key in enumerate(tables)}
    pml4 = tables[(0, 0)]
    large_pages = small_pages = 0
    for chunk, pieces in chunks.items():
        pdpt_key = (3, chunk >> _PML4_SHIFT & _PDPT_KEY_MASK)
        pd_key = (2, chunk >> _PDPT_SHIFT & _PD_KEY_MASK)
        pml4[chunk >> _PML4_SHIFT & _INDEX_MASK] = address[pdpt_key] | _TABLE_FLAGS
        tables[pdpt_key][chunk >> _PDPT_SHIFT & _INDEX_MASK] = address[pd_key] | _TABLE_FLAGS
        pd = tables[pd_key]
        delta = large[chunk]
        if delta is not None:
            entry = ((chunk - delta) & PTE_ADDR_MASK) | _TABLE_FLAGS | PTE_LARGE
            pd[chunk >> _PD_SHIFT & _INDEX_MASK] = entry
            large_pages += 1
            continue
        pt_key = (1, chunk >> _PD_SHIFT & _PT_KEY_MASK)
        pt = tables[pt_key]
        pd[chunk >> _PD_SHIFT & _INDEX_MASK] = address[pt_key] | _TABLE_FLAGS
        for start, end, delta in pieces:  # later pieces override earlier ones
            for page in range(start, end, PAGE_SIZE):
                pt[_index(page, 1)] = ((page - delta) & PTE_ADDR_MASK) | _TABLE_FLAGS
        small_pages += len({p for s, e, _ in pieces for p in range(s, e, PAGE_SIZE)})
    data = b"".join(_little_endian(entries) for entries in tables.values())
    return PageTables(base=base, data=data, large_pages=large_pages, small_pages=small_pages)


def _little_endian(entries: array) -> bytes:
    """A table's bytes as x86 reads them (array packs in the host's byte order: one
    call for 512 entries instead of a Python-level pack of each)."""
    if sys.byteorder != "little":
        entries = array(_ENTRY_TYPECODE, entries)
        entries.byteswap()
    return entries.tobytes()


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


def entry_address(memory_read, cr3: int, vaddr: int, level: int = 1) -> int | None:
    """Physical address of the entry at ``level`` (4 = PML4 .. 1 = page table) that
    maps vaddr, None when a table above it is missing or a large page ends the walk."""
    table = cr3 & PTE_ADDR_MASK
    for at in (4, 3, 2, 1):
        address = table + _index(vaddr, at) * _ENTRY_SIZE
        if at == level:
            return address
        entry = int.from_bytes(memory_read(address, _ENTRY_SIZE), "little")
        if not entry & PTE_PRESENT or (at == 2 and entry & PTE_LARGE):
            return None
        table = entry & PTE_ADDR_MASK
    return None


def reader_for(tables: PageTables):
    """memory_read over the tables' own bytes (for tests and the planner)."""

    def read(paddr: int, size: int) -> bytes:
        offset = paddr - tables.base
        if offset < 0 or offset + size > len(tables.data):
            raise ValueError(f"table read outside the tables at {paddr:#x}")
        return tables.data[offset : offset + size]

    return read
