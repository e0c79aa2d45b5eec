"""Shim templates and their assembly: Keystone's bytes equal GNU as's, byte for byte."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from xenprobe import xen_values

from shimgen.plan import HANDOFF_SPECS, make_plan
from shimgen.plan.handoffs import SINGLE_ENTRY_TEMPLATE, START_INFO
from shimgen.read.image import read_image
from shimgen.shim import assemble as asm
from shimgen.shim import pv_abi as pv_abi_layer
from shimgen.shim import values

HEADER_WORDS = ("Entry state", "Exit state", "Clobber")
# The only literals a template may spell out itself: zero, one, a shift by 32,
# alignment 8. Everything else arrives as a {PLACEHOLDER}.
ALLOWED_TEMPLATE_LITERALS = {"0x0", "0x1", "0x20", "0x8"}


@pytest.fixture(scope="module", params=["pv-hello", "pv-highhalf"])
def plan(request, samples_build: Path):
    return make_plan(read_image(samples_build / request.param))


def _gnu_as(source: str, tmp_path: Path) -> bytes:
    if shutil.which("as") is None or shutil.which("objcopy") is None:
        pytest.fail("GNU as/objcopy missing: apt-get install binutils")
    src, obj, binary = tmp_path / "shim.S", tmp_path / "shim.o", tmp_path / "shim.bin"
    src.write_text(source)
    subprocess.run(["as", "--64", "-o", str(obj), str(src)], check=True)
    subprocess.run(["objcopy", "-O", "binary", str(obj), str(binary)], check=True)
    return binary.read_bytes()


def test_keystone_matches_gnu_as(plan, tmp_path: Path) -> None:
    source = plan.shim.source + asm.label_table(plan.spec.labels)
    gnu = _gnu_as(source, tmp_path)
    assert asm.keystone_assemble(source) == gnu
    assert gnu[: len(plan.shim.code)] == plan.shim.code


def test_labels_match_gnu_symbols(plan, tmp_path: Path) -> None:
    (tmp_path / "s.S").write_text(plan.shim.source)
    subprocess.run(["as", "--64", "-o", str(tmp_path / "s.o"), str(tmp_path / "s.S")], check=True)
    nm = subprocess.run(
        ["nm", str(tmp_path / "s.o")], capture_output=True, text=True, check=True
    ).stdout
    symbols = {
        line.split()[2]: int(line.split()[0], 16)
        for line in nm.splitlines()
        if len(line.split()) == 3
    }
    for label, offset in plan.shim.labels.items():
        assert symbols[label] == offset, label


def test_every_template_documents_its_contract() -> None:
    from importlib import resources

    files = resources.files("shimgen.asm_templates")
    for name in asm.template_names():
        head = files.joinpath(name).read_text().split("*/", 1)[0]
        assert head.lstrip().startswith("/*"), name
        if "data" not in name:
            for word in HEADER_WORDS:
                assert word in head, f"{name}: header lacks '{word}'"


def test_no_abi_number_typed_into_templates() -> None:
    code = re.sub(r"/\*.*?\*/", "", asm.template_text(), flags=re.S)
    literals = set(re.findall(r"0x[0-9a-fA-F]+", code))
    assert literals <= ALLOWED_TEMPLATE_LITERALS
    assert not asm.decimal_literals(asm.template_text())


def test_rendered_source_is_hex_only(plan) -> None:
    assert asm.decimal_literals(plan.shim.source) == []
    with pytest.raises(asm.AssemblyError, match="decimal"):
        asm.check_hex_only("mov $16, %eax")
    # checked on a cache miss, before Keystone runs (a hit's source was checked then)
    with pytest.raises(asm.AssemblyError, match="decimal"):
        asm.keystone_checked("mov $16, %eax")("mov $0x16, %eax")


def test_empty_output_is_an_error() -> None:
    # ljmpl makes Keystone 0.9.2 return nothing at all
    with pytest.raises(asm.AssemblyError):
        asm.keystone_assemble(".code32\nljmpl $0x8, $0x100000\n")


def test_missing_placeholder_is_reported() -> None:
    with pytest.raises(asm.AssemblyError, match=r"template values missing: .*SI_CMDLINE"):
        asm.render({}, START_INFO.templates)


# The template values that name a field of a boot structure, and that field as Xen's
# public headers spell it: compiled with gcc, so a value bound to the wrong field fails.
FIELD_VALUES = {
    "SI_MAGIC": "offsetof(start_info_t, magic)",
    "SI_NR_PAGES": "offsetof(start_info_t, nr_pages)",
    "SI_SHARED_INFO": "offsetof(start_info_t, shared_info)",
    "SI_FLAGS": "offsetof(start_info_t, flags)",
    "SI_STORE_MFN": "offsetof(start_info_t, store_mfn)",
    "SI_STORE_EVTCHN": "offsetof(start_info_t, store_evtchn)",
    "SI_CONSOLE_MFN": "offsetof(start_info_t, console.domU.mfn)",
    "SI_CONSOLE_EVTCHN": "offsetof(start_info_t, console.domU.evtchn)",
    "SI_PT_BASE": "offsetof(start_info_t, pt_base)",
    "SI_NR_PT_FRAMES": "offsetof(start_info_t, nr_pt_frames)",
    "SI_MOD_START": "offsetof(start_info_t, mod_start)",
    "SI_MOD_LEN": "offsetof(start_info_t, mod_len)",
    "SI_CMDLINE": "offsetof(start_info_t, cmd_line)",
    "HVM_MAGIC": "offsetof(struct hvm_start_info, magic)",
    "HVM_VERSION": "offsetof(struct hvm_start_info, version)",
    "HVM_FLAGS": "offsetof(struct hvm_start_info, flags)",
    "HVM_NR_MODULES": "offsetof(struct hvm_start_info, nr_modules)",
    "HVM_MODLIST": "offsetof(struct hvm_start_info, modlist_paddr)",
    "HVM_CMDLINE": "offsetof(struct hvm_start_info, cmdline_paddr)",
    "HVM_MEMMAP": "offsetof(struct hvm_start_info, memmap_paddr)",
    "HVM_MEMMAP_ENTRIES": "offsetof(struct hvm_start_info, memmap_entries)",
    "HVM_START_MAGIC": "XEN_HVM_START_MAGIC_VALUE",
    "MOD_PADDR": "offsetof(struct hvm_modlist_entry, paddr)",
    "MOD_SIZE": "offsetof(struct hvm_modlist_entry, size)",
    "MOD_ENTRY_SIZE": "sizeof(struct hvm_modlist_entry)",
    "ENTRY_ADDR": "offsetof(struct hvm_memmap_table_entry, addr)",
    "ENTRY_SIZE": "offsetof(struct hvm_memmap_table_entry, size)",
    "ENTRY_TYPE": "offsetof(struct hvm_memmap_table_entry, type)",
    "MEMMAP_STRIDE": "sizeof(struct hvm_memmap_table_entry)",
}


def test_template_values_name_the_fields_xen_headers_name(tmp_path: Path) -> None:
    got = xen_values(tmp_path, FIELD_VALUES, ("xen/xen.h", "xen/arch-x86/hvm/start_info.h"))
    fixed = values.fixed_values()
    assert {name: fixed[name] for name in FIELD_VALUES} == got


def test_code_size_independent_of_layout(plan) -> None:
    # every address 0; the displacements between reserved pages as in any layout
    zeros = _layout_for("start-info", False, 0)
    shim = asm.assemble(zeros, START_INFO.templates, START_INFO.labels)
    assert len(shim.code) == len(plan.shim.code)
    print(f"shim code: {len(plan.shim.code)} bytes")


def _placement(spec, value: int, pv_abi: bool = False) -> values.Placement:
    """Every page of the spec's segment, a page apart from the tables on (with the PV
    ABI layer's pages too when pv_abi)."""
    layer = tuple(pv_abi_layer.RESERVED_PAGES) if pv_abi else ()
    pages = ("tables", *spec.reserved, "hypercall_page", *layer, "stack_top")
    return values.Placement(
        shim_vaddr=value,
        shim_paddr=value,
        offsets={name: n * values.PAGE for n, name in enumerate(pages)},
        frames=1,
        kernel_entry=value,
        boot_mode_virt=value,
        boot_mode_phys=value,
        hypercall_virt=value,
        hypercall_phys=value,
        pv_virt_base=value,
        pv_abi=pv_abi,
    )


