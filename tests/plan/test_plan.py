"""The planner's steps one by one (shimgen/plan/): the handoff and its kernel entry,
the image's facts, the notes, the layout. Images come from imagegen, which shares
no definition with shimgen."""

from __future__ import annotations

import dataclasses
import re

import imagegen
import pytest
from shimgen.structs import XenNote

from shimgen.cli import patch_cmd
from shimgen.errors import Refused
from shimgen.plan import HANDOFF_SPECS, HANDOFFS, facts, handoffs, layout, make_plan, notes
from shimgen.read.check import evaluate
from shimgen.read.image import Image, image_from_bytes
from shimgen.shim import assemble as asm
from shimgen.shim import pagetables as pt
from shimgen.shim.values import PAGE

PV64_ENTRY = imagegen.PV64_VIRT_BASE + imagegen.PHYS_BASE


def _image(name: str) -> Image:
    return image_from_bytes(imagegen.write_elf(imagegen.case(name).spec), name)


def _spec_image(spec: imagegen.Spec, name: str = "made") -> Image:
    return image_from_bytes(imagegen.write_elf(spec), name)


# --- the handoff ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "entry", "entry64", "expected"),
    [
        ("pv64", None, None, "start-info"),
        ("no_notes", None, None, "start-info"),
        ("pvh64", None, None, "pvh-passthrough"),
        ("pvh64", "0x100000", None, "start-info"),  # an entry named: PV is asked for
        ("pvh64", None, "0x100000", "hvm-start-info"),
        ("pv64", None, "0x100000", "hvm-start-info"),
    ],
)
def test_auto_picks_the_handoff_the_image_calls_for(
    case: str, entry: str | None, entry64: str | None, expected: str
) -> None:
    assert handoffs.resolve_handoff(_image(case), "auto", entry, entry64) == expected


def test_auto_refuses_an_already_universal_kernel() -> None:
    with pytest.raises(Refused, match="already universal: ENTRY and PHYS32_ENTRY present"):
        handoffs.resolve_handoff(_image("pv_and_pvh"), "auto", None, None)


def test_an_unknown_handoff_is_refused_with_the_known_ones() -> None:
    with pytest.raises(Refused, match=r"unknown handoff pv-only .*start-info.*auto"):
        handoffs.resolve_handoff(_image("pv64"), "pv-only", None, None)


@pytest.mark.parametrize(
    ("handoff", "entry", "entry64", "single", "message"),
    [
        (
            "hvm-start-info",
            "x",
            None,
            False,
            r"handoff hvm-start-info does not take it \(use --entry64\)$",
        ),
        ("pvh-passthrough", "x", None, False, "handoff pvh-passthrough does not take it$"),
        ("start-info", None, "x", False, "use it with --handoff hvm-start-info$"),
        ("pvh-passthrough", None, "x", False, "use it with --handoff hvm-start-info$"),
        ("pvh-passthrough", None, None, True, "has no PV entry to share"),
    ],
)
def test_options_a_handoff_does_not_take_are_refused(
    handoff: str, entry: str | None, entry64: str | None, single: bool, message: str
) -> None:
    with pytest.raises(Refused, match=message):
        handoffs.check_options(HANDOFF_SPECS[handoff], entry, entry64, single)


@pytest.mark.parametrize("spec", HANDOFF_SPECS.values(), ids=HANDOFF_SPECS)
def test_a_handoff_takes_its_own_options(spec: handoffs.HandoffSpec) -> None:
    given = {"--entry": ("e", None), "--entry64": (None, "e64"), None: (None, None)}
    entry, entry64 = given[spec.entry_option]
    handoffs.check_options(spec, entry, entry64, spec.pv)
    assert handoffs.entry_option_value(spec, "e", "e64") == (entry or entry64)


@pytest.mark.parametrize("spec", HANDOFF_SPECS.values(), ids=HANDOFF_SPECS)
def test_every_exported_label_is_defined_by_the_handoffs_templates(
    spec: handoffs.HandoffSpec,
) -> None:
    for single in (False, True) if spec.pv else (False,):
        text = asm.template_text(spec.template_set(single))
        defined = set(re.findall(r"^([A-Za-z_]\w*):", text, re.M))
        assert set(spec.exported_labels(single)) <= defined


