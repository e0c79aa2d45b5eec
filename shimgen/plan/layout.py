"""Where the shim segment goes, how it is laid out, and the page tables that map it.

The segment follows the image, virtually and physically, with the image's own
translation; its layout is drawn in shimgen/plan/__init__.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..errors import Refused
from ..read.image import Image
from ..shim import pagetables as pt
from ..shim import pv_abi as pv_abi_layer
from ..shim.assemble import Shim
from ..shim.values import IDENTITY_MAP_SIZE, PAGE, Placement
from ..structs import NOTE_ALIGN, round_up
from ..structs import xen_abi as abi
from ..structs.clayout import MASK64
from .handoffs import HandoffSpec

MAX_MAPPED_CHUNKS = 1 << 16  # 2 MiB chunks the shim's page tables may cover: 128 GiB
OWN_HYPERCALL_PAGE = "hypercall_page"  # reserved for a PV handoff whose kernel has none
# The PV ABI layer's pages (docs/pv-abi.md, "Memory as PV sees it"): the pfns the
# kernel finds its console and xenstore rings at (their page-table entries point at
# the rings' frames under PVH), and the page tables the kernel runs on, last.
PV_RING_PAGES = ("pv_console", "pv_store")
KERNEL_TABLES = "kernel_tables"


@dataclass
class Draft:
    """What the planner has decided so far (the shim is assembled from it twice: once
    at address 0 for its size, once in place)."""

    image: Image
    spec: HandoffSpec
    single_entry: bool
    kernel_entry: int
    boot_mode: int | None  # the kernel's shimgen_boot_mode (virtual)
    kernel_hcall: int | None  # the kernel's HYPERCALL_PAGE (virtual)
    pv_virt_base: int
    pv_abi: bool = False  # the PV ABI layer goes in (start-info, the kernel's own page)
    shim_vaddr: int = 0
    shim_paddr: int = 0
    offsets: dict[str, int] = field(default_factory=dict)
    frames: int = 0
    kernel_frames: int = 0  # the PV ABI layer's tables for the kernel (0: none)

    @property
    def own_hcall(self) -> bool:
        return self.spec.pv and self.kernel_hcall is None

    @property
    def reserved_names(self) -> list[str]:
        own = [OWN_HYPERCALL_PAGE] if self.own_hcall else []
        layer = [*pv_abi_layer.RESERVED_PAGES, *PV_RING_PAGES] if self.pv_abi else []
        return [*self.spec.reserved, *own, *layer]

    def virt(self, name: str) -> int:
        return (self.shim_vaddr + self.offsets[name]) & MASK64

    def phys(self, name: str) -> int:
        return self.shim_paddr + self.offsets[name]

    def hcall_virt(self) -> int:
        if self.own_hcall:
            return self.virt(OWN_HYPERCALL_PAGE)
        return self.kernel_hcall or 0

    def hcall_phys(self) -> int:
        if self.own_hcall:
            return self.phys(OWN_HYPERCALL_PAGE)
        if self.kernel_hcall is None:
            return 0
        return self.image.virt_to_phys(self.kernel_hcall, "HYPERCALL_PAGE")

    def boot_mode_virt(self) -> int:
        """The kernel's variable, or the word at the start of the scratch page."""
        return self.boot_mode if self.boot_mode is not None else self.virt("scratch")

    def boot_mode_phys(self) -> int:
        if self.boot_mode is None:
            return self.phys("scratch")
        return self.image.virt_to_phys(self.boot_mode, abi.BOOT_MODE_SYMBOL)

    def placement(self) -> Placement:
        return Placement(
            shim_vaddr=self.shim_vaddr,
            shim_paddr=self.shim_paddr,
            offsets=dict(self.offsets),
            frames=self.frames,
            kernel_frames=self.kernel_frames,
            kernel_entry=self.kernel_entry,
            boot_mode_virt=self.boot_mode_virt(),
            boot_mode_phys=self.boot_mode_phys(),
            hypercall_virt=self.hcall_virt(),
            hypercall_phys=self.hcall_phys(),
            pv_virt_base=self.pv_virt_base,
            pv_abi=self.pv_abi,
        )

    def assemble(self) -> Shim:
        return self.spec.assemble(self.placement(), self.single_entry)


def shim_address(image: Image, delta: int) -> tuple[int, int]:
    """(p_vaddr, p_paddr) of the shim segment: after every segment, both ways."""
    loads = image.loadable_segments
    vend = max((s.vaddr + s.memsz) & MASK64 for s in loads)
    pend = max(s.paddr + s.memsz for s in loads)
    shim_vaddr = round_up(max(vend, (pend + delta) & MASK64), PAGE)
    shim_paddr = (shim_vaddr - delta) & MASK64
    if shim_paddr >= IDENTITY_MAP_SIZE:
        raise Refused(f"shim would sit at physical {shim_paddr:#x}, above 4 GiB: no PVH entry")
    return shim_vaddr, shim_paddr


