"""Memory maps as loaders write them, and their RAM counted independently of the shim."""

from __future__ import annotations

from shimgen.structs import E820Type
from shimgen.structs import xen_abi as abi

MIB = 1 << 20
RAM, RESERVED, ACPI = E820Type.RAM, E820Type.RESERVED, E820Type.ACPI
# libxl's PVH memory map (tools/libs/light/libxl_x86.c, domain_construct_memmap): RAM
# from 0 up to the MMIO hole, the HVM special pages as RESERVED (8 pages ending at
# pfn 0xff000), ACPI tables in the hole, and the RAM above the hole from 4 GiB on.
LOWMEM_END = 0xFC000000  # where libxl's default PVH hole starts
SPECIAL_PAGES = (0xFEFF8000, 8 * abi.PAGE_SIZE, RESERVED)
ACPI_TABLES = (0xFC000000, 0x2000, ACPI)

Memmap = tuple[tuple[int, int, int], ...]


def xl_pvh_memmap(memory_mib: int) -> Memmap:
    """The map xl writes for a PVH guest of `memory = memory_mib`."""
    memory = memory_mib * MIB
    low = min(memory, LOWMEM_END)
    entries = [(0, low, RAM), SPECIAL_PAGES, ACPI_TABLES]
    if memory > low:
        entries.append((1 << 32, memory - low, RAM))
    return tuple(entries)


def ram_pages(memmap: Memmap) -> int:
    """Whole 4 KiB pages inside the map's RAM entries."""
    return sum(
        max(0, (addr + size) // abi.PAGE_SIZE - -(-addr // abi.PAGE_SIZE))
        for addr, size, kind in memmap
        if kind == RAM
    )