def test_every_value_provided_is_used_and_every_placeholder_provided() -> None:
    provided = set(values.fixed_values())
    for spec in HANDOFF_SPECS.values():
        provided |= set(values.template_values(_placement(spec, 0), spec.page_values))
    layered = _placement(START_INFO, 0, pv_abi=True)  # the one handoff the layer goes in
    provided |= set(values.template_values(layered, START_INFO.page_values))
    used = asm.placeholders(asm.template_text())
    assert provided - used == set(), "values no template uses"
    assert used - provided == set(), "placeholders nobody provides"


@pytest.mark.parametrize("spec", HANDOFF_SPECS.values(), ids=HANDOFF_SPECS)
def test_each_handoff_provides_what_its_templates_use(spec) -> None:
    given = values.template_values(_placement(spec, 0), spec.page_values)
    for single in (False, True) if spec.pv else (False,):
        assert asm.placeholders(asm.template_text(spec.template_set(single))) <= set(given)


@pytest.mark.parametrize(
    ("handoff", "loop"), [("pvh-passthrough", "passthrough_xen"), ("start-info", "detect_xen")]
)
def test_cpuid_search_macros_leave_the_labels_in_the_text(handoff: str, loop: str) -> None:
    """Both Xen searches use the macros of 05_xen_cpuid_search.S; the labels of their
    loops stay in the rendered text, where inspect finds the names it shows."""
    spec = HANDOFF_SPECS[handoff]
    source = asm.render(_layout_for(handoff, False, 0x12345000), spec.templates)
    for label in (f"{loop}_loop", f"{loop}_next"):
        assert f"\n{label}:" in source
    code = re.sub(r"/\*.*?\*/", "", source, flags=re.S)
    assert "\txen_cpuid_match " in code and "\txen_cpuid_step " in code