def require_single_entry(draft: Draft, delta: int) -> None:
    if delta:
        raise Refused(
            f"{draft.image.path}: --single-entry needs an image linked virtual == physical, "
            f"and this one has VIRT_BASE - PADDR_OFFSET = {delta:#x}: the shim would sit at "
            f"virtual {draft.shim_vaddr:#x} for PV and at physical {draft.shim_paddr:#x} for "
            "PVH, and one entry address cannot be both. Leave out --single-entry for two "
            "entries"
        )


def reserved_layout(draft: Draft, tables_end: int) -> tuple[dict[str, int], int]:
    """Offsets of the reserved pages (one page each, the PV ABI layer's as many as it
    says) and the stack after the tables, and with the PV ABI layer the kernel's
    tables after them; the end."""
    offsets: dict[str, int] = {}
    cursor = tables_end
    for name in draft.reserved_names:
        offsets[name] = cursor
        cursor += PAGE * pv_abi_layer.RESERVED_PAGES.get(name, 1)
    offsets["stack"] = cursor
    cursor += draft.spec.stack_pages * PAGE
    offsets["stack_top"] = cursor
    if draft.pv_abi:
        # last: a PV kernel takes every frame after pt_base + nr_pt_frames as free
        offsets[KERNEL_TABLES] = cursor
        cursor += draft.kernel_frames * PAGE
    return offsets, cursor


def at_zero(draft: Draft) -> Draft:
    """The same shim at address 0 with the tables at offset 0: assembled for its size.
    The templates encode every address at a fixed width; the one value whose width
    could vary, a displacement between two reserved pages (SI_TO_* in
    40_start_info.S), is the same here as in the final layout, so this is the final
    size."""
    reserved, _end = reserved_layout(draft, 0)
    ptes = {name: 0 for name in ring_pte_names(draft)}
    return replace(draft, shim_vaddr=0, shim_paddr=0, offsets={"tables": 0} | reserved | ptes)


def lay_out(draft: Draft, code_size: int, note_size: int) -> tuple[int, int]:
    """Offsets of notes, tables and reserved pages; (filesz, memsz). Sets draft.frames
    and draft.offsets."""
    offsets = {"code": 0, "notes": round_up(code_size, NOTE_ALIGN)}
    offsets["tables"] = round_up(offsets["notes"] + note_size, PAGE)
    image = draft.image
    frames = 1 if draft.spec.page_tables else 0
    if draft.spec.page_tables:
        require_bounded_tables(image, draft_regions(draft, 0))
    while True:
        reserved, memsz = reserved_layout(draft, offsets["tables"] + frames * PAGE)
        draft.offsets = offsets | reserved  # the PV GDT's regions name its pages
        if not draft.spec.page_tables:
            break
        needed = pt.count_frames(draft_regions(draft, memsz))
        kernel = pt.count_frames(kernel_regions(draft, memsz), False) if draft.pv_abi else 0
        if (needed, kernel) == (frames, draft.kernel_frames):
            break
        frames, draft.kernel_frames = needed, kernel
    draft.offsets = offsets | reserved
    draft.frames = frames
    # the kernel's tables are built at patch time: in the file, up to the segment's end
    filesz = memsz if draft.pv_abi else offsets["tables"] + frames * PAGE
    return filesz, memsz


# --- page tables ----------------------------------------------------------------------


def draft_regions(draft: Draft, memsz: int) -> list[pt.Region]:
    return regions(
        draft.image, draft.shim_vaddr, draft.shim_paddr, memsz, draft.pv_abi, draft.offsets
    )


def regions(
    image: Image,
    shim_vaddr: int,
    shim_paddr: int,
    memsz: int,
    direct_map: bool = False,
    offsets: dict[str, int] | None = None,
) -> list[pt.Region]:
    """What the shim's page tables map: low memory identity, every segment, the shim,
    and with the PV ABI layer its window on physical memory (SHIM_DIRECTMAP_VIRT in
    structs/xen_abi.py), which its handlers reach frames through whatever the kernel
    maps low, and the PV GDT (gdt_regions) once offsets place the layer's pages."""
    mapped = [pt.Region(0, 0, IDENTITY_MAP_SIZE, "identity")]
    for segment in image.loadable_segments:
        start = segment.vaddr - segment.vaddr % PAGE
        pstart = segment.paddr - segment.vaddr % PAGE
        size = round_up(segment.vaddr + segment.memsz, PAGE) - start
        mapped.append(pt.Region(start & MASK64, pstart, size, f"segment {segment.index}"))
    mapped.append(pt.Region(shim_vaddr, shim_paddr, memsz, "shim"))
    if direct_map:
        mapped.append(
            pt.Region(abi.SHIM_DIRECTMAP_VIRT, 0, abi.SHIM_DIRECTMAP_SIZE, "shim direct map")
        )
        if offsets and "pv_gdt" in offsets:
            mapped += gdt_regions(shim_paddr, offsets)
    return mapped


