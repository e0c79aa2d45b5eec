"""The shim's PT_NOTE: which Xen notes it holds, in which order, and why.

The entry notes come last so they win where the input repeats them (libelf: the
last note wins); Xen notes a PV loader would read from elsewhere (sections, the
legacy ``__xen_guest`` text, PT_NOTEs the output leaves out) are copied in.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import Refused
from ..read.hypercalls import legacy_virt_base
from ..read.image import MAX_NOTES_PER_CONTAINER, Image
from ..structs import ELF_NOTE_HEADER, NOTE_ALIGN, XEN_NOTE_NAME, Payload, XenNote, round_up
from ..structs.elf import Machine
from .handoffs import PV_IMPOSSIBLE, PV_NEEDS, SHIM_REPLACED, HandoffSpec
from .layout import Draft

PV_NOTES_DEFAULTS = {XenNote.LOADER: "generic", XenNote.XEN_VERSION: "xen-3.0"}


@dataclass(frozen=True)
class NoteEntry:
    """One note of the shim's PT_NOTE: owner, type, payload, and what the patch did with it."""

    owner: bytes
    type: int
    desc: bytes
    action: str  # "replaced" | "added" | "copied" | "metadata"
    label: str

    def encode(self) -> bytes:
        """The note as an ELF note: header, then name and desc each padded."""
        name = self.owner + b"\0"
        header = ELF_NOTE_HEADER.pack(
            {"namesz": len(name), "descsz": len(self.desc), "type": self.type}
        )
        return header + _padded(name) + _padded(self.desc)


def _padded(data: bytes) -> bytes:
    return data.ljust(round_up(len(data), NOTE_ALIGN), b"\0")


def _number(value: int, width: int = 8) -> bytes:
    return (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")


def encoded_size(notes: list[NoteEntry]) -> int:
    return sum(len(note.encode()) for note in notes)


def shim_notes(
    draft: Draft,
    dropped: tuple[int, ...],
    delta: int,
    entries: tuple[int | None, int],
    meta: NoteEntry,
) -> list[NoteEntry]:
    """The shim's PT_NOTE, in order; ``entries`` are the (PV, PVH) entries."""
    image, spec = draft.image, draft.spec
    pv_entry, pvh_entry = entries
    notes = copied_notes(image, dropped, spec.replaces)
    if spec.pv:
        notes += added_notes(image, draft.hcall_virt(), draft.own_hcall)
        if spec.one_physical_space:
            notes += translation_notes(image, delta)
    notes += entry_notes(image, pv_entry if spec.pv else None, pvh_entry, spec.replaces)
    return [*notes, meta]


def require_note_room(image: Image, added: int) -> None:
    """libelf stops after 65536 notes over all PT_NOTEs: the shim's, last, must count."""
    before = sum(1 for note in image.notes if note.source.startswith("PT_NOTE["))
    if image.notes_cut or before + added > MAX_NOTES_PER_CONTAINER:
        raise Refused(
            f"{image.path}: its PT_NOTE segments hold too many notes: Xen stops reading "
            f"after {MAX_NOTES_PER_CONTAINER} and would never see the shim's"
        )


def superseded_note_segments(image: Image, replaces: tuple[XenNote, ...]) -> tuple[int, ...]:
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
        if replaced or segment.align > NOTE_ALIGN:
            dropped.append(segment.index)
    return tuple(dropped)


def note_warnings(
    image: Image, dropped: tuple[int, ...], spec: HandoffSpec, kept_pvh: int | None
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
    # pvh-passthrough (no PV entry) enters the kernel's own PVH entry: none to warn of
    phys32_replaced = kept_pvh is None and spec.pv
    if (
        phys32_replaced
        and not dropped
        and any(n.type == XenNote.PHYS32_ENTRY for n in image.segment_xen_notes)
    ):
        warnings.append("the input already has a PHYS32_ENTRY note; the shim's (last) one wins")
    if not spec.pv:
        # A 32-bit (EM_386) kernel has no 64-bit entry to offer hvm-start-info.
        needs = PV_NEEDS if image.machine == Machine.X86_64 else "it is 32-bit code"
        warnings.append(f"PVH only, no PV entry: {PV_IMPOSSIBLE}; {needs}")
    return warnings


def copied_notes(
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
                continue  # re-added as an address by added_notes
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
        desc = _number(legacy_virt_base(image))
        copied.append(NoteEntry(XEN_NOTE_NAME, XenNote.PADDR_OFFSET, desc, "added", "PADDR_OFFSET"))
    return copied


def added_notes(image: Image, hypercall_virt: int, own_page: bool) -> list[NoteEntry]:
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


def translation_notes(image: Image, delta: int) -> list[NoteEntry]:
    """An image linked p_vaddr != p_paddr without a VIRT_BASE note, for a handoff
    promising one physical address space: Linux's convention (VIRT_BASE = p_vaddr -
    p_paddr, PADDR_OFFSET 0) makes Xen's PV loader map it at p_vaddr and keeps
    pseudo-physical = p_paddr."""
    present = {n.type for n in image.xen_notes}
    if not delta or XenNote.VIRT_BASE in present:
        return []
    return [
        NoteEntry(XEN_NOTE_NAME, XenNote.VIRT_BASE, _number(delta), "added", "VIRT_BASE"),
        NoteEntry(XEN_NOTE_NAME, XenNote.PADDR_OFFSET, _number(0), "added", "PADDR_OFFSET"),
    ]


def entry_notes(
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
