"""The handoffs: what each kernel entry expects, and what its shim is made of.

One :class:`HandoffSpec` per handoff holds all of it: the templates and the labels
of its shim, its reserved pages and their template values, how the kernel entry is
found and which option names it. Adding a handoff is writing one spec (and its
templates). ``auto`` picks pvh-passthrough for a PVH-only kernel, hvm-start-info
when ``--entry64`` is given, start-info otherwise (:func:`resolve_handoff`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import Refused
from ..read.check import Verdicts, evaluate
from ..read.image import Image
from ..shim import pv_abi as pv_abi_layer
from ..shim import values
from ..shim.assemble import Shim, assemble
from ..structs import XenNote
from . import facts

AUTO = "auto"
SHIM_REPLACED = (XenNote.ENTRY, XenNote.PHYS32_ENTRY)
ENTRY_OPTION = "--entry"
ENTRY64_OPTION = "--entry64"
SINGLE_ENTRY_TEMPLATE = "80_single_entry.S"  # goes right before the set's data templates
SINGLE_ENTRY_LABEL = "single_entry"
DATA_TEMPLATE_PREFIX = "9"  # 90_data.S and after: data only, from the label shim_data on

PV_IMPOSSIBLE = (
    "a PV guest starts in long mode at CPL 3 and can never switch to the 32-bit "
    "protected mode a PHYS32_ENTRY expects"
)
PV_NEEDS = (
    "to boot it as PV too, the kernel needs a 64-bit entry that takes a struct "
    "hvm_start_info: patch with --handoff hvm-start-info --entry64 SYMBOL|ADDR"
)

# The kernel entry a handoff's shim jumps to, from the image, the value of the
# handoff's entry option (None when not given) and libelf's verdicts.
EntryResolver = Callable[[Image, str | None, Verdicts], int]


@dataclass(frozen=True)
class HandoffSpec:
    """One handoff: what its kernel entry expects and what its shim is made of."""

    name: str
    templates: tuple[str, ...]  # asm_templates/*.S in assembly order (shim_start first)
    labels: tuple[str, ...]  # labels whose offsets the plan, emulate and inspect read
    reserved: tuple[str, ...]  # reserved pages after the page tables, in order
    page_values: values.PageValues  # the template values of those pages
    entry: EntryResolver
    entry_option: str | None  # the option that names the kernel entry
    entry_title: str  # what the plan calls the kernel entry
    stack_pages: int
    pv: bool  # has a PV entry: ENTRY note, the PV notes a loader needs
    page_tables: bool  # its PVH path enters long mode with prebuilt tables
    # The kernel is promised one physical address space in both modes: under PV,
    # pseudo-physical must be p_paddr (PV_VIRT_BASE, VIRT_BASE notes added).
    one_physical_space: bool = False
    takes_32bit: bool = False  # its kernel entry may be 32-bit code (EM_386)
    replaces: tuple[XenNote, ...] = SHIM_REPLACED  # input notes the shim's own supersede

    def template_set(self, single_entry: bool = False, pv_abi: bool = False) -> tuple[str, ...]:
        """The templates of one shim, in order: the PV ABI layer's code right after
        the hypercall page's set-up (which jumps into it), its data last."""
        names = list(self.templates)
        if pv_abi:
            if pv_abi_layer.INSTALL_AFTER not in names:
                raise Refused(f"handoff {self.name} has no hypercall page set-up for --pv-abi")
            at = names.index(pv_abi_layer.INSTALL_AFTER) + 1
            names[at:at] = pv_abi_layer.TEMPLATES
            names.extend(pv_abi_layer.DATA_TEMPLATES)
        if single_entry:
            first_data = next(n for n, name in enumerate(names) if name[0] == DATA_TEMPLATE_PREFIX)
            names.insert(first_data, SINGLE_ENTRY_TEMPLATE)
        return tuple(names)

    def exported_labels(self, single_entry: bool = False) -> tuple[str, ...]:
        return (*self.labels, SINGLE_ENTRY_LABEL) if single_entry else self.labels

    def assemble(self, place: values.Placement, single_entry: bool = False) -> Shim:
        return assemble(
            values.template_values(place, self.page_values),
            self.template_set(single_entry, place.pv_abi),
            self.exported_labels(single_entry),
        )