# Hypercall numbers: every one is checked in tests/read/test_hypercall_scan.py.
XEN_ABI_EXPRESSIONS = {
    "XENMEM_memory_map": "XENMEM_memory_map",
    "XENMEM_add_to_physmap": "XENMEM_add_to_physmap",
    "XENMAPSPACE_shared_info": "XENMAPSPACE_shared_info",
    "HVMOP_get_param": "HVMOP_get_param",
    "STORE_PFN": "HVM_PARAM_STORE_PFN",
    "STORE_EVTCHN": "HVM_PARAM_STORE_EVTCHN",
    "CONSOLE_PFN": "HVM_PARAM_CONSOLE_PFN",
    "CONSOLE_EVTCHN": "HVM_PARAM_CONSOLE_EVTCHN",
    "DOMID_SELF": "DOMID_SELF",
    "CONSOLEIO_write": "CONSOLEIO_write",
    "SCHEDOP_shutdown": "SCHEDOP_shutdown",
    "SHUTDOWN_crash": "SHUTDOWN_crash",
    "hp.index": "offsetof(struct xen_hvm_param, index)",
    "hp.value": "offsetof(struct xen_hvm_param, value)",
    "hp.size": "sizeof(struct xen_hvm_param)",
    "ap.space": "offsetof(struct xen_add_to_physmap, space)",
    "ap.idx": "offsetof(struct xen_add_to_physmap, idx)",
    "ap.gpfn": "offsetof(struct xen_add_to_physmap, gpfn)",
    "mm.buffer": "offsetof(struct xen_memory_map, buffer)",
}
XEN_ABI_HEADERS = (
    "xen/xen.h",
    "xen/memory.h",
    "xen/sched.h",
    "xen/hvm/hvm_op.h",
    "xen/hvm/params.h",
)