def gdt_regions(shim_paddr: int, offsets: dict[str, int]) -> list[pt.Region]:
    """The PV GDT's pages at SHIM_GDT_VIRT (36_pv_traps.S): the first
    FIRST_RESERVED_GDT_PAGE each on the layer's zero page (set_gdt maps the kernel's
    frames there), then the page of Xen's entries. In the hypervisor's PML4 slots, so
    every PML4 the kernel runs on carries them."""
    zero = shim_paddr + offsets["pv_zero"]
    kernel = [
        pt.Region(abi.SHIM_GDT_VIRT + n * PAGE, zero, PAGE, "pv gdt (zero page)")
        for n in range(abi.FIRST_RESERVED_GDT_PAGE)
    ]
    xen = abi.SHIM_GDT_VIRT + abi.FIRST_RESERVED_GDT_BYTE
    return [*kernel, pt.Region(xen, shim_paddr + offsets["pv_gdt"], PAGE, "pv gdt (Xen's)")]


def require_bounded_tables(image: Image, mapped: list[pt.Region]) -> None:
    """Page tables for absurd segments (terabytes of p_memsz, thousands of copies)
    would take gigabytes and minutes to build: refuse them first."""
    chunks = sum(region.size // abi.LARGE_PAGE_SIZE + 2 for region in mapped)
    if chunks > MAX_MAPPED_CHUNKS:
        raise Refused(
            f"{image.path}: its loadable segments span more than "
            f"{MAX_MAPPED_CHUNKS * abi.LARGE_PAGE_SIZE >> 30} GiB: too much for the shim to map"
        )


def build_tables(draft: Draft, memsz: int) -> pt.PageTables:
    if not draft.spec.page_tables:
        return pt.PageTables(base=draft.phys("tables"), data=b"")
    return pt.build(draft_regions(draft, memsz), draft.phys("tables"))


# --- the tables the kernel runs on (PV ABI layer) ----------------------------------------


def kernel_regions(draft: Draft, memsz: int) -> list[pt.Region]:
    """What the kernel's own tables map, as a PV kernel's initial tables do: its
    segments and the shim segment (where start_info, the ring pages and the tables
    themselves lie), page by page; the padding after them comes at boot
    (35_pv_memory.S), when the pfns there are known. No identity map: a PV kernel
    extends these tables from pt_base over the addresses after its region and takes
    any present entry there for a table of its own."""
    return regions(draft.image, draft.shim_vaddr, draft.shim_paddr, memsz)[1:]


def ring_pte_names(draft: Draft) -> list[str]:
    """The offsets naming where the kernel's tables map each ring page (its L1 entry)."""
    return [f"{name}_pte" for name in PV_RING_PAGES] if draft.pv_abi else []


def build_kernel_tables(draft: Draft, memsz: int, shim_tables: pt.PageTables) -> pt.PageTables:
    """The kernel's tables (4 KiB pages over its region), with the shim's direct map
    (PML4 slot 262, the shim's own tables below it in the segment) shared; records in
    draft.offsets where each ring page's L1 entry lies, which the shim points at the
    ring's frame at boot."""
    base = draft.phys(KERNEL_TABLES)
    tables = pt.build(kernel_regions(draft, memsz), base, allow_large=False)
    data = bytearray(tables.data)
    at = pt.table_index(abi.SHIM_DIRECTMAP_VIRT, 4) * pt.ENTRY_SIZE
    end = at + pt.ENTRY_SIZE
    shared = shim_tables.data[at:end]
    if any(data[at:end]) or not any(shared):
        raise Refused("internal: the shim's direct-map slot is taken in the kernel's tables")
    data[at:end] = shared
    tables = pt.PageTables(base, bytes(data), small_pages=tables.small_pages)
    read = pt.reader_for(tables)
    for name, pte in zip(PV_RING_PAGES, ring_pte_names(draft), strict=True):
        found = pt.entry_address(read, tables.cr3, draft.virt(name))
        if found is None:
            raise Refused(f"internal: the kernel's tables do not map the {name} page")
        draft.offsets[pte] = found - draft.shim_paddr
    return tables


def check_tables(draft: Draft, shim: Shim, tables: pt.PageTables) -> None:
    """The mode switch runs at physical addresses, the rest at virtual ones: verify."""
    if not draft.spec.page_tables:
        return
    read = pt.reader_for(tables)
    identity = [draft.shim_paddr + shim.labels[label] for label in ("pvh_entry", "pvh_long_entry")]
    stack = draft.offsets["stack_top"] - 8
    entry = draft.kernel_entry
    probes = [
        (identity[0], identity[0], "PVH entry (identity)"),
        (identity[1], identity[1], "64-bit entry (identity)"),
        (draft.shim_vaddr + stack, draft.shim_paddr + stack, "shim stack"),
        (entry, draft.image.virt_to_phys(entry, "entry"), "kernel entry"),
    ]
    for vaddr, expected, what in probes:
        got = pt.translate(read, tables.cr3, vaddr)
        if got != expected:
            raise Refused(
                f"page tables map the {what} {vaddr:#x} to {got}, not {expected:#x}: "
                "a segment's virtual range collides with the identity map"
            )