@pytest.mark.parametrize("spec", [s for s in HANDOFF_SPECS.values() if s.pv], ids=lambda s: s.name)
def test_the_single_entry_goes_right_before_the_data(spec: handoffs.HandoffSpec) -> None:
    single = spec.template_set(True)
    at = single.index(handoffs.SINGLE_ENTRY_TEMPLATE)
    assert single[:at] + single[at + 1 :] == spec.templates
    assert single[at + 1] == "90_data.S" and "90_data.S" not in single[:at]
    assert spec.exported_labels(True) == (*spec.labels, handoffs.SINGLE_ENTRY_LABEL)


def test_the_cli_offers_every_handoff() -> None:
    assert patch_cmd.HANDOFFS == HANDOFFS


def test_a_new_handoff_is_one_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    """A spec registered under another name is planned like the one it copies: no
    other place in the planner knows the handoffs by name."""
    copy = dataclasses.replace(handoffs.START_INFO, name="start-info-copy")
    monkeypatch.setitem(handoffs.HANDOFF_SPECS, copy.name, copy)
    image = _image("pv64")
    original = make_plan(image, "start-info")
    planned = make_plan(image, copy.name)
    assert planned.spec is copy
    assert planned.shim.code == original.shim.code
    assert planned.offsets == original.offsets
    assert [n.encode() for n in planned.notes[:-1]] == [n.encode() for n in original.notes[:-1]]


# --- kernel entries ---------------------------------------------------------------------


def test_the_pv_entry_comes_from_the_entry_note_then_the_option() -> None:
    image = _image("pv64")
    verdicts = evaluate(image)
    assert handoffs.start_info_entry(image, None, verdicts) == PV64_ENTRY
    inside = f"{PV64_ENTRY + 0x10:#x}"
    assert handoffs.start_info_entry(image, inside, verdicts) == PV64_ENTRY + 0x10


@pytest.mark.parametrize(
    ("case", "resolver", "option", "message"),
    [
        ("pvh64", handoffs.start_info_entry, None, "PVH-only kernel .*--handoff pvh-passthrough"),
        ("pv64", handoffs.start_info_entry, "0x1000", "not in an executable loadable segment"),
        ("pv64", handoffs.start_info_entry, "nosuchsym", "no such symbol and not an address"),
        ("pv64", handoffs.hvm_start_info_entry, None, "give it with --entry64"),
        ("pv64", handoffs.passthrough_entry, None, "none that boots"),
    ],
)
def test_entries_that_cannot_be_used_are_refused(
    case: str, resolver: handoffs.EntryResolver, option: str | None, message: str
) -> None:
    image = _image(case)
    with pytest.raises(Refused, match=message):
        resolver(image, option, evaluate(image))


def test_passthrough_takes_the_kernels_phys32_entry() -> None:
    image = _image("pvh64")
    assert handoffs.passthrough_entry(image, None, evaluate(image)) == imagegen.PHYS_BASE


# --- the image's facts ------------------------------------------------------------------


def test_segment_lookups() -> None:
    image = _image("pv64")
    assert image.segment_of(PV64_ENTRY + 0x10).index == 0
    assert image.virt_to_phys(PV64_ENTRY + 0x10, "x") == imagegen.PHYS_BASE + 0x10
    assert image.segment_of(imagegen.PHYS_BASE) is None  # physical, not virtual
    with pytest.raises(Refused, match="x 0x100000 is outside every loadable segment"):
        image.virt_to_phys(imagegen.PHYS_BASE, "x")


@pytest.mark.parametrize(("case", "delta"), [("pv64", imagegen.PV64_VIRT_BASE), ("pvh64", 0)])
def test_translation_is_libelfs_virt_base_minus_paddr_offset(case: str, delta: int) -> None:
    image = _image(case)
    assert facts.translation(image, evaluate(image)) == delta


# --- notes ------------------------------------------------------------------------------


