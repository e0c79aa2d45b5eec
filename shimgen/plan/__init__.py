"""Plan a patch: which handoff, where the shim goes, what it reserves, which notes it
writes.

The shim segment follows the image, virtually and physically, with the image's own
translation (p_paddr = p_vaddr - (VIRT_BASE - PADDR_OFFSET)) so a PV loader maps it
where it was linked and a PVH loader puts it where its page tables say. Layout of
the segment, from its start:

    code        the assembled shim
    notes       the exact bytes of the new PT_NOTE (4-aligned)
    tables      prebuilt page tables (page aligned; none for pvh-passthrough)
                                                               <- end of p_filesz
    reserved    one page each, per handoff (HandoffSpec.reserved):
                start-info: start_info (the synthesized start_info_t), scratch
                (hypercall arguments, XENMEM_memory_map buffer), shared_info (the
                frame Xen's shared_info is mapped into);
                hvm-start-info: hvm_info (the hvm_start_info v1 the PV path
                builds, with its module entry, memory map and command line),
                scratch;
                pvh-passthrough: scratch (saved esp, the fallback mode word)
    hypercall   the shim's own hypercall page, only for a PV handoff whose kernel
                has none
    stack       the shim's stack, rsp starts at its top          <- end of p_memsz

Handoffs (README.md, samples/README.md): ``start-info`` enters a kernel's 64-bit PV
entry; ``hvm-start-info`` enters a 64-bit entry that takes a struct hvm_start_info
(``entry64``); ``pvh-passthrough`` keeps a PVH-only kernel's own 32-bit entry and
gives it no PV entry, because a PV guest starts in long mode at CPL 3 and can never
reach 32-bit protected mode. ``auto`` picks pvh-passthrough for a PVH-only kernel,
hvm-start-info when ``entry64`` is given, start-info otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .. import __version__
from ..errors import Refused
from ..read.check import Verdicts, evaluate
from ..read.container import normalize
from ..read.image import MAX_NOTES_PER_CONTAINER, Image
from ..shim import pagetables as pt
from ..shim.assemble import Shim, assemble
from ..structs import XEN_NOTE_NAME, Payload, XenNote
from ..structs import xen_abi as abi
from ..structs.elf import Machine
from ..structs.shim_meta import (
    DIGEST_OPTION,
    NO_DIGEST,
    SHIM_META_NOTE_TYPE,
    SHIM_META_OWNER,
    ShimMeta,
)

PAGE = abi.PAGE_SIZE
IDENTITY_MAP_SIZE = 1 << 32  # every address a PVH loader can hand in ebx or a paddr field
SCRATCH_E820_OFFSET = 0x100  # hypercall argument structs use the first 256 bytes
# start-info: each hypercall argument struct has its own place in the scratch page,
# so the fields that must be 0 stay as the loader zeroed them (40_start_info.S).
# They start after the fallback boot-mode word at offset 0.
SCRATCH_STRUCTS_OFFSET = 0x10
SCRATCH_STRUCTS = (
    ("hvm_param", abi.XEN_HVM_PARAM),
    ("add_to_physmap", abi.XEN_ADD_TO_PHYSMAP),
    ("memory_map", abi.XEN_MEMORY_MAP),
)
# pvh-passthrough: the scratch page holds the fallback mode word at 0 (as for the
# other handoffs) and the loader's esp right after it.
SAVED_ESP_OFFSET = 8
NOTE_SEGMENT_ALIGN = 4  # Xen pads notes to 4; a PT_NOTE aligned more makes QEMU misread
PV_NOTES_DEFAULTS = {XenNote.LOADER: "generic", XenNote.XEN_VERSION: "xen-3.0"}
SHIM_REPLACED = (XenNote.ENTRY, XenNote.PHYS32_ENTRY)
MASK64 = (1 << 64) - 1
MAX_MAPPED_CHUNKS = 1 << 16  # 2 MiB chunks the shim's page tables may cover: 128 GiB
AUTO = "auto"

PV_IMPOSSIBLE = (
    "a PV guest starts in long mode at CPL 3 and can never switch to the 32-bit "
    "protected mode a PHYS32_ENTRY expects"
)
PV_NEEDS = (
    "to boot it as PV too, the kernel needs a 64-bit entry that takes a struct "
    "hvm_start_info: patch with --handoff hvm-start-info --entry64 SYMBOL|ADDR"
)


@dataclass(frozen=True)
class HandoffSpec:
    """What a handoff's shim is made of (the templates: assemble.TEMPLATE_SETS)."""

    name: str
    pv: bool  # has a PV entry: ENTRY note, the PV notes a loader needs
    page_tables: bool  # its PVH path enters long mode with prebuilt tables
    reserved: tuple[str, ...]  # reserved pages after the tables, in order
    stack_pages: int
    replaces: tuple[XenNote, ...]  # input notes the shim's own notes supersede