# --- kernel entries -------------------------------------------------------------------


def start_info_entry(image: Image, entry: str | None, verdicts: Verdicts) -> int:
    """start-info: the kernel's 64-bit PV entry."""
    if entry is not None:
        value = facts.symbol_or_address(image, entry, ENTRY_OPTION)
    else:
        phys32 = facts.pvh_only(image, verdicts)
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
    return facts.require_executable(
        image, value, "PV entry", "give the kernel's 64-bit PV entry with --entry SYMBOL|ADDR"
    )


def hvm_start_info_entry(image: Image, entry64: str | None, _verdicts: Verdicts) -> int:
    """hvm-start-info: the kernel's 64-bit entry that takes a struct hvm_start_info."""
    if entry64 is None:
        raise Refused(
            f"{image.path}: handoff hvm-start-info needs the kernel's 64-bit entry that "
            "takes a struct hvm_start_info: give it with --entry64 SYMBOL|ADDR"
        )
    value = facts.symbol_or_address(image, entry64, ENTRY64_OPTION)
    return facts.require_executable(
        image, value, ENTRY64_OPTION, "it must be the kernel's 64-bit code (a virtual address)"
    )


def passthrough_entry(image: Image, _option: str | None, verdicts: Verdicts) -> int:
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


# --- the handoffs ---------------------------------------------------------------------

XEN_CPUID_SEARCH = "05_xen_cpuid_search.S"  # macros only: before every template using them
# The PVH entry of the two handoffs with both entries, up to its first 64-bit code.
_PVH_TO_LONG_MODE = (
    "20_pvh_entry.S",
    "21_pvh_bad_magic.S",
    "22_wrong_mode.S",
    "29_pvh_long_entry.S",
)
# Labels of the two handoffs with both entries: entries, mode switch, data.
_TWO_ENTRY_LABELS = (
    "pv_entry",
    "pv_checked",
    "pvh_entry",
    "pvh_checked",
    "pvh_long_entry",
    "pvh_virtual",
    "pvh_halt",
    "pv_spin",
)
_DATA_LABELS = ("shim_data", "kernel_entry_ptr", "gdt", "msg_bad_magic")

START_INFO = HandoffSpec(
    name="start-info",
    templates=(
        XEN_CPUID_SEARCH,
        "10_pv_entry.S",
        "13_pv_start_info.S",
        "11_pv_bad_magic.S",
        *_PVH_TO_LONG_MODE,
        "30_pvh_long.S",
        "32_xen_detect.S",
        "33_hypercall_page.S",
        "40_start_info.S",
        "90_data.S",
        "92_start_info_data.S",
    ),
    labels=(*_TWO_ENTRY_LABELS, "fill_start_info", "copy_cmdline", *_DATA_LABELS),
    # start_info: the synthesized start_info_t; scratch: hypercall arguments and
    # the XENMEM_memory_map buffer; shared_info: the frame Xen's is mapped into
    reserved=("start_info", "scratch", "shared_info"),
    page_values=values.start_info_pages,
    entry=start_info_entry,
    entry_option=ENTRY_OPTION,
    entry_title="kernel PV entry",
    stack_pages=4,
    pv=True,
    page_tables=True,
)

HVM_START_INFO = HandoffSpec(
    name="hvm-start-info",
    templates=(
        XEN_CPUID_SEARCH,
        "10_pv_entry.S",
        "12_hvm_pv_entry.S",
        "11_pv_bad_magic.S",
        "14_hvm_from_start_info.S",
        *_PVH_TO_LONG_MODE,
        "31_hvm_pvh_long.S",
        "32_xen_detect.S",
        "90_data.S",
    ),
    labels=(*_TWO_ENTRY_LABELS, "hvm_from_start_info", *_DATA_LABELS),
    # hvm_info: the hvm_start_info v1 the PV path builds, with its module entry,
    # memory map and command line
    reserved=("hvm_info", "scratch"),
    page_values=values.hvm_info_pages,
    entry=hvm_start_info_entry,
    entry_option=ENTRY64_OPTION,
    entry_title="kernel 64-bit entry (--entry64)",
    stack_pages=4,
    pv=True,
    page_tables=True,
    one_physical_space=True,
)