@pytest.mark.parametrize("owner", [b"Xen", b"shimgen", b"GNU!x"])
@pytest.mark.parametrize("size", range(10))
def test_a_note_encodes_as_an_elf_note(owner: bytes, size: int) -> None:
    desc = bytes(range(1, size + 1))
    entry = notes.NoteEntry(owner, 7, desc, "added", "x")
    assert entry.encode() == imagegen.Note(owner, 7, desc).encode()


@pytest.mark.parametrize("replace_pvh_entry", [True, False])
def test_the_entry_notes_come_last_before_the_metadata(replace_pvh_entry: bool) -> None:
    plan = make_plan(_image("pv_and_pvh"), "start-info", replace_pvh_entry=replace_pvh_entry)
    kinds = [(n.type, n.action) for n in plan.notes]
    assert kinds[-3:] == [
        (XenNote.ENTRY, "replaced"),
        (XenNote.PHYS32_ENTRY, "replaced" if replace_pvh_entry else "kept"),
        (kinds[-1][0], "metadata"),
    ]
    kept = plan.pvh_entry == imagegen.PVH_ENTRY  # the kernel's own PVH entry, repeated
    assert kept is not replace_pvh_entry
    assert int.from_bytes(plan.notes[-2].desc, "little") == plan.pvh_entry
    passthrough = make_plan(_image("pvh64"))
    assert [n.type for n in passthrough.notes[:-1]] == [XenNote.PHYS32_ENTRY]
    assert any("PVH only, no PV entry" in w for w in passthrough.warnings)


@pytest.mark.parametrize(
    ("case", "replaces", "dropped"),
    [
        ("pv64", handoffs.SHIM_REPLACED, ()),
        ("pv_and_pvh", handoffs.SHIM_REPLACED, (1,)),  # holds the PHYS32_ENTRY replaced
        ("pv_and_pvh", (), ()),
        ("gnu_property_after_xen", (), (1,)),  # Xen notes in a PT_NOTE aligned to 8
    ],
)
def test_superseded_note_segments(case: str, replaces: tuple, dropped: tuple) -> None:
    assert notes.superseded_note_segments(_image(case), replaces) == dropped


def test_notes_read_from_sections_move_into_the_shims_pt_note() -> None:
    copied = notes.copied_notes(_image("notes_in_sections_only"))
    kinds = {n.type for n in copied}
    assert XenNote.GUEST_OS in kinds and XenNote.HYPERCALL_PAGE in kinds
    assert XenNote.ENTRY not in kinds  # the shim's own replaces it
    assert {n.action for n in copied} == {"copied"}


@pytest.mark.parametrize("paddr_offset_given", [True, False])
def test_legacy_notes_are_converted(paddr_offset_given: bool) -> None:
    legacy = imagegen.case("xen_guest_only").spec
    text = (
        legacy.xen_guest
        if paddr_offset_given
        else legacy.xen_guest.replace(",ELF_PADDR_OFFSET=0x0", "")
    )
    image = _spec_image(dataclasses.replace(legacy, xen_guest=text))
    copied = notes.copied_notes(image)
    assert XenNote.HYPERCALL_PAGE not in {n.type for n in copied}  # re-added as an address
    paddr_offset = [n for n in copied if n.type == XenNote.PADDR_OFFSET]
    assert len(paddr_offset) == 1
    # without one, legacy ELF_PADDR_OFFSET defaults to VIRT_BASE; with notes, to 0
    expected = 0 if paddr_offset_given else imagegen.PV64_VIRT_BASE
    assert int.from_bytes(paddr_offset[0].desc, "little") == expected
    assert paddr_offset[0].action == ("copied" if paddr_offset_given else "added")


def test_the_pv_notes_a_loader_needs_are_added_when_missing() -> None:
    added = notes.added_notes(_image("no_notes"), 0x1234000, own_page=True)
    assert [(n.type, n.desc) for n in added] == [
        (XenNote.LOADER, b"generic\0"),
        (XenNote.XEN_VERSION, b"xen-3.0\0"),
        (XenNote.HYPERCALL_PAGE, (0x1234000).to_bytes(8, "little")),
    ]
    assert notes.added_notes(_image("pv64"), 0, own_page=False) == []
    assert notes.added_notes(_image("guest_os_linux"), 0, own_page=False) == []  # Linux: no LOADER