HANDOFF_SPECS = {
    "start-info": HandoffSpec(
        "start-info", True, True, ("start_info", "scratch", "shared_info"), 4, SHIM_REPLACED
    ),
    "hvm-start-info": HandoffSpec(
        "hvm-start-info", True, True, ("hvm_info", "scratch"), 4, SHIM_REPLACED
    ),
    "pvh-passthrough": HandoffSpec(
        "pvh-passthrough", False, False, ("scratch",), 1, (XenNote.PHYS32_ENTRY,)
    ),
}
HANDOFFS = tuple(HANDOFF_SPECS)


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
    image: Image = field(repr=False)  # the ELF64 image patched (converted if it was not)
    delta: int  # p_vaddr - p_paddr of the image (VIRT_BASE - PADDR_OFFSET)
    kernel_entry: int  # what the shim jumps to (virtual; physical for pvh-passthrough)
    boot_mode_symbol: int | None
    hypercall_page_virt: int | None
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
    single_entry: bool = False
    dropped_note_segments: tuple[int, ...] = ()  # input PT_NOTEs left out of the output
    # An already universal kernel's own PHYS32_ENTRY, kept (explicit handoff without
    # --replace-pvh-entry): PVH boots enter the kernel directly, PV ones the shim.
    kept_pvh_entry: int | None = None

    @property
    def pv_entry(self) -> int | None:
        """ENTRY (virtual); None when the handoff has no PV entry."""
        if self.single_entry:
            return self.shim_vaddr + self.shim.labels["single_entry"]
        if "pv_entry" not in self.shim.labels:
            return None
        return self.shim_vaddr + self.shim.labels["pv_entry"]

    @property
    def pvh_entry(self) -> int:
        """PHYS32_ENTRY (physical)."""
        if self.kept_pvh_entry is not None:
            return self.kept_pvh_entry
        label = "single_entry" if self.single_entry else "pvh_entry"
        return self.shim_paddr + self.shim.labels[label]

    @property
    def e_entry(self) -> int:
        """The PV entry; the input's own e_entry when there is none (linux-loader
        wants e_entry >= 1 MiB even for PVH, and the input's already is)."""
        return self.image.entry if self.pv_entry is None else self.pv_entry

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
            "e_entry": self.e_entry,
            "single_entry": self.single_entry,
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
            "dropped_note_segments": list(self.dropped_note_segments),
            "kept_pvh_entry": self.kept_pvh_entry,
            "options": self.options,
            "warnings": self.warnings,
        }


# --- the image's own facts ------------------------------------------------------------


def _require_x86_64(image: Image, handoff: str) -> None:
    """x86-64 code in ELF64 (converted from ELF32 by container.py); 32-bit x86
    (EM_386) only for pvh-passthrough, whose shim runs in the PVH entry's 32-bit
    mode and hands over to the kernel's own 32-bit entry."""
    if image.elf_class == 64 and image.machine == Machine.X86_64:
        return
    if image.elf_class == 64 and image.machine == Machine.X86:
        if handoff == "pvh-passthrough":
            return
        raise Refused(
            f"{image.path}: a 32-bit x86 kernel (e_machine EM_386) has no 64-bit entry for "
            f"the {handoff} handoff; a PVH kernel keeps its own 32-bit entry with "
            "--handoff pvh-passthrough (PVH only). If it holds 64-bit code (as Mini-OS's "
            "PVH build does), convert it first: objcopy -I elf32-i386 -O elf64-x86-64 "
            f"{image.path} {image.path}.elf64"
        )
    raise Refused(
        f"{image.path}: shimgen patches x86 kernels (EM_X86_64, or EM_386 with "
        f"--handoff pvh-passthrough) in an ELF64 or ELF32 container; this is "
        f"ELF{image.elf_class} {image.machine_name}"
    )


def _require_mappable_segments(image: Image) -> None:
    """Segments the shim's page tables can map: inside the 64-bit address space, and
    p_vaddr and p_paddr at the same offset in their page."""
    for segment in image.loadable_segments:
        where = f"{image.path}: segment {segment.index}"
        if max(segment.vaddr, segment.paddr) + segment.memsz > MASK64 + 1:
            raise Refused(f"{where} runs past the end of the 64-bit address space")
        if (segment.vaddr - segment.paddr) % PAGE:
            raise Refused(
                f"{where}: p_vaddr {segment.vaddr:#x} and p_paddr {segment.paddr:#x} differ "
                "inside a page: no page table maps one to the other"
            )


def _require_note_room(image: Image, added: int) -> None:
    """libelf stops after 65536 notes over all PT_NOTEs: the shim's, last, must count."""
    before = sum(1 for note in image.notes if note.source.startswith("PT_NOTE["))
    if image.notes_cut or before + added > MAX_NOTES_PER_CONTAINER:
        raise Refused(
            f"{image.path}: its PT_NOTE segments hold too many notes: Xen stops reading "
            f"after {MAX_NOTES_PER_CONTAINER} and would never see the shim's"
        )


