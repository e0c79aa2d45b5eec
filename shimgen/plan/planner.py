"""make_plan: everything the patch writes, decided from the image and the options.

The steps, each in its own module: the image's facts (facts.py), the handoff and
its kernel entry (handoffs.py), the notes (notes.py), where the shim goes and its
page tables (layout.py), the metadata note (metadata.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial

from ..errors import Refused
from ..read.check import Verdicts, evaluate
from ..read.container import normalize
from ..read.hypercalls import hypercall_page, scan_hypercalls
from ..read.image import Image
from ..shim import pagetables as pt
from ..shim import pv_abi as pv_abi_layer
from ..shim.assemble import Shim
from ..structs import XenNote
from . import facts
from .handoffs import (
    AUTO,
    HANDOFF_SPECS,
    HandoffSpec,
    check_options,
    entry_option_value,
    kept_pvh_entry,
    resolve_handoff,
)
from .layout import (
    KERNEL_TABLES,
    Draft,
    at_zero,
    build_kernel_tables,
    build_tables,
    check_tables,
    lay_out,
    require_single_entry,
    shim_address,
)
from .metadata import meta_note, meta_stub, original_facts, recorded_options
from .notes import (
    NoteEntry,
    encoded_size,
    note_warnings,
    require_note_room,
    shim_notes,
    superseded_note_segments,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on the patch path
if TYPE_CHECKING:
    from typing import Any


@dataclass
class Plan:
    """Everything a patch writes: the shim, where it goes, its page tables and notes."""

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
    pv_abi: PvAbiChoice = field(default_factory=lambda: PvAbiChoice(False, ""))
    # the PV ABI layer's tables the kernel runs on (PV layout), at offsets["kernel_tables"]
    kernel_tables: pt.PageTables | None = field(default=None, repr=False)

    @property
    def spec(self) -> HandoffSpec:
        return HANDOFF_SPECS[self.handoff]

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
        if self.kernel_tables is not None:
            at = self.offsets[KERNEL_TABLES]
            data[at : at + len(self.kernel_tables.data)] = self.kernel_tables.data
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
            "kernel_page_tables": (
                None
                if self.kernel_tables is None
                else {"base": self.kernel_tables.base, "frames": self.kernel_tables.frames}
            ),
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
            "pv_abi": self.pv_abi.to_json(),
            "options": self.options,
            "warnings": self.warnings,
        }


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
    pv_abi: bool | None = None,
) -> Plan:
    """Everything the patch writes, decided from the image and the options.

    An ELF32 container of x86-64 code is converted to ELF64 first (container.py);
    ``original`` (the input's size, sha256 and header fields) defaults to the facts
    of ``image`` as given. ``gzip_input`` records that the input was compressed when
    ``image`` is already the decompressed form (re-patching). ``sha256``, when given,
    returns the sha256 of ``image.data`` instead of the planner hashing it: it is called
    once, last, so that a caller hashing a large input in the background overlaps it
    with the planning. Without ``digest`` no sha256 is taken: the metadata records
    zeros and says so (options "digest": "none"). ``pv_abi``: the PV ABI layer in
    (True), out (False), or in when the kernel calls hypercalls Xen refuses under PVH
    (None; :func:`choose_pv_abi`).
    """
    input_facts = original or original_facts(image, hashed=digest and sha256 is None)
    compressed = image.compressed or gzip_input
    converted = normalize(image)
    image = converted.image
    verdicts = evaluate(image)  # libelf's view, asked once (hostile images make it slow)
    spec = HANDOFF_SPECS[resolve_handoff(image, handoff, entry, entry64, verdicts)]
    check_options(spec, entry, entry64, single_entry)
    facts.require_x86(image, spec.name, spec.takes_32bit)
    facts.require_mappable_segments(image)
    delta = facts.translation(image, verdicts)
    kernel_entry = spec.entry(image, entry_option_value(spec, entry, entry64), verdicts)
    kept_pvh = kept_pvh_entry(image, spec, verdicts, replace_pvh_entry, single_entry)
    if kept_pvh is not None:
        spec = replace(spec, replaces=(XenNote.ENTRY,))
    dropped = superseded_note_segments(image, spec.replaces)
    warnings = note_warnings(image, dropped, spec, kept_pvh)
    draft = _draft(image, spec, single_entry, kernel_entry, (delta, verdicts), warnings)
    layer = choose_pv_abi(image, spec, draft.kernel_hcall, pv_abi)
    draft.pv_abi = layer.on
    if single_entry:
        require_single_entry(draft, delta)
    forms = (["gzip"] if compressed else []) + ([converted.form] if converted.form else [])
    options = recorded_options(
        spec.name, entry, entry64, single_entry, forms, converted.offset, digest
    )
    if replace_pvh_entry:
        options["replace_pvh_entry"] = True
    options |= layer.option()

    stub = partial(meta_stub, input_facts, draft, options)
    entries = (0, kept_pvh or 0)  # placeholders of the final notes' size
    shim, tables, kernel_tables, (filesz, memsz) = _assemble_in_place(
        draft, dropped, delta, entries, stub
    )
    plan = Plan(
        handoff=spec.name,
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
        kernel_tables=kernel_tables,
        notes=[],
        options=options,
        warnings=warnings,
        single_entry=single_entry,
        dropped_note_segments=dropped,
        kept_pvh_entry=kept_pvh,
        pv_abi=layer,
    )
    if sha256 is not None and digest:
        input_facts = input_facts | {"sha256": sha256()}
    meta = meta_note(input_facts, plan, len(shim.code))
    plan.notes = shim_notes(draft, dropped, delta, (plan.pv_entry, plan.pvh_entry), meta)
    require_note_room(image, len(plan.notes))
    check_tables(draft, shim, tables)
    return plan


@dataclass(frozen=True)
class PvAbiChoice:
    """Whether the PV ABI layer goes in, and why (``patch --dry-run`` shows it)."""

    on: bool
    reason: str
    default: bool = False  # what the layer would be without --pv-abi/--no-pv-abi

    def option(self) -> dict[str, Any]:
        """The metadata option: the hypercalls the layer answers when it is in; False
        when --no-pv-abi left out a layer the kernel would get by default; nothing
        otherwise (a kernel without PV-only calls keeps its shim byte for byte)."""
        if self.on:
            return {pv_abi_layer.OPTION: pv_abi_layer.answered()}
        return {pv_abi_layer.OPTION: False} if self.default else {}

    def to_json(self) -> dict[str, Any]:
        answers = pv_abi_layer.answered() if self.on else []
        return {"on": self.on, "reason": self.reason, "answers": answers}


def choose_pv_abi(
    image: Image, spec: HandoffSpec, kernel_hcall: int | None, asked: bool | None
) -> PvAbiChoice:
    """The PV ABI layer sits in the start-info shim's PVH path and takes over slots of
    the kernel's own hypercall page: in by default when the kernel calls hypercalls
    Xen refuses under PVH (the scan of read/hypercalls.py), as ``asked`` otherwise."""
    possible = pv_abi_layer.INSTALL_AFTER in spec.templates and kernel_hcall is not None
    refused = []
    if possible:
        refused = [u.name for u in scan_hypercalls(image).uses if u.under_pvh == "pv-only"]
    default = bool(refused)
    if asked is False:
        return PvAbiChoice(False, "left out (--no-pv-abi)", default)
    if not possible:
        if asked:
            has_setup = pv_abi_layer.INSTALL_AFTER in spec.templates
            why = (
                "the kernel has no HYPERCALL_PAGE note"
                if has_setup
                else (f"handoff {spec.name}'s shim sets up no hypercall page")
            )
            raise Refused(
                f"{image.path}: --pv-abi takes over slots of the kernel's own hypercall page "
                f"in the start-info shim's PVH path, and {why}"
            )
        return PvAbiChoice(False, "not applicable: no kernel hypercall page in a start-info shim")
    if asked:
        return PvAbiChoice(True, "forced (--pv-abi)", default)
    if refused:
        return PvAbiChoice(True, "the kernel calls PV-only hypercalls: " + ", ".join(refused), True)
    return PvAbiChoice(False, "the kernel calls no PV-only hypercall through its page")


def _assemble_in_place(
    draft: Draft,
    dropped: tuple[int, ...],
    delta: int,
    entries: tuple[int, int],
    meta_stub: Callable[[Shim], NoteEntry],
) -> tuple[Shim, pt.PageTables, pt.PageTables | None, tuple[int, int]]:
    """The shim assembled where it goes, its page tables, the kernel's (PV ABI layer),
    (filesz, memsz).

    Its size comes first, from the same shim at address 0 (layout.at_zero), with
    notes of the final size (the metadata's numbers are fixed width); then the
    segment is laid out around it and the shim assembled in place."""
    zero = at_zero(draft)
    zero_shim = zero.assemble()
    code_size = len(zero_shim.code)
    stub = shim_notes(zero, dropped, delta, entries, meta_stub(zero_shim))
    sizes = lay_out(draft, code_size, encoded_size(stub))
    tables = build_tables(draft, sizes[1])
    kernel_tables = build_kernel_tables(draft, sizes[1], tables) if draft.pv_abi else None
    shim = draft.assemble()
    if len(shim.code) != code_size or shim.regions != zero_shim.regions:
        raise Refused(
            f"internal: shim size changed with its layout ({code_size} -> {len(shim.code)})"
        )
    return shim, tables, kernel_tables, sizes


def _draft(
    image: Image,
    spec: HandoffSpec,
    single_entry: bool,
    kernel_entry: int,
    translation: tuple[int, Verdicts],
    warnings: list[str],
) -> Draft:
    """What the kernel gives the shim, and where the shim goes."""
    delta, verdicts = translation
    draft = Draft(
        image=image,
        spec=spec,
        single_entry=single_entry,
        kernel_entry=kernel_entry,
        boot_mode=facts.boot_mode_symbol(image, warnings),
        kernel_hcall=hypercall_page(image) if spec.pv else None,
        pv_virt_base=(
            facts.pseudo_physical_base(image, delta, verdicts, spec.name)
            if spec.one_physical_space
            else 0
        ),
    )
    draft.shim_vaddr, draft.shim_paddr = shim_address(image, delta)
    return draft