def test_translation_notes_only_where_virt_base_is_missing() -> None:
    made = notes.translation_notes(_image("no_notes"), imagegen.PV64_VIRT_BASE)
    assert [(n.type, int.from_bytes(n.desc, "little")) for n in made] == [
        (XenNote.VIRT_BASE, imagegen.PV64_VIRT_BASE),
        (XenNote.PADDR_OFFSET, 0),
    ]
    assert notes.translation_notes(_image("pv64"), imagegen.PV64_VIRT_BASE) == []
    assert notes.translation_notes(_image("no_notes"), 0) == []


# --- layout -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["pv64", "no_notes", "pvh64"])
def test_the_segment_layout(case: str) -> None:
    plan = make_plan(_image(case))
    spec, offsets = plan.spec, plan.offsets
    assert offsets["notes"] % 4 == 0 and offsets["notes"] >= len(plan.shim.code)
    assert offsets["tables"] % PAGE == 0
    assert offsets["tables"] >= offsets["notes"] + len(plan.note_bytes)
    assert plan.filesz == offsets["tables"] + len(plan.tables.data)
    own = ["hypercall_page"] if plan.hypercall_page_own else []
    pages = [*spec.reserved, *own]
    for n, name in enumerate(pages):
        assert offsets[name] == plan.filesz + n * PAGE
    assert offsets["stack"] == plan.filesz + len(pages) * PAGE
    assert offsets["stack_top"] == offsets["stack"] + spec.stack_pages * PAGE == plan.memsz
    if spec.page_tables:
        mapped = layout.regions(
            plan.image, plan.shim_vaddr, plan.shim_paddr, plan.memsz, plan.pv_abi.on, offsets
        )
        assert plan.tables.frames == pt.count_frames(mapped)


def test_the_shim_follows_the_image_both_ways() -> None:
    plan = make_plan(_image("pv64"))
    segment = plan.image.loadable_segments[0]
    assert plan.shim_vaddr >= segment.vaddr + segment.memsz
    assert plan.shim_paddr >= segment.paddr + segment.memsz
    assert plan.shim_vaddr - plan.shim_paddr == plan.delta == imagegen.PV64_VIRT_BASE
    assert plan.shim_vaddr % PAGE == 0


def test_the_zero_draft_keeps_the_distances_between_reserved_pages() -> None:
    plan = make_plan(_image("pv64"))
    draft = layout.Draft(
        image=plan.image,
        spec=plan.spec,
        single_entry=False,
        kernel_entry=plan.kernel_entry,
        boot_mode=None,
        kernel_hcall=plan.hypercall_page_virt,
        pv_virt_base=0,
        offsets=plan.offsets,
    )
    zero = layout.at_zero(draft)
    assert zero.shim_vaddr == zero.shim_paddr == zero.offsets["tables"] == 0
    names = [*plan.spec.reserved, "stack", "stack_top"]
    assert [zero.offsets[n] - zero.offsets["start_info"] for n in names] == [
        plan.offsets[n] - plan.offsets["start_info"] for n in names
    ]


def test_a_shim_above_4_gib_is_refused() -> None:
    high = 0xFFFFF000
    spec = dataclasses.replace(imagegen.PVH64, vaddr=high, paddr=high, entry=high)
    with pytest.raises(Refused, match="above 4 GiB: no PVH entry"):
        layout.shim_address(_spec_image(spec), 0)


def test_tables_that_would_hide_the_shim_are_refused() -> None:
    """A segment linked one page above its load address covers, virtually, the
    physical addresses the shim's mode switch runs at: its identity map is lost."""
    base = imagegen.PHYS_BASE
    spec = dataclasses.replace(
        imagegen.PVH64, vaddr=base + PAGE, paddr=base, entry=base + PAGE, note_segments=()
    )
    with pytest.raises(Refused, match=r"PVH entry \(identity\) .*collides with the identity map"):
        make_plan(_spec_image(spec), "start-info")