# No PV entry: a PV guest starts in long mode at CPL 3 and can never reach the
# 32-bit protected mode the kernel's own PVH entry expects.
PVH_PASSTHROUGH = HandoffSpec(
    name="pvh-passthrough",
    templates=(
        XEN_CPUID_SEARCH,
        "16_passthrough_entry.S",
        "21_pvh_bad_magic.S",
        "91_passthrough_data.S",
    ),
    labels=("pvh_entry", "pvh_halt", "shim_data", "kernel_entry_ptr", "msg_bad_magic"),
    reserved=("scratch",),  # the saved esp, the fallback mode word
    page_values=values.passthrough_pages,
    entry=passthrough_entry,
    entry_option=None,
    entry_title="kernel PVH entry (physical)",
    stack_pages=1,
    pv=False,
    page_tables=False,
    takes_32bit=True,
    replaces=(XenNote.PHYS32_ENTRY,),
)

HANDOFF_SPECS = {spec.name: spec for spec in (START_INFO, HVM_START_INFO, PVH_PASSTHROUGH)}
HANDOFFS = tuple(HANDOFF_SPECS)


# --- choosing one ---------------------------------------------------------------------


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
        if facts.already_universal(image):
            _refuse_universal(image, verdicts)
        if entry64 is not None:
            return HVM_START_INFO.name
        if (
            entry is None
            and image.loadable_segments
            and facts.pvh_only(image, verdicts) is not None
        ):
            return PVH_PASSTHROUGH.name
        return START_INFO.name
    if handoff not in HANDOFF_SPECS:
        raise Refused(f"unknown handoff {handoff} (available: {', '.join(HANDOFFS)}, auto)")
    return handoff


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


def kept_pvh_entry(
    image: Image, spec: HandoffSpec, verdicts: Verdicts, replace_pvh_entry: bool, single: bool
) -> int | None:
    """An already universal kernel's own PHYS32_ENTRY (as Xen reads it: the last), when
    the handoff has a PVH entry of its own to offer instead and the user did not ask
    for it; None otherwise. pvh-passthrough always enters the kernel's own PVH entry."""
    if replace_pvh_entry or not spec.pv or not facts.already_universal(image):
        return None
    if single:
        raise Refused(
            f"{image.path}: --single-entry makes one shim entry serve as ENTRY and "
            "PHYS32_ENTRY, replacing the kernel's own PVH entry: add --replace-pvh-entry"
        )
    return verdicts.pvh.details.get("phys_entry")


def entry_option_value(spec: HandoffSpec, entry: str | None, entry64: str | None) -> str | None:
    """The value of the option that names the spec's kernel entry."""
    return {ENTRY_OPTION: entry, ENTRY64_OPTION: entry64}.get(spec.entry_option or "")


def check_options(spec: HandoffSpec, entry: str | None, entry64: str | None, single: bool) -> None:
    """Refuse options the handoff does not take."""
    if entry is not None and spec.entry_option != ENTRY_OPTION:
        hint = f" (use {spec.entry_option})" if spec.entry_option else ""
        raise Refused(
            f"{ENTRY_OPTION} names a start_info PV entry: handoff {spec.name} does not take it"
            + hint
        )
    if entry64 is not None and spec.entry_option != ENTRY64_OPTION:
        takers = " or ".join(
            s.name for s in HANDOFF_SPECS.values() if s.entry_option == ENTRY64_OPTION
        )
        raise Refused(
            f"{ENTRY64_OPTION} names an entry that takes a struct hvm_start_info: use it with "
            f"--handoff {takers}"
        )
    if single and not spec.pv:
        raise Refused(
            f"--single-entry: handoff {spec.name} has no PV entry to share the PVH one with "
            f"({PV_IMPOSSIBLE})"
        )