def test_xen_abi_matches_xen_headers(tmp_path: Path) -> None:
    from shimgen.structs import xen_abi as abi

    got = xen_values(tmp_path, XEN_ABI_EXPRESSIONS, XEN_ABI_HEADERS)
    assert got["XENMEM_memory_map"] == abi.XENMEM_MEMORY_MAP
    assert got["XENMEM_add_to_physmap"] == abi.XENMEM_ADD_TO_PHYSMAP
    assert got["XENMAPSPACE_shared_info"] == abi.XENMAPSPACE_SHARED_INFO
    assert got["HVMOP_get_param"] == abi.HVMOP_GET_PARAM
    assert got["STORE_PFN"] == abi.HvmParam.STORE_PFN
    assert got["STORE_EVTCHN"] == abi.HvmParam.STORE_EVTCHN
    assert got["CONSOLE_PFN"] == abi.HvmParam.CONSOLE_PFN
    assert got["CONSOLE_EVTCHN"] == abi.HvmParam.CONSOLE_EVTCHN
    assert got["DOMID_SELF"] == abi.DOMID_SELF
    assert got["CONSOLEIO_write"] == abi.CONSOLEIO_WRITE
    assert got["SCHEDOP_shutdown"] == abi.SCHEDOP_SHUTDOWN
    assert got["SHUTDOWN_crash"] == abi.SHUTDOWN_CRASH
    assert got["hp.index"] == abi.XEN_HVM_PARAM.offset_of("index")
    assert got["hp.value"] == abi.XEN_HVM_PARAM.offset_of("value")
    assert got["hp.size"] == abi.XEN_HVM_PARAM.size
    assert got["ap.space"] == abi.XEN_ADD_TO_PHYSMAP.offset_of("space")
    assert got["ap.idx"] == abi.XEN_ADD_TO_PHYSMAP.offset_of("idx")
    assert got["ap.gpfn"] == abi.XEN_ADD_TO_PHYSMAP.offset_of("gpfn")
    assert got["mm.buffer"] == abi.XEN_MEMORY_MAP.offset_of("buffer")


# --- every handoff's template set ------------------------------------------------------

SETS = [
    (handoff, single)
    for handoff, spec in HANDOFF_SPECS.items()
    for single in (False, True)
    if not single or spec.pv  # pvh-passthrough: no PV entry to share
]


def _layout_for(
    handoff: str, single: bool, value: int, pv_abi: bool = False
) -> dict[str, int | str]:
    """The fixed values, and every address the set asks for set to value; the
    displacements between reserved pages (not addresses: the same in every layout)
    as the plan makes them; the PV ABI layer's switch as asked."""
    text = asm.template_text(HANDOFF_SPECS[handoff].template_set(single, pv_abi))
    wanted = values.layout_keys(text)
    displacements = values.scratch_from_start_info(values.PAGE)
    fixed = {k: v for k, v in displacements.items() if k in wanted}
    switch = {"PV_ABI": int(pv_abi)} if "PV_ABI" in wanted else {}
    return values.fixed_values() | dict.fromkeys(wanted, value) | fixed | switch


def _assemble(handoff: str, single: bool, value: int, pv_abi: bool = False) -> asm.Shim:
    spec = HANDOFF_SPECS[handoff]
    layout = _layout_for(handoff, single, value, pv_abi)
    return asm.assemble(layout, spec.template_set(single, pv_abi), spec.exported_labels(single))


def test_every_template_belongs_to_a_set() -> None:
    used = {name for spec in HANDOFF_SPECS.values() for name in spec.templates}
    layer = set(START_INFO.template_set(pv_abi=True)) - set(START_INFO.templates)
    assert used | layer | {SINGLE_ENTRY_TEMPLATE} == set(asm.template_names())


# start-info with the PV ABI layer too (the only set that takes it)
LAYER_SETS = [(handoff, single, False) for handoff, single in SETS] + [
    ("start-info", single, True) for single in (False, True)
]


@pytest.mark.parametrize(("handoff", "single", "pv_abi"), LAYER_SETS)
def test_each_set_matches_gnu_as(handoff: str, single: bool, pv_abi: bool, tmp_path: Path) -> None:
    spec = HANDOFF_SPECS[handoff]
    layout = _layout_for(handoff, single, 0x12345000, pv_abi)
    source = asm.render(layout, spec.template_set(single, pv_abi)) + asm.label_table(
        spec.exported_labels(single)
    )
    assert asm.keystone_assemble(source) == _gnu_as(source, tmp_path)


@pytest.mark.parametrize(("handoff", "single", "pv_abi"), LAYER_SETS)
def test_each_set_size_independent_of_layout(handoff: str, single: bool, pv_abi: bool) -> None:
    small = _assemble(handoff, single, 0, pv_abi)
    large = _assemble(handoff, single, 0x7FFFF000, pv_abi)
    assert len(small.code) == len(large.code) and small.labels == large.labels
    name = f"{handoff}{' single' if single else ''}{' pv-abi' if pv_abi else ''}"
    print(f"{name}: {len(small.code)} bytes")


def test_each_set_reports_missing_values() -> None:
    with pytest.raises(asm.AssemblyError, match="HVM_INFO_PHYS"):
        asm.render(_layout_for("start-info", False, 0), HANDOFF_SPECS["hvm-start-info"].templates)
