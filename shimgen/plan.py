"""Plan a patch: where the shim goes, what it reserves, which notes it writes.

The shim segment follows the image, virtually and physically, with the image's own
translation (p_paddr = p_vaddr - (VIRT_BASE - PADDR_OFFSET)) so a PV loader maps it
where it was linked and a PVH loader puts it where its page tables say. Layout of
the segment, from its start:

    code        the assembled shim (PV entry first)
    notes       the exact bytes of the new PT_NOTE (4-aligned)
    tables      prebuilt page tables (page aligned)            <- end of p_filesz
    start_info  the synthesized start_info_t (one page)
    scratch     hypercall arguments and the XENMEM_memory_map buffer (one page)
    shared_info the frame Xen's shared_info is mapped into (one page)
    hypercall   the shim's own hypercall page, only when the kernel has none
    stack       the shim's stack, rsp starts at its top        <- end of p_memsz
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import __version__
from . import pagetables as pt
from .assemble import Shim, assemble
from .check import evaluate
from .errors import Refused
from .image import Image
from .structs import XEN_NOTE_NAME, Payload, XenNote
from .structs import xen_abi as abi
from .structs.elf import Machine
from .structs.shim_meta import SHIM_META_NOTE_TYPE, SHIM_META_OWNER, ShimMeta

HANDOFFS = ("start-info",)
PAGE = abi.PAGE_SIZE
IDENTITY_MAP_SIZE = 1 << 32  # every address a PVH loader can hand in ebx or a paddr field
STACK_PAGES = 4
SCRATCH_E820_OFFSET = 0x100  # hypercall argument structs use the first 256 bytes
PV_NOTES_DEFAULTS = {XenNote.LOADER: "generic", XenNote.XEN_VERSION: "xen-3.0"}
SHIM_REPLACED = (XenNote.ENTRY, XenNote.PHYS32_ENTRY)
MASK64 = (1 << 64) - 1


def _round_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


@dataclass(frozen=True)
class NoteEntry:
    owner: bytes
    type: int
    desc: bytes
    action: str  # "replaced" | "added" | "copied" | "metadata"
    label: str

    def encode(self) -> bytes:
        name = self.owner + b"\0"
        header = b"".join(
            value.to_bytes(4, "little") for value in (len(name), len(self.desc), self.type)
        )
        return header + _pad4(name) + _pad4(self.desc)


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


@dataclass
class Plan:
    handoff: str
    image: Image = field(repr=False)
    delta: int  # p_vaddr - p_paddr of the image (VIRT_BASE - PADDR_OFFSET)
    kernel_entry: int
    boot_mode_symbol: int | None
    hypercall_page_virt: int
    hypercall_page_own: bool
    shim_vaddr: int
    shim_paddr: int
    offsets: dict[str, int]
    filesz: int
    memsz: int
    shim: Shim = field(repr=False)
    tables: pt.PageTables = field(repr=False)
    notes: list[NoteEntry]
    options: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    @property
    def pv_entry(self) -> int:
        return self.shim_vaddr + self.shim.labels["pv_entry"]

    @property
    def pvh_entry(self) -> int:
        return self.shim_paddr + self.shim.labels["pvh_entry"]

    @property
    def note_bytes(self) -> bytes:
        return b"".join(note.encode() for note in self.notes)

    def segment_bytes(self) -> bytes:
        """The p_filesz bytes of the shim segment."""
        data = bytearray(self.filesz)
        data[: len(self.shim.code)] = self.shim.code
        notes = self.note_bytes
        data[self.offsets["notes"] : self.offsets["notes"] + len(notes)] = notes
        data[self.offsets["tables"] : self.offsets["tables"] + len(self.tables.data)] = (
            self.tables.data
        )
        return bytes(data)

    def virt(self, name: str) -> int:
        return self.shim_vaddr + self.offsets[name]

    def phys(self, name: str) -> int:
        return self.shim_paddr + self.offsets[name]

    def to_json(self) -> dict[str, Any]:
        return {
            "handoff": self.handoff,
            "delta": self.delta,
            "kernel_entry": self.kernel_entry,
            "boot_mode_symbol": self.boot_mode_symbol,
            "hypercall_page": self.hypercall_page_virt,
            "hypercall_page_own": self.hypercall_page_own,
            "shim": {
                "vaddr": self.shim_vaddr,
                "paddr": self.shim_paddr,
                "filesz": self.filesz,
                "memsz": self.memsz,
                "code_size": len(self.shim.code),
                "offsets": self.offsets,
                "labels": self.shim.labels,
            },
            "pv_entry": self.pv_entry,
            "pvh_entry": self.pvh_entry,
            "page_tables": {
                "base": self.tables.base,
                "frames": self.tables.frames,
                "large_pages": self.tables.large_pages,
                "small_pages": self.tables.small_pages,
            },
            "notes": [
                {
                    "owner": n.owner.decode(),
                    "type": n.type,
                    "name": n.label,
                    "action": n.action,
                    "desc": n.desc.hex(),
                }
                for n in self.notes
            ],
            "options": self.options,
            "warnings": self.warnings,
        }


# --- the image's own facts ------------------------------------------------------------


def _require_x86_64(image: Image) -> None:
    if image.elf_class != 64 or image.machine != Machine.X86_64:
        raise Refused(
            f"{image.path}: handoff start-info needs an ELF64 x86-64 kernel "
            f"(this is ELF{image.elf_class} {image.machine_name})"
        )


def _segment_of(image: Image, vaddr: int) -> Any:
    for segment in image.loadable_segments:
        if segment.vaddr <= vaddr < segment.vaddr + max(segment.memsz, 1):
            return segment
    return None


def _virt_to_phys(image: Image, vaddr: int, what: str) -> int:
    segment = _segment_of(image, vaddr)
    if segment is None:
        raise Refused(f"{image.path}: {what} {vaddr:#x} is outside every loadable segment")
    return segment.paddr + (vaddr - segment.vaddr)


def _translation(image: Image) -> int:
    """VIRT_BASE - PADDR_OFFSET as libelf computes them for PV."""
    details = evaluate(image).pv.details
    if "virt_base" in details:
        return (details["virt_base"] - details["elf_paddr_offset"]) & MASK64
    loads = image.loadable_segments
    return (loads[0].vaddr - loads[0].paddr) & MASK64 if loads else 0


def _kernel_entry(image: Image, entry: str | None) -> int:
    if entry is not None:
        if entry in image.symbols:
            value = image.symbols[entry]
        else:
            try:
                value = int(entry, 0)
            except ValueError:
                raise Refused(f"--entry {entry}: no such symbol and not an address") from None
    else:
        details = evaluate(image).pv.details
        value = details.get("virt_entry")
        note = next((n for n in image.xen_notes if n.type == XenNote.ENTRY), None)
        if note is not None and isinstance(note.value, int):
            value = note.value
        if value is None:
            value = image.entry
    segment = _segment_of(image, value)
    if segment is None or not segment.flags & 1:
        raise Refused(
            f"{image.path}: PV entry {value:#x} is not in an executable loadable segment; "
            "give the kernel's 64-bit PV entry with --entry SYMBOL|ADDR"
        )
    return value


def _hypercall_page(image: Image) -> int | None:
    for note in reversed(image.xen_notes):
        if note.type == XenNote.HYPERCALL_PAGE and isinstance(note.value, int):
            value = note.value
            if note.source.startswith("__xen_guest"):
                value = (value << abi.PAGE_SHIFT) + _legacy_virt_base(image)
            return value
    return None


def _legacy_virt_base(image: Image) -> int:
    return next((int(n.value) for n in image.legacy_xen_notes if n.type == XenNote.VIRT_BASE), 0)


# --- notes ----------------------------------------------------------------------------


def _number(value: int, width: int = 8) -> bytes:
    return (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")


def _copied_notes(image: Image) -> list[NoteEntry]:
    """Xen notes from sections or __xen_guest that must move into the new PT_NOTE.

    libelf reads sections only when no PT_NOTE holds a Xen note; ours will, so
    everything it would have read from elsewhere is copied. Legacy values are
    converted: HYPERCALL_PAGE is a page number there, ELF_PADDR_OFFSET defaults to
    VIRT_BASE there and to 0 with notes.
    """
    if image.note_origin in ("segments", None):
        return []
    copied = []
    legacy = image.note_origin == "legacy"
    for note in image.xen_notes:
        if note.type in SHIM_REPLACED or not note.known:
            continue
        kind = XenNote(note.type)
        if legacy:
            if kind is XenNote.HYPERCALL_PAGE:
                continue  # re-added as an address by _added_notes
            if kind.payload is Payload.NUMBER:
                desc = _number(int(note.value))
            else:
                desc = str(note.value).encode("latin-1") + b"\0"
        else:
            desc = note.raw
        copied.append(NoteEntry(XEN_NOTE_NAME, note.type, desc, "copied", kind.name))
    if legacy and not any(n.type == XenNote.PADDR_OFFSET for n in image.xen_notes):
        desc = _number(_legacy_virt_base(image))
        copied.append(NoteEntry(XEN_NOTE_NAME, XenNote.PADDR_OFFSET, desc, "added", "PADDR_OFFSET"))
    return copied


def _added_notes(image: Image, hypercall_virt: int, own_page: bool) -> list[NoteEntry]:
    notes = []
    present = {n.type for n in image.xen_notes}
    for kind, text in PV_NOTES_DEFAULTS.items():
        usable = kind in present
        if kind is XenNote.LOADER:
            usable = usable or any(
                n.type == XenNote.GUEST_OS and str(n.value).startswith("linux")
                for n in image.xen_notes
            )
        if not usable:
            notes.append(NoteEntry(XEN_NOTE_NAME, kind, text.encode() + b"\0", "added", kind.name))
    legacy_hypercall = image.note_origin == "legacy" and XenNote.HYPERCALL_PAGE in present
    if own_page or legacy_hypercall:
        notes.append(
            NoteEntry(
                XEN_NOTE_NAME,
                XenNote.HYPERCALL_PAGE,
                _number(hypercall_virt),
                "added",
                "HYPERCALL_PAGE",
            )
        )
    return notes


def _entry_notes(image: Image, pv_entry: int, pvh_entry: int) -> list[NoteEntry]:
    present = {n.type for n in image.xen_notes}
    return [
        NoteEntry(
            XEN_NOTE_NAME,
            XenNote.ENTRY,
            _number(pv_entry),
            "replaced" if XenNote.ENTRY in present else "added",
            "ENTRY",
        ),
        NoteEntry(
            XEN_NOTE_NAME,
            XenNote.PHYS32_ENTRY,
            _number(pvh_entry, 4),
            "replaced" if XenNote.PHYS32_ENTRY in present else "added",
            "PHYS32_ENTRY",
        ),
    ]


# --- layout ---------------------------------------------------------------------------


def _reserved_layout(tables_end: int, own_hypercall_page: bool) -> tuple[dict[str, int], int]:
    offsets: dict[str, int] = {}
    cursor = tables_end
    names = ["start_info", "scratch", "shared_info"]
    if own_hypercall_page:
        names.append("hypercall_page")
    for name in names:
        offsets[name] = cursor
        cursor += PAGE
    offsets["stack"] = cursor
    cursor += STACK_PAGES * PAGE
    offsets["stack_top"] = cursor
    return offsets, cursor


def _regions(image: Image, shim_vaddr: int, shim_paddr: int, memsz: int) -> list[pt.Region]:
    regions = [pt.Region(0, 0, IDENTITY_MAP_SIZE, "identity")]
    for segment in image.loadable_segments:
        start = segment.vaddr - segment.vaddr % PAGE
        pstart = segment.paddr - segment.vaddr % PAGE
        size = _round_up(segment.vaddr + segment.memsz, PAGE) - start
        regions.append(pt.Region(start & MASK64, pstart, size, f"segment {segment.index}"))
    regions.append(pt.Region(shim_vaddr, shim_paddr, memsz, "shim"))
    return regions


def _layout_values(
    plan_offsets: dict[str, int],
    vaddr: int,
    paddr: int,
    kernel_entry: int,
    boot_mode: int,
    hcall_virt: int,
    hcall_phys: int,
    frames: int,
) -> dict[str, int]:
    def v(name: str) -> int:
        return (vaddr + plan_offsets[name]) & MASK64

    def p(name: str) -> int:
        return paddr + plan_offsets[name]

    stub = abi.HYPERCALL_STUB_SIZE
    return {
        "SHIM_VIRT": vaddr,
        "SHIM_PHYS": paddr,
        "KERNEL_ENTRY": kernel_entry,
        "BOOT_MODE_VIRT": boot_mode,
        "STACK_TOP_VIRT": v("stack_top"),
        "START_INFO_VIRT": v("start_info"),
        "PML4_PHYS": p("tables"),
        "PML4_VIRT": v("tables"),
        "NR_PT_FRAMES": frames,
        "HCALL_PAGE_PHYS": hcall_phys,
        "HCALL_CONSOLE_IO": hcall_virt + abi.Hypercall.CONSOLE_IO * stub,
        "HCALL_SCHED_OP": hcall_virt + abi.Hypercall.SCHED_OP * stub,
        "HCALL_MEMORY_OP": hcall_virt + abi.Hypercall.MEMORY_OP * stub,
        "HCALL_HVM_OP": hcall_virt + abi.Hypercall.HVM_OP * stub,
        "SCRATCH_VIRT": v("scratch"),
        "E820_BUF_VIRT": v("scratch") + SCRATCH_E820_OFFSET,
        "E820_CAPACITY": (PAGE - SCRATCH_E820_OFFSET) // abi.E820_ENTRY_STRIDE,
        "SHARED_INFO_PHYS": p("shared_info"),
        "SHARED_INFO_PFN": p("shared_info") >> abi.PAGE_SHIFT,
    }


def make_plan(
    image: Image,
    handoff: str = "start-info",
    entry: str | None = None,
    original: dict[str, Any] | None = None,
) -> Plan:
    """Everything the patch writes, decided from the image and the options."""
    if handoff not in HANDOFFS:
        raise Refused(f"handoff {handoff} is not implemented yet (available: start-info)")
    _require_x86_64(image)
    if not image.loadable_segments:
        raise Refused(f"{image.path}: no loadable segment")
    delta = _translation(image)
    kernel_entry = _kernel_entry(image, entry)
    warnings = []
    boot_mode = image.symbols.get(abi.BOOT_MODE_SYMBOL)
    if boot_mode is not None and _segment_of(image, boot_mode) is None:
        warnings.append(f"{abi.BOOT_MODE_SYMBOL} at {boot_mode:#x} is not loaded: not written")
        boot_mode = None
    kernel_hcall = _hypercall_page(image)
    own_hcall = kernel_hcall is None
    if any(n.type == XenNote.PHYS32_ENTRY for n in image.segment_xen_notes):
        warnings.append("the input already has a PHYS32_ENTRY note; the shim's (last) one wins")

    loads = image.loadable_segments
    vend = max((s.vaddr + s.memsz) & MASK64 for s in loads)
    pend = max(s.paddr + s.memsz for s in loads)
    shim_vaddr = _round_up(max(vend, (pend + delta) & MASK64), PAGE)
    shim_paddr = (shim_vaddr - delta) & MASK64
    if shim_paddr >= IDENTITY_MAP_SIZE:
        raise Refused(f"shim would sit at physical {shim_paddr:#x}, above 4 GiB: no PVH entry")

    options = {"handoff": handoff, "entry": entry}
    provisional = _assemble_at(
        0,
        0,
        {"tables": 0, "start_info": 0, "scratch": 0, "shared_info": 0, "stack_top": 0},
        0,
        0,
        0,
        0,
        0,
    )
    code_size = len(provisional.code)
    meta_stub = _meta(image, handoff, options, original, kernel_entry, 0, 0, 0, 0, code_size, 0, 0)
    note_count_bytes = sum(
        len(n.encode())
        for n in _copied_notes(image)
        + _added_notes(image, 0, own_hcall)
        + _entry_notes(image, 0, 0)
        + [meta_stub]
    )
    offsets = {"code": 0, "notes": _round_up(code_size, 4)}
    offsets["tables"] = _round_up(offsets["notes"] + note_count_bytes, PAGE)

    frames = 1
    while True:
        reserved, memsz = _reserved_layout(offsets["tables"] + frames * PAGE, own_hcall)
        regions = _regions(image, shim_vaddr, shim_paddr, memsz)
        needed = pt.count_frames(regions)
        if needed == frames:
            break
        frames = needed
    offsets.update(reserved)
    filesz = offsets["tables"] + frames * PAGE
    tables = pt.build(regions, shim_paddr + offsets["tables"])

    hcall_virt = (shim_vaddr + offsets["hypercall_page"]) if own_hcall else kernel_hcall
    hcall_phys = (
        (shim_paddr + offsets["hypercall_page"])
        if own_hcall
        else _virt_to_phys(image, kernel_hcall, "HYPERCALL_PAGE")
    )
    boot_mode_target = boot_mode if boot_mode is not None else shim_vaddr + offsets["scratch"]
    shim = _assemble_at(
        shim_vaddr,
        shim_paddr,
        offsets,
        kernel_entry,
        boot_mode_target,
        hcall_virt,
        hcall_phys,
        frames,
    )
    if len(shim.code) != code_size:
        raise Refused(
            f"internal: shim size changed with its layout ({code_size} -> {len(shim.code)})"
        )
    pv_entry = shim_vaddr + shim.labels["pv_entry"]
    pvh_entry = shim_paddr + shim.labels["pvh_entry"]
    meta = _meta(
        image,
        handoff,
        options,
        original,
        kernel_entry,
        shim_vaddr,
        shim_paddr,
        filesz,
        memsz,
        code_size,
        pv_entry,
        pvh_entry,
    )
    notes = (
        _copied_notes(image)
        + _added_notes(image, hcall_virt, own_hcall)
        + _entry_notes(image, pv_entry, pvh_entry)
        + [meta]
    )
    plan = Plan(
        handoff=handoff,
        image=image,
        delta=delta,
        kernel_entry=kernel_entry,
        boot_mode_symbol=boot_mode,
        hypercall_page_virt=hcall_virt,
        hypercall_page_own=own_hcall,
        shim_vaddr=shim_vaddr,
        shim_paddr=shim_paddr,
        offsets=offsets,
        filesz=filesz,
        memsz=memsz,
        shim=shim,
        tables=tables,
        notes=notes,
        options=options,
        warnings=warnings,
    )
    _check_tables(plan)
    return plan


def _assemble_at(
    vaddr: int,
    paddr: int,
    offsets: dict[str, int],
    kernel_entry: int,
    boot_mode: int,
    hcall_virt: int,
    hcall_phys: int,
    frames: int,
) -> Shim:
    layout = _layout_values(
        offsets, vaddr, paddr, kernel_entry, boot_mode, hcall_virt, hcall_phys, frames
    )
    return assemble(layout)


def _meta(
    image: Image,
    handoff: str,
    options: dict[str, Any],
    original: dict[str, Any] | None,
    kernel_entry: int,
    vaddr: int,
    paddr: int,
    filesz: int,
    memsz: int,
    code_size: int,
    pv_entry: int,
    pvh_entry: int,
) -> NoteEntry:
    facts = original or original_facts(image)
    phys32 = next(
        (
            int(n.value)
            for n in image.segment_xen_notes + image.section_xen_notes
            if n.type == XenNote.PHYS32_ENTRY and isinstance(n.value, int)
        ),
        0,
    )
    meta = ShimMeta(
        tool_version=__version__,
        handoff=handoff,
        original_size=facts["size"],
        original_sha256=facts["sha256"],
        original_e_entry=facts["e_entry"],
        original_e_phoff=facts["e_phoff"],
        original_e_phnum=facts["e_phnum"],
        original_pv_entry=kernel_entry,
        original_phys32_entry=phys32,
        shim_vaddr=vaddr,
        shim_paddr=paddr,
        shim_filesz=filesz,
        shim_memsz=memsz,
        shim_code_size=code_size,
        pv_entry=pv_entry,
        pvh_entry=pvh_entry,
        options=options,
    )
    return NoteEntry(SHIM_META_OWNER, SHIM_META_NOTE_TYPE, meta.build(), "metadata", "shimgen")


def original_facts(image: Image) -> dict[str, Any]:
    """What the metadata records to rebuild the input (see structs/shim_meta.py)."""
    import hashlib

    from .patch import ehdr_fields

    header = ehdr_fields(image.data)
    return {
        "size": len(image.data),
        "sha256": hashlib.sha256(image.data).digest(),
        "e_entry": header["e_entry"],
        "e_phoff": header["e_phoff"],
        "e_phnum": header["e_phnum"],
    }


def _check_tables(plan: Plan) -> None:
    """The mode switch runs at physical addresses, the rest at virtual ones: verify."""
    read = pt.reader_for(plan.tables)
    probes = [
        (
            plan.shim_paddr + plan.shim.labels["pvh_entry"],
            plan.shim_paddr + plan.shim.labels["pvh_entry"],
            "PVH entry (identity)",
        ),
        (
            plan.shim_paddr + plan.shim.labels["pvh_long_entry"],
            plan.shim_paddr + plan.shim.labels["pvh_long_entry"],
            "64-bit entry (identity)",
        ),
        (plan.virt("stack_top") - 8, plan.phys("stack_top") - 8, "shim stack"),
        (plan.kernel_entry, _virt_to_phys(plan.image, plan.kernel_entry, "entry"), "kernel entry"),
    ]
    for vaddr, expected, what in probes:
        got = pt.translate(read, plan.tables.cr3, vaddr)
        if got != expected:
            raise Refused(
                f"page tables map the {what} {vaddr:#x} to {got}, not {expected:#x}: "
                "a segment's virtual range collides with the identity map"
            )