def _require_bounded_tables(image: Image, regions: list[pt.Region]) -> None:
    """Page tables for absurd segments (terabytes of p_memsz, thousands of copies)
    would take gigabytes and minutes to build: refuse them first."""
    chunks = sum(region.size // abi.LARGE_PAGE_SIZE + 2 for region in regions)
    if chunks > MAX_MAPPED_CHUNKS:
        raise Refused(
            f"{image.path}: its loadable segments span more than "
            f"{MAX_MAPPED_CHUNKS * abi.LARGE_PAGE_SIZE >> 30} GiB: too much for the shim to map"
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


def _translation(image: Image, verdicts: Verdicts) -> int:
    """VIRT_BASE - PADDR_OFFSET as libelf computes them for PV."""
    details = verdicts.pv.details
    if "virt_base" in details:
        return (details["virt_base"] - details["elf_paddr_offset"]) & MASK64
    loads = image.loadable_segments
    return (loads[0].vaddr - loads[0].paddr) & MASK64 if loads else 0


def _pvh_only(image: Image, verdicts: Verdicts) -> int | None:
    """The PHYS32_ENTRY of a kernel that boots as PVH and has no PV entry, else None."""
    if verdicts.pv.ok or any(n.type == XenNote.ENTRY for n in image.xen_notes):
        return None
    if not verdicts.pvh.ok:
        return None
    return verdicts.pvh.details.get("phys_entry")


def _symbol_or_address(image: Image, value: str, option: str) -> int:
    if value in image.symbols:
        return image.symbols[value]
    try:
        return int(value, 0)
    except ValueError:
        raise Refused(f"{option} {value}: no such symbol and not an address") from None


def _require_executable(image: Image, vaddr: int, what: str, hint: str) -> int:
    segment = _segment_of(image, vaddr)
    if segment is None or not segment.flags & 1:
        raise Refused(
            f"{image.path}: {what} {vaddr:#x} is not in an executable loadable segment; {hint}"
        )
    return vaddr


def _kernel_entry(image: Image, entry: str | None, verdicts: Verdicts) -> int:
    """start-info: the kernel's 64-bit PV entry."""
    if entry is not None:
        value = _symbol_or_address(image, entry, "--entry")
    else:
        phys32 = _pvh_only(image, verdicts)
        if phys32 is not None:
            raise Refused(
                f"{image.path}: a PVH-only kernel (32-bit PHYS32_ENTRY {phys32:#x}, no PV "
                f"entry) cannot be made to boot as PV: {PV_IMPOSSIBLE}. Patch it with "
                f"--handoff pvh-passthrough (PVH only); {PV_NEEDS}"
            )
        value = verdicts.pv.details.get("virt_entry")
        note = next((n for n in image.xen_notes if n.type == XenNote.ENTRY), None)
        if note is not None and isinstance(note.value, int):
            value = note.value
        if value is None:
            value = image.entry
    return _require_executable(
        image, value, "PV entry", "give the kernel's 64-bit PV entry with --entry SYMBOL|ADDR"
    )


def _entry64(image: Image, entry64: str | None) -> int:
    """hvm-start-info: the kernel's 64-bit entry that takes a struct hvm_start_info."""
    if entry64 is None:
        raise Refused(
            f"{image.path}: handoff hvm-start-info needs the kernel's 64-bit entry that "
            "takes a struct hvm_start_info: give it with --entry64 SYMBOL|ADDR"
        )
    value = _symbol_or_address(image, entry64, "--entry64")
    return _require_executable(
        image, value, "--entry64", "it must be the kernel's 64-bit code (a virtual address)"
    )


def _passthrough_entry(image: Image, verdicts: Verdicts) -> int:
    """pvh-passthrough: the kernel's own PHYS32_ENTRY, as Xen reads it (last one wins)."""
    verdict = verdicts.pvh
    phys = verdict.details.get("phys_entry")
    if phys is None or not verdict.ok:
        reasons = "; ".join(verdict.reasons) or "no PHYS32_ENTRY note"
        raise Refused(
            f"{image.path}: handoff pvh-passthrough keeps the kernel's own PVH entry, and "
            f"this image has none that boots ({reasons})"
        )
    return phys


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


def already_universal(image: Image) -> bool:
    """The kernel has its own PV entry and its own PVH entry, in the notes Xen reads:
    like Linux's vmlinux, it boots both ways without a shim."""
    present = {note.type for note in image.xen_notes}
    return XenNote.ENTRY in present and XenNote.PHYS32_ENTRY in present


def _refuse_universal(image: Image, verdicts: Verdicts) -> None:
    failing = "; ".join(
        f"note that Xen would refuse it as {v.mode.upper()}: {v.reasons[0]}"
        for v in (verdicts.pv, verdicts.pvh)
        if not v.ok and v.reasons
    )
    raise Refused(
        f"{image.path}: already universal: ENTRY and PHYS32_ENTRY present (it boots as PV "
        "and as PVH without a shim)"
        + (f"; {failing}" if failing else "")
        + ". To add the shim anyway give --handoff (the kernel's own PVH entry is kept) "
        "and --replace-pvh-entry to point PHYS32_ENTRY at the shim too"
    )


def resolve_handoff(
    image: Image,
    handoff: str,
    entry: str | None,
    entry64: str | None,
    verdicts: Verdicts | None = None,
) -> str:
    """The handoff to use: as asked, or for ``auto`` the one the image calls for
    (refused for an already universal kernel: it needs no shim)."""
    if handoff == AUTO:
        verdicts = verdicts or evaluate(image)
        if already_universal(image):
            _refuse_universal(image, verdicts)
        if entry64 is not None:
            return "hvm-start-info"
        if entry is None and image.loadable_segments and _pvh_only(image, verdicts) is not None:
            return "pvh-passthrough"
        return "start-info"
    if handoff not in HANDOFF_SPECS:
        raise Refused(f"unknown handoff {handoff} (available: {', '.join(HANDOFFS)}, auto)")
    return handoff


def _kept_pvh_entry(
    image: Image, spec: HandoffSpec, verdicts: Verdicts, replace_pvh_entry: bool, single: bool
) -> int | None:
    """An already universal kernel's own PHYS32_ENTRY (as Xen reads it: the last), when
    the handoff has a PVH entry of its own to offer instead and the user did not ask
    for it; None otherwise. pvh-passthrough always enters the kernel's own PVH entry."""
    if replace_pvh_entry or not spec.pv or not already_universal(image):
        return None
    if single:
        raise Refused(
            f"{image.path}: --single-entry makes one shim entry serve as ENTRY and "
            "PHYS32_ENTRY, replacing the kernel's own PVH entry: add --replace-pvh-entry"
        )
    return verdicts.pvh.details.get("phys_entry")


def _check_options(handoff: str, entry: str | None, entry64: str | None, single: bool) -> None:
    if entry is not None and handoff != "start-info":
        raise Refused(
            f"--entry names a start_info PV entry: handoff {handoff} does not take it"
            + (" (use --entry64)" if handoff == "hvm-start-info" else "")
        )
    if entry64 is not None and handoff != "hvm-start-info":
        raise Refused(
            "--entry64 names an entry that takes a struct hvm_start_info: use it with "
            "--handoff hvm-start-info"
        )
    if single and not HANDOFF_SPECS[handoff].pv:
        raise Refused(
            f"--single-entry: handoff {handoff} has no PV entry to share the PVH one with "
            f"({PV_IMPOSSIBLE})"
        )


def _pv_virt_base(image: Image, handoff: str, delta: int, verdicts: Verdicts) -> int:
    """hvm-start-info: what the PV path subtracts from a virtual address to get the
    pseudo-physical one. Xen's initial mapping puts pfn N at VIRT_BASE + N pages, so
    pseudo-physical = virtual - VIRT_BASE; that equals p_paddr only when PADDR_OFFSET
    is 0, and the kernel is promised one address space for both modes."""
    if handoff != "hvm-start-info":
        return 0
    details = verdicts.pv.details
    if any(n.type == XenNote.VIRT_BASE for n in image.xen_notes) and "virt_base" in details:
        if details["elf_paddr_offset"]:
            raise Refused(
                f"{image.path}: PADDR_OFFSET {details['elf_paddr_offset']:#x} is not 0: under "
                "PV its pseudo-physical addresses would differ from its p_paddr, and "
                "hvm-start-info gives the kernel one physical address space in both modes"
            )
        return details["virt_base"]
    return delta  # VIRT_BASE = delta is added as a note (_translation_notes)


# --- notes ----------------------------------------------------------------------------


def _number(value: int, width: int = 8) -> bytes:
    return (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")


def _superseded_note_segments(image: Image, replaces: tuple[XenNote, ...]) -> tuple[int, ...]:
    """Input PT_NOTEs the output's program header table leaves out, their Xen notes
    moving into the shim's PT_NOTE: those holding a PHYS32_ENTRY the shim replaces,
    so that the output has exactly one (Xen, QEMU 7.2 and linux-loader all take the
    last one, measured; the kernel's own, left in place, is what a reader stopping
    at the first would take, bypassing the shim), and those holding Xen notes in a
    PT_NOTE aligned beyond 4 (QEMU pads notes by p_align and misreads them: its
    include/hw/elf_ops.h; read/check.py warns of the same)."""
    types: dict[str, set[int]] = {}  # source -> Xen note types found there
    for note in image.segment_xen_notes:
        types.setdefault(note.source, set()).add(note.type)
    dropped = []
    for segment in image.note_segments():
        found = types.get(f"PT_NOTE[{segment.index}]")
        if segment.offset == 0 or not found:
            continue  # libelf skips p_offset 0; no Xen note, nothing to confuse
        replaced = XenNote.PHYS32_ENTRY in replaces and XenNote.PHYS32_ENTRY in found
        if replaced or segment.align > NOTE_SEGMENT_ALIGN:
            dropped.append(segment.index)
    return tuple(dropped)


def _copied_notes(
    image: Image, dropped: tuple[int, ...] = (), replaces: tuple[XenNote, ...] = SHIM_REPLACED
) -> list[NoteEntry]:
    """Xen notes that must move into the new PT_NOTE.

    libelf reads sections only when no PT_NOTE holds a Xen note; ours will, so
    everything it would have read from elsewhere is copied, and so is what the
    PT_NOTEs left out of the output held. Legacy values are converted:
    HYPERCALL_PAGE is a page number there, ELF_PADDR_OFFSET defaults to VIRT_BASE
    there and to 0 with notes.
    """
    if image.note_origin is None:
        return []
    if image.note_origin == "segments":
        sources = {f"PT_NOTE[{index}]" for index in dropped}
        notes = [n for n in image.segment_xen_notes if n.source in sources]
    else:
        notes = image.xen_notes
    copied = []
    legacy = image.note_origin == "legacy"
    for note in notes:
        if note.type in replaces or not note.known:
            continue
        kind = XenNote(note.type)
        if legacy:
            if kind is XenNote.HYPERCALL_PAGE:
                continue  # re-added as an address by _added_notes
            if kind.payload is Payload.NUMBER:
                desc = _number(int(note.value))
            else:
                desc = str(note.value).encode("latin-1") + b"\0"
        elif kind.payload in (Payload.STRING, Payload.FEATURES):
            # What libelf reads: it runs past a desc that holds no NUL.
            desc = str(note.value).encode("latin-1") + b"\0"
        else:
            desc = note.raw
        copied.append(NoteEntry(XEN_NOTE_NAME, note.type, desc, "copied", kind.name))
    if legacy and not any(n.type == XenNote.PADDR_OFFSET for n in image.xen_notes):
        desc = _number(_legacy_virt_base(image))
        copied.append(NoteEntry(XEN_NOTE_NAME, XenNote.PADDR_OFFSET, desc, "added", "PADDR_OFFSET"))
    return copied


def _added_notes(image: Image, hypercall_virt: int, own_page: bool) -> list[NoteEntry]:
    """The notes a PV loader needs and the input lacks."""
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


def _translation_notes(image: Image, handoff: str, delta: int) -> list[NoteEntry]:
    """hvm-start-info on an image linked p_vaddr != p_paddr without a VIRT_BASE note:
    Linux's convention (VIRT_BASE = p_vaddr - p_paddr, PADDR_OFFSET 0) makes Xen's PV
    loader map it at p_vaddr and keeps pseudo-physical = p_paddr."""
    present = {n.type for n in image.xen_notes}
    if handoff != "hvm-start-info" or not delta or XenNote.VIRT_BASE in present:
        return []
    return [
        NoteEntry(XEN_NOTE_NAME, XenNote.VIRT_BASE, _number(delta), "added", "VIRT_BASE"),
        NoteEntry(XEN_NOTE_NAME, XenNote.PADDR_OFFSET, _number(0), "added", "PADDR_OFFSET"),
    ]


def _entry_notes(
    image: Image, pv_entry: int | None, pvh_entry: int, replaces: tuple[XenNote, ...]
) -> list[NoteEntry]:
    present = {n.type for n in image.xen_notes}
    wanted = [(XenNote.PHYS32_ENTRY, _number(pvh_entry, 4))]
    if pv_entry is not None:
        wanted.insert(0, (XenNote.ENTRY, _number(pv_entry)))

    def action(kind: XenNote) -> str:
        if kind not in present:
            return "added"
        # Not replaced: the kernel's own PVH entry, repeated in the last PT_NOTE
        # (linux-loader reads only that one).
        return "replaced" if kind in replaces else "kept"

    return [NoteEntry(XEN_NOTE_NAME, kind, desc, action(kind), kind.name) for kind, desc in wanted]


# --- layout ---------------------------------------------------------------------------


@dataclass
class _Draft:
    """What the planner has decided so far (the shim is assembled from it twice: once
    at address 0 for its size, once in place)."""

    image: Image
    spec: HandoffSpec
    single_entry: bool
    kernel_entry: int
    boot_mode: int | None  # the kernel's shimgen_boot_mode (virtual)
    kernel_hcall: int | None  # the kernel's HYPERCALL_PAGE (virtual)
    pv_virt_base: int
    shim_vaddr: int = 0
    shim_paddr: int = 0
    offsets: dict[str, int] = field(default_factory=dict)
    frames: int = 0

    @property
    def own_hcall(self) -> bool:
        return self.spec.pv and self.kernel_hcall is None

    @property
    def reserved_names(self) -> list[str]:
        return [*self.spec.reserved, *(["hypercall_page"] if self.own_hcall else [])]

    def virt(self, name: str) -> int:
        return (self.shim_vaddr + self.offsets[name]) & MASK64

    def phys(self, name: str) -> int:
        return self.shim_paddr + self.offsets[name]

    def hcall_virt(self) -> int:
        if self.own_hcall:
            return self.virt("hypercall_page")
        return self.kernel_hcall or 0

    def hcall_phys(self) -> int:
        if self.own_hcall:
            return self.phys("hypercall_page")
        if self.kernel_hcall is None:
            return 0
        return _virt_to_phys(self.image, self.kernel_hcall, "HYPERCALL_PAGE")

    def boot_mode_virt(self) -> int:
        return self.boot_mode if self.boot_mode is not None else self.virt("scratch")

    def boot_mode_phys(self) -> int:
        if self.boot_mode is None:
            return self.phys("scratch")
        return _virt_to_phys(self.image, self.boot_mode, abi.BOOT_MODE_SYMBOL)


def _reserved_layout(draft: _Draft, tables_end: int) -> tuple[dict[str, int], int]:
    offsets: dict[str, int] = {}
    cursor = tables_end
    for name in draft.reserved_names:
        offsets[name] = cursor
        cursor += PAGE
    offsets["stack"] = cursor
    cursor += draft.spec.stack_pages * PAGE
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


def _layout_values(draft: _Draft) -> dict[str, int]:
    """Every address a template of any handoff may ask for (assemble.render takes
    what its set needs)."""
    stub = abi.HYPERCALL_STUB_SIZE
    hcall = draft.hcall_virt()
    values = {
        "SHIM_VIRT": draft.shim_vaddr,
        "SHIM_PHYS": draft.shim_paddr,
        "KERNEL_ENTRY": draft.kernel_entry,
        "BOOT_MODE_VIRT": draft.boot_mode_virt(),
        "BOOT_MODE_PHYS": draft.boot_mode_phys(),
        "STACK_TOP_VIRT": draft.virt("stack_top"),
        "STACK_TOP_PHYS": draft.phys("stack_top"),
        "SCRATCH_VIRT": draft.virt("scratch"),
        "SAVED_ESP_PHYS": draft.phys("scratch") + SAVED_ESP_OFFSET,
        "PML4_PHYS": draft.phys("tables"),
        "PML4_VIRT": draft.virt("tables"),
        "NR_PT_FRAMES": draft.frames,
        "HCALL_PAGE_PHYS": draft.hcall_phys(),
        "HCALL_CONSOLE_IO": hcall + abi.Hypercall.CONSOLE_IO * stub,
        "HCALL_SCHED_OP": hcall + abi.Hypercall.SCHED_OP * stub,
        "HCALL_MEMORY_OP": hcall + abi.Hypercall.MEMORY_OP * stub,
        "HCALL_HVM_OP": hcall + abi.Hypercall.HVM_OP * stub,
        "E820_CAPACITY": (PAGE - SCRATCH_E820_OFFSET) // abi.E820_ENTRY_STRIDE,
        "IDENTITY_MAP_END": IDENTITY_MAP_SIZE,
        "PV_VIRT_BASE": draft.pv_virt_base,
    }
    if "start_info" in draft.offsets:
        values["START_INFO_VIRT"] = draft.virt("start_info")
        values |= _scratch_from_start_info(draft.offsets["scratch"] - draft.offsets["start_info"])
    if "shared_info" in draft.offsets:
        values["SHARED_INFO_PHYS"] = draft.phys("shared_info")
        values["SHARED_INFO_PFN"] = draft.phys("shared_info") >> abi.PAGE_SHIFT
    if "hvm_info" in draft.offsets:
        values["HVM_INFO_VIRT"] = draft.virt("hvm_info")
        values["HVM_INFO_PHYS"] = draft.phys("hvm_info")
    return values


def scratch_layout() -> dict[str, int]:
    """Offsets in the scratch page of the start-info shim's hypercall structs."""
    offsets, cursor = {}, SCRATCH_STRUCTS_OFFSET
    for name, record in SCRATCH_STRUCTS:
        offsets[name] = cursor
        cursor += _round_up(record.size, 8)
    if cursor > SCRATCH_E820_OFFSET:
        raise AssertionError("hypercall structs overlap the E820 buffer")
    offsets["e820"] = SCRATCH_E820_OFFSET
    return offsets


def _scratch_from_start_info(scratch: int) -> dict[str, int]:
    """Displacements from the start_info page (r13 in 40_start_info.S) into scratch."""
    places = scratch_layout()
    return {
        "SI_TO_HVM_PARAM": scratch + places["hvm_param"],
        "SI_TO_HVM_PARAM_VALUE": scratch
        + places["hvm_param"]
        + abi.XEN_HVM_PARAM.offset_of("value"),
        "SI_TO_ADD_TO_PHYSMAP": scratch + places["add_to_physmap"],
        "SI_TO_MEMORY_MAP": scratch + places["memory_map"],
        "SI_TO_MEMORY_MAP_NR": scratch
        + places["memory_map"]
        + abi.XEN_MEMORY_MAP.offset_of("nr_entries"),
        "SI_TO_E820_BUF": scratch + places["e820"],
    }


def _assemble(draft: _Draft) -> Shim:
    return assemble(_layout_values(draft), draft.spec.name, draft.single_entry)


def _options(
    handoff: str,
    entry: str | None,
    entry64: str | None,
    single_entry: bool,
    input_forms: list[str],
    input_offset: int,
    digest: bool = True,
) -> dict[str, Any]:
    """Recorded in the metadata note: enough to plan the same patch again. Keys appear
    only when they differ from the default, so a default patch stays byte-identical."""
    options: dict[str, Any] = {"handoff": handoff, "entry": entry}
    if entry64 is not None:
        options["entry64"] = entry64
    if single_entry:
        options["single_entry"] = True
    if input_forms:
        options["input"] = ",".join(input_forms)
    if input_offset:
        options["input_offset"] = input_offset
    if not digest:
        options[DIGEST_OPTION] = NO_DIGEST
    return options


def plan_arguments(options: dict[str, Any], handoff: str = "start-info") -> dict[str, Any]:
    """make_plan keyword arguments from a metadata note's options (re-planning)."""
    return {
        "handoff": options.get("handoff", handoff),
        "entry": options.get("entry"),
        "entry64": options.get("entry64"),
        "single_entry": bool(options.get("single_entry", False)),
        "gzip_input": "gzip" in str(options.get("input", "")).split(","),
        "replace_pvh_entry": bool(options.get("replace_pvh_entry", False)),
        "digest": options.get(DIGEST_OPTION) != NO_DIGEST,
    }


def _shim_address(image: Image, delta: int) -> tuple[int, int]:
    loads = image.loadable_segments
    vend = max((s.vaddr + s.memsz) & MASK64 for s in loads)
    pend = max(s.paddr + s.memsz for s in loads)
    shim_vaddr = _round_up(max(vend, (pend + delta) & MASK64), PAGE)
    shim_paddr = (shim_vaddr - delta) & MASK64
    if shim_paddr >= IDENTITY_MAP_SIZE:
        raise Refused(f"shim would sit at physical {shim_paddr:#x}, above 4 GiB: no PVH entry")
    return shim_vaddr, shim_paddr


def _require_single_entry(image: Image, draft: _Draft, delta: int) -> None:
    if delta:
        raise Refused(
            f"{image.path}: --single-entry needs an image linked virtual == physical, and "
            f"this one has VIRT_BASE - PADDR_OFFSET = {delta:#x}: the shim would sit at "
            f"virtual {draft.shim_vaddr:#x} for PV and at physical {draft.shim_paddr:#x} for "
            "PVH, and one entry address cannot be both. Leave out --single-entry for two "
            "entries"
        )


def _boot_mode_symbol(image: Image, warnings: list[str]) -> int | None:
    boot_mode = image.symbols.get(abi.BOOT_MODE_SYMBOL)
    if boot_mode is not None and _segment_of(image, boot_mode) is None:
        warnings.append(f"{abi.BOOT_MODE_SYMBOL} at {boot_mode:#x} is not loaded: not written")
        return None
    return boot_mode


def _note_warnings(
    image: Image, dropped: tuple[int, ...], handoff: str, kept_pvh: int | None
) -> list[str]:
    warnings = []
    if kept_pvh is not None:
        warnings.append(
            f"the kernel's own PVH entry {kept_pvh:#x} is kept (it already boots both ways): "
            "PVH boots bypass the shim and the mode is not recorded; --replace-pvh-entry "
            "points PHYS32_ENTRY at the shim"
        )
    for index in dropped:
        warnings.append(
            f"PT_NOTE[{index}] of the input is left out of the output's program headers "
            "(it holds a PHYS32_ENTRY the shim replaces, or Xen notes aligned beyond 4); "
            "its Xen notes move into the shim's PT_NOTE"
        )
    phys32_replaced = kept_pvh is None and handoff != "pvh-passthrough"
    if (
        phys32_replaced
        and not dropped
        and any(n.type == XenNote.PHYS32_ENTRY for n in image.segment_xen_notes)
    ):
        warnings.append("the input already has a PHYS32_ENTRY note; the shim's (last) one wins")
    if handoff == "pvh-passthrough":
        # A 32-bit (EM_386) kernel has no 64-bit entry to offer hvm-start-info.
        needs = PV_NEEDS if image.machine == Machine.X86_64 else "it is 32-bit code"
        warnings.append(f"PVH only, no PV entry: {PV_IMPOSSIBLE}; {needs}")
    return warnings


def _layout_shim(draft: _Draft, code_size: int, note_size: int) -> tuple[int, int]:
    """Offsets of notes, tables and reserved pages; (filesz, memsz). Sets draft.frames
    and draft.offsets."""
    offsets = {"code": 0, "notes": _round_up(code_size, 4)}
    offsets["tables"] = _round_up(offsets["notes"] + note_size, PAGE)
    image = draft.image
    frames = 1 if draft.spec.page_tables else 0
    if draft.spec.page_tables:
        _require_bounded_tables(image, _regions(image, draft.shim_vaddr, draft.shim_paddr, 0))
    while True:
        reserved, memsz = _reserved_layout(draft, offsets["tables"] + frames * PAGE)
        if not draft.spec.page_tables:
            break
        needed = pt.count_frames(_regions(image, draft.shim_vaddr, draft.shim_paddr, memsz))
        if needed == frames:
            break
        frames = needed
    draft.offsets = offsets | reserved
    draft.frames = frames
    return offsets["tables"] + frames * PAGE, memsz


def _zero_draft(draft: _Draft) -> _Draft:
    """The same shim at address 0 with the tables at offset 0: assembled for its size.
    The templates encode every address at a fixed width; the one value whose width
    could vary, a displacement between two reserved pages (SI_TO_* in
    40_start_info.S), is the same here as in the final layout, so this is the final
    size."""
    reserved, _end = _reserved_layout(draft, 0)
    return replace(draft, shim_vaddr=0, shim_paddr=0, offsets={"tables": 0} | reserved)


def make_plan(
    image: Image,
    handoff: str = AUTO,
    entry: str | None = None,
    original: dict[str, Any] | None = None,
    *,
    entry64: str | None = None,
    single_entry: bool = False,
    gzip_input: bool = False,
    sha256: Callable[[], bytes] | None = None,
    replace_pvh_entry: bool = False,
    digest: bool = True,
) -> Plan:
    """Everything the patch writes, decided from the image and the options.

    An ELF32 container of x86-64 code is converted to ELF64 first (container.py);
    ``original`` (the input's size, sha256 and header fields) defaults to the facts
    of ``image`` as given. ``gzip_input`` records that the input was compressed when
    ``image`` is already the decompressed form (re-patching). ``sha256``, when given,
    returns the sha256 of ``image.data`` instead of the planner hashing it: it is called
    once, last, so that a caller hashing a large input in the background overlaps it
    with the planning. Without ``digest`` no sha256 is taken: the metadata records
    zeros and says so (options "digest": "none").
    """
    facts = original or original_facts(image, hashed=digest and sha256 is None)
    compressed = image.compressed or gzip_input
    converted = normalize(image)
    image = converted.image
    verdicts = evaluate(image)  # libelf's view, asked once (hostile images make it slow)
    handoff = resolve_handoff(image, handoff, entry, entry64, verdicts)
    spec = HANDOFF_SPECS[handoff]
    _check_options(handoff, entry, entry64, single_entry)
    _require_x86_64(image, handoff)
    if not image.loadable_segments:
        raise Refused(f"{image.path}: no loadable segment")
    _require_mappable_segments(image)
    delta = _translation(image, verdicts)
    if delta % PAGE:
        raise Refused(
            f"{image.path}: VIRT_BASE - PADDR_OFFSET is {delta:#x}, not page aligned: "
            "no page table maps the image"
        )
    kernel_entry = {
        "start-info": lambda: _kernel_entry(image, entry, verdicts),
        "hvm-start-info": lambda: _entry64(image, entry64),
        "pvh-passthrough": lambda: _passthrough_entry(image, verdicts),
    }[handoff]()
    kept_pvh = _kept_pvh_entry(image, spec, verdicts, replace_pvh_entry, single_entry)
    if kept_pvh is not None:
        spec = replace(spec, replaces=(XenNote.ENTRY,))
    warnings: list[str] = []
    dropped = _superseded_note_segments(image, spec.replaces)
    warnings += _note_warnings(image, dropped, handoff, kept_pvh)
    draft = _Draft(
        image=image,
        spec=spec,
        single_entry=single_entry,
        kernel_entry=kernel_entry,
        boot_mode=_boot_mode_symbol(image, warnings),
        kernel_hcall=_hypercall_page(image) if spec.pv else None,
        pv_virt_base=_pv_virt_base(image, handoff, delta, verdicts),
    )
    draft.shim_vaddr, draft.shim_paddr = _shim_address(image, delta)
    if single_entry:
        _require_single_entry(image, draft, delta)
    forms = (["gzip"] if compressed else []) + ([converted.form] if converted.form else [])
    options = _options(handoff, entry, entry64, single_entry, forms, converted.offset, digest)
    if replace_pvh_entry:
        options["replace_pvh_entry"] = True

    zero = _zero_draft(draft)
    zero_shim = _assemble(zero)
    code_size = len(zero_shim.code)
    stub_notes = _notes(
        zero, dropped, delta, 0, kept_pvh or 0, _meta_stub(facts, draft, options, zero_shim)
    )
    filesz, memsz = _layout_shim(draft, code_size, sum(len(n.encode()) for n in stub_notes))
    tables = (
        pt.build(_regions(image, draft.shim_vaddr, draft.shim_paddr, memsz), draft.phys("tables"))
        if spec.page_tables
        else pt.PageTables(base=draft.phys("tables"), data=b"")
    )
    shim = _assemble(draft)
    if len(shim.code) != code_size or shim.regions != zero_shim.regions:
        raise Refused(
            f"internal: shim size changed with its layout ({code_size} -> {len(shim.code)})"
        )
    plan = Plan(
        handoff=handoff,
        image=image,
        delta=delta,
        kernel_entry=kernel_entry,
        boot_mode_symbol=draft.boot_mode,
        hypercall_page_virt=draft.hcall_virt() if spec.pv else None,
        hypercall_page_own=draft.own_hcall,
        shim_vaddr=draft.shim_vaddr,
        shim_paddr=draft.shim_paddr,
        offsets=draft.offsets,
        filesz=filesz,
        memsz=memsz,
        shim=shim,
        tables=tables,
        notes=[],
        options=options,
        warnings=warnings,
        single_entry=single_entry,
        dropped_note_segments=dropped,
        kept_pvh_entry=kept_pvh,
    )
    if sha256 is not None and digest:
        facts = facts | {"sha256": sha256()}
    meta = _meta(facts, plan, code_size)
    plan.notes = _notes(draft, dropped, delta, plan.pv_entry, plan.pvh_entry, meta)
    _require_note_room(image, len(plan.notes))
    _check_tables(plan)
    return plan


def _notes(
    draft: _Draft,
    dropped: tuple[int, ...],
    delta: int,
    pv_entry: int | None,
    pvh_entry: int,
    meta: NoteEntry,
) -> list[NoteEntry]:
    """The shim's PT_NOTE, in order; the entry notes come after everything copied so
    they win where the input repeats them (libelf: the last note wins)."""
    image, spec = draft.image, draft.spec
    notes = _copied_notes(image, dropped, spec.replaces)
    if spec.pv:
        notes += _added_notes(image, draft.hcall_virt(), draft.own_hcall)
        notes += _translation_notes(image, spec.name, delta)
    notes += _entry_notes(image, pv_entry if spec.pv else None, pvh_entry, spec.replaces)
    return [*notes, meta]


def _meta_stub(facts: dict[str, Any], draft: _Draft, options: dict[str, Any], shim: Shim) -> Any:
    """A metadata note of the final size (its numbers are fixed width)."""
    code = len(shim.code)
    return NoteEntry(
        SHIM_META_OWNER,
        SHIM_META_NOTE_TYPE,
        _meta_record(
            facts,
            draft.spec.name,
            options,
            draft.kernel_entry,
            0,
            0,
            0,
            0,
            code,
            0,
            0,
            regions=shim.regions,
            labels=shim.all_labels,
        ).build(),
        "metadata",
        "shimgen",
    )


def _meta(facts: dict[str, Any], plan: Plan, code_size: int) -> NoteEntry:
    record = _meta_record(
        facts,
        plan.handoff,
        plan.options,
        plan.kernel_entry,
        plan.shim_vaddr,
        plan.shim_paddr,
        plan.filesz,
        plan.memsz,
        code_size,
        plan.pv_entry or 0,
        plan.pvh_entry,
        passthrough_entry=plan.kernel_entry if plan.pv_entry is None else None,
        image=plan.image,
        regions=plan.shim.regions,
        labels=plan.shim.all_labels,
    )
    return NoteEntry(SHIM_META_OWNER, SHIM_META_NOTE_TYPE, record.build(), "metadata", "shimgen")


def _meta_record(
    facts: dict[str, Any],
    handoff: str,
    options: dict[str, Any],
    kernel_entry: int,
    vaddr: int,
    paddr: int,
    filesz: int,
    memsz: int,
    code_size: int,
    pv_entry: int,
    pvh_entry: int,
    passthrough_entry: int | None = None,
    image: Image | None = None,
    regions: tuple[tuple[int, int], ...] = (),
    labels: dict[str, int] | None = None,
) -> ShimMeta:
    if passthrough_entry is not None:
        phys32, kernel_entry = passthrough_entry, 0
    else:
        notes = [] if image is None else image.segment_xen_notes + image.section_xen_notes
        phys32 = next(
            (
                int(n.value)
                for n in notes
                if n.type == XenNote.PHYS32_ENTRY and isinstance(n.value, int)
            ),
            0,
        )
    return ShimMeta(
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
        code_regions=list(regions),
        labels=dict(labels or {}),
    )


def original_facts(image: Image, hashed: bool = True) -> dict[str, Any]:
    """What the metadata records to rebuild the input (see structs/shim_meta.py).

    Without ``hashed`` the sha256 is a placeholder of its size, for a caller that
    supplies the digest later (make_plan's ``sha256``).
    """
    import hashlib

    from ..structs.elf import elf_header

    header = elf_header(image.elf_class).unpack_from(image.data, 0)
    return {
        "size": len(image.data),
        "sha256": hashlib.sha256(image.data).digest() if hashed else bytes(32),
        "e_entry": header["e_entry"],
        "e_phoff": header["e_phoff"],
        "e_phnum": header["e_phnum"],
    }


def _check_tables(plan: Plan) -> None:
    """The mode switch runs at physical addresses, the rest at virtual ones: verify."""
    if not HANDOFF_SPECS[plan.handoff].page_tables:
        return
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
