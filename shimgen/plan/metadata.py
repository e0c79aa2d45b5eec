"""The metadata note (owner "shimgen"): what the patch did and how to undo it.

It records the tool version, the handoff, the original input's size, sha256 and
header fields, the shim's place and entries, the options (enough to plan the same
patch again) and the shim's code regions; structs/shim_meta.py declares it.
"""

from __future__ import annotations

from .. import __version__
from ..read.image import Image
from ..shim.assemble import Shim
from ..structs import XenNote
from ..structs.shim_meta import (
    DIGEST_OPTION,
    NO_DIGEST,
    SHIM_META_NOTE_TYPE,
    SHIM_META_OWNER,
    ShimMeta,
)
from .layout import Draft
from .notes import NoteEntry

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on the patch path
if TYPE_CHECKING:
    from typing import Any

    from .planner import Plan


def recorded_options(
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
        # a list (the hypercalls answered) means in, False out, absent the default
        "pv_abi": None if options.get("pv_abi") is None else bool(options["pv_abi"]),
    }


def meta_stub(
    facts: dict[str, Any], draft: Draft, options: dict[str, Any], shim: Shim
) -> NoteEntry:
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


def meta_note(facts: dict[str, Any], plan: Plan, code_size: int) -> NoteEntry:
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
