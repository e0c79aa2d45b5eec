"""Render the shim's assembly templates and assemble them with Keystone.

Templates (``asm_templates/*.S``, concatenated in name order) hold ``{NAME}``
placeholders; every value comes from :func:`abi_values` (structs and xen_abi) or
from the plan (addresses), and is rendered in hex. Keystone 0.9.2 has traps
(tests/test_assemble.py shows them), guarded here:

* AT&T syntax is an option, and with any option set Keystone reads bare numbers as
  hex: the rendered source is checked to hold no decimal literal at all;
* far jumps are written as bytes in the template (``ljmp`` is mangled);
* an empty result is an error, never an empty shim;
* label addresses come back through a ``.quad`` table appended to the source and
  cut off again.

Keystone's output is kept in the shimgen cache, keyed by the source it assembled
(asmcache.py): a patch that assembles a source seen before does not run Keystone.

Every absolute address in the templates is written ``BASE + (label - shim_start)``,
so the bytes do not depend on the assembly base and GNU as (tests) can produce the
very same bytes from the same source.

Each handoff has its own template set (:data:`TEMPLATE_SETS`), concatenated in the
order given; parts two handoffs share (the 32-bit mode switch, the Xen cpuid
search, the error exits) are files of their own that both sets list.
``--single-entry`` adds the polyglot entry before the data.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from ..errors import ShimgenError
from ..structs import (
    HVM_MEMMAP_TABLE_ENTRY,
    HVM_MODLIST_ENTRY,
    HVM_START_MAGIC,
    MAX_GUEST_CMDLINE,
    START_INFO_MAGIC,
    START_INFO_MAGIC_PREFIX,
    E820Type,
    StartInfoFlags,
    hvm_start_info,
    start_info,
)
from ..structs import xen_abi as abi
from ..structs.clayout import U64
from .asmcache import cached_assembly

# The templates of each handoff, in assembly order (the first defines shim_start).
TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "start-info": (
        "10_pv_entry.S",
        "13_pv_start_info.S",
        "11_pv_bad_magic.S",
        "20_pvh_entry.S",
        "21_pvh_bad_magic.S",
        "22_wrong_mode.S",
        "29_pvh_long_entry.S",
        "30_pvh_long.S",
        "32_xen_detect.S",
        "33_hypercall_page.S",
        "40_start_info.S",
        "90_data.S",
        "92_start_info_data.S",
    ),
    "hvm-start-info": (
        "10_pv_entry.S",
        "12_hvm_pv_entry.S",
        "11_pv_bad_magic.S",
        "14_hvm_from_start_info.S",
        "20_pvh_entry.S",
        "21_pvh_bad_magic.S",
        "22_wrong_mode.S",
        "29_pvh_long_entry.S",
        "31_hvm_pvh_long.S",
        "32_xen_detect.S",
        "90_data.S",
    ),
    "pvh-passthrough": (
        "16_passthrough_entry.S",
        "21_pvh_bad_magic.S",
        "91_passthrough_data.S",
    ),
}
SINGLE_ENTRY_TEMPLATE = "80_single_entry.S"  # goes right before the set's data templates
DATA_TEMPLATE_PREFIX = "9"  # 90_data.S and after: data only, from the label shim_data on

# Labels whose offsets the plan, the emulator and inspect need. The two handoffs
# with both entries share their entry, mode-switch and data labels.
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
EXPORTED_LABELS = (*_TWO_ENTRY_LABELS, "fill_start_info", "copy_cmdline", *_DATA_LABELS)
_SET_LABELS: dict[str, tuple[str, ...]] = {
    "start-info": EXPORTED_LABELS,
    "hvm-start-info": (*_TWO_ENTRY_LABELS, "hvm_from_start_info", *_DATA_LABELS),
    "pvh-passthrough": ("pvh_entry", "pvh_halt", "shim_data", "kernel_entry_ptr", "msg_bad_magic"),
}
SINGLE_ENTRY_LABEL = "single_entry"
OPCODE_JMP_FAR = 0xEA  # jmp ptr16:32, the one far-jump form Keystone cannot mangle
OPCODE_REX_W = 0x48  # the mode guards' byte: REX.W in 64-bit mode, dec %eax in 32-bit
BAD_MAGIC_MESSAGE = b"shimgen: bad boot magic, not entering the kernel; halted\n"
WRONG_MODE_MESSAGE = (
    b"shimgen: entry reached in the wrong CPU mode, not entering the kernel; halted\n"
)
OUT_OF_RANGE_MESSAGE = (
    b"shimgen: hvm_start_info points outside the identity-mapped memory, "
    b"not entering the kernel; halted\n"
)
# Entries of an hvm_start_info v1 memory map the start-info shim reads at most: far
# more than a loader writes (QEMU and Xen's toolstack write a handful), few enough
# that a loader's absurd memmap_entries cannot keep the walk going for minutes.
MEMMAP_MAX_ENTRIES = 0x400


class AssemblyError(ShimgenError):
    """The shim could not be assembled: a bug in a template or in Keystone."""


@dataclass(frozen=True)
class Shim:
    code: bytes
    labels: dict[str, int]  # label -> offset from the start of the shim
    source: str
    # (offset, bits) where the code's mode starts or changes (32, 64), and where the
    # data begins (bits 0): recorded in the metadata note so that inspect and diff
    # decode each byte as what it is
    regions: tuple[tuple[int, int], ...] = ()
    # every label of the source -> offset, in the order a disassembly shows them
    # (display_order): recorded in the metadata note so that inspect names the code
    all_labels: dict[str, int] = field(default_factory=dict)


def _template_folder() -> Path:
    """Where shimgen.asm_templates' files are: a package folder, as pip installs it
    (read without importlib.resources, whose import costs a small patch ~3 ms)."""
    from .. import asm_templates

    return Path(asm_templates.__file__).parent


def template_names() -> list[str]:
    return sorted(entry.name for entry in _template_folder().iterdir() if entry.suffix == ".S")


def template_text(names: list[str] | tuple[str, ...] | None = None) -> str:
    """The named templates (default: every template file), concatenated."""
    folder = _template_folder()
    chosen = template_names() if names is None else names
    return "\n".join((folder / name).read_text() for name in chosen)


def template_set(handoff: str = "start-info", single_entry: bool = False) -> list[str]:
    """The templates one shim is made of, in order."""
    if handoff not in TEMPLATE_SETS:
        raise AssemblyError(f"no template set for handoff {handoff}")
    names = list(TEMPLATE_SETS[handoff])
    if single_entry:
        first_data = next(n for n, name in enumerate(names) if name[0] == DATA_TEMPLATE_PREFIX)
        names.insert(first_data, SINGLE_ENTRY_TEMPLATE)
    return names


def exported_labels(handoff: str = "start-info", single_entry: bool = False) -> tuple[str, ...]:
    labels = _SET_LABELS[handoff]
    return (*labels, SINGLE_ENTRY_LABEL) if single_entry else labels


def placeholders(source: str) -> set[str]:
    """Every {NAME} a template text asks for."""
    return {name for _, name, _, _ in string.Formatter().parse(source) if name}


def _hex_bytes(data: bytes) -> str:
    return ", ".join(f"{byte:#04x}" for byte in data)


@cache
def abi_values() -> dict[str, int | str]:
    """Every layout-independent value a template uses, from structs and xen_abi."""
    si, hvm = start_info(64), hvm_start_info(1)
    ebx, ecx, edx = abi.signature_words()
    magic = START_INFO_MAGIC[64]
    # 10_pv_entry.S compares the prefix as one quad word.
    assert len(START_INFO_MAGIC_PREFIX) == U64.size
    # Both memory-map formats are walked by one loop: their fields must coincide.
    for name in ("addr", "size", "type"):
        assert HVM_MEMMAP_TABLE_ENTRY.offset_of(name) == abi.E820_ENTRY.offset_of(name)
    # 40_start_info.S leaves xen_add_to_physmap.space as the loader zeroed it
    assert abi.XENMAPSPACE_SHARED_INFO == 0
    built = built_hvm_layout()
    values: dict[str, int | str] = {
        "SI_MAGIC_PREFIX": int.from_bytes(START_INFO_MAGIC_PREFIX, "little"),
        "SI_MAGIC_BYTES": _hex_bytes(magic + b"\0"),
        "MSG_BAD_MAGIC_BYTES": _hex_bytes(BAD_MAGIC_MESSAGE),
        "MSG_WRONG_MODE_BYTES": _hex_bytes(WRONG_MODE_MESSAGE),
        "MSG_OUT_OF_RANGE_BYTES": _hex_bytes(OUT_OF_RANGE_MESSAGE),
        "OPCODE_REX_W": OPCODE_REX_W,
        "MEMMAP_MAX_ENTRIES": MEMMAP_MAX_ENTRIES,
        "HVM_INFO_SIZE": hvm.size,
        "MOD_ENTRY_SIZE": HVM_MODLIST_ENTRY.size,
        "MODE_XEN_PV": abi.BootMode.XEN_PV,
        "MODE_XEN_PVH": abi.BootMode.XEN_PVH,
        "MODE_PVH_NO_XEN": abi.BootMode.PVH_NO_XEN,
        "CONSOLEIO_WRITE": abi.CONSOLEIO_WRITE,
        "SCHEDOP_SHUTDOWN": abi.SCHEDOP_SHUTDOWN,
        "SHUTDOWN_CRASH": abi.SHUTDOWN_CRASH,
        "HVM_START_MAGIC": HVM_START_MAGIC,
        "CR4_PAE_SSE": abi.CR4_PAE | abi.CR4_OSFXSR | abi.CR4_OSXMMEXCPT,
        "CR0_PG_PE_MP": abi.CR0_PG | abi.CR0_PE | abi.CR0_MP,
        "CR0_KEEP_FPU": ~(abi.CR0_EM | abi.CR0_TS) & 0xFFFFFFFF,
        "MSR_EFER": abi.MSR_EFER,
        "EFER_LME": abi.EFER_LME,
        "OPCODE_JMP_FAR": OPCODE_JMP_FAR,
        "SEL_CODE64": abi.GDT_SELECTOR_CODE64,
        "SEL_DATA": abi.GDT_SELECTOR_DATA,
        "GDT_CODE64": abi.GDT_CODE64,
        "GDT_DATA": abi.GDT_DATA,
        "DEBUGCON_PORT": abi.DEBUGCON_PORT,
        "XEN_CPUID_FIRST": abi.XEN_CPUID_FIRST_LEAF,
        "XEN_CPUID_STRIDE": abi.XEN_CPUID_LEAF_STRIDE,
        "XEN_CPUID_END": abi.XEN_CPUID_LAST_LEAF,
        "XEN_CPUID_HCALL_LEAF": abi.XEN_CPUID_HYPERCALL_LEAF,
        "XEN_SIG_EBX": ebx,
        "XEN_SIG_ECX": ecx,
        "XEN_SIG_EDX": edx,
        "SI_MAGIC": si.offset_of("magic"),
        "SI_NR_PAGES": si.offset_of("nr_pages"),
        "SI_SHARED_INFO": si.offset_of("shared_info"),
        "SI_FLAGS": si.offset_of("flags"),
        "SI_STORE_MFN": si.offset_of("store_mfn"),
        "SI_STORE_EVTCHN": si.offset_of("store_evtchn"),
        "SI_CONSOLE_MFN": si.offset_of("console.domU.mfn"),
        "SI_CONSOLE_EVTCHN": si.offset_of("console.domU.evtchn"),
        "SI_PT_BASE": si.offset_of("pt_base"),
        "SI_NR_PT_FRAMES": si.offset_of("nr_pt_frames"),
        "SI_MOD_START": si.offset_of("mod_start"),
        "SI_MOD_LEN": si.offset_of("mod_len"),
        "SI_CMDLINE": si.offset_of("cmd_line"),
        "CMDLINE_MAX": MAX_GUEST_CMDLINE - 1,  # one byte stays for the NUL
        "HVM_VERSION": hvm.offset_of("version"),
        "HVM_FLAGS": hvm.offset_of("flags"),
        "HVM_NR_MODULES": hvm.offset_of("nr_modules"),
        "HVM_MODLIST": hvm.offset_of("modlist_paddr"),
        "HVM_CMDLINE": hvm.offset_of("cmdline_paddr"),
        "HVM_MEMMAP": hvm.offset_of("memmap_paddr"),
        "HVM_MEMMAP_ENTRIES": hvm.offset_of("memmap_entries"),
        "MOD_PADDR": HVM_MODLIST_ENTRY.offset_of("paddr"),
        "MOD_SIZE": HVM_MODLIST_ENTRY.offset_of("size"),
        "MEMMAP_STRIDE": HVM_MEMMAP_TABLE_ENTRY.size,
        "E820_STRIDE": abi.E820_ENTRY_STRIDE,
        "E820_RAM": E820Type.RAM,
        "ENTRY_ADDR": HVM_MEMMAP_TABLE_ENTRY.offset_of("addr"),
        "ENTRY_SIZE": HVM_MEMMAP_TABLE_ENTRY.offset_of("size"),
        "ENTRY_TYPE": HVM_MEMMAP_TABLE_ENTRY.offset_of("type"),
        "PAGE_SHIFT": abi.PAGE_SHIFT,
        "PAGE_SIZE": abi.PAGE_SIZE,
        "XENMEM_MEMORY_MAP": abi.XENMEM_MEMORY_MAP,
        "XENMEM_CURRENT_RESERVATION": abi.XENMEM_CURRENT_RESERVATION,
        "XENMEM_ADD_TO_PHYSMAP": abi.XENMEM_ADD_TO_PHYSMAP,
        "XMM_NR": abi.XEN_MEMORY_MAP.offset_of("nr_entries"),
        "XMM_BUFFER": abi.XEN_MEMORY_MAP.offset_of("buffer"),
        "HVMOP_GET_PARAM": abi.HVMOP_GET_PARAM,
        "DOMID_SELF": abi.DOMID_SELF,
        "HP_DOMID": abi.XEN_HVM_PARAM.offset_of("domid"),
        "HP_PAD": abi.XEN_HVM_PARAM.offset_of("pad"),
        "HP_INDEX": abi.XEN_HVM_PARAM.offset_of("index"),
        "HP_VALUE": abi.XEN_HVM_PARAM.offset_of("value"),
        "AP_DOMID": abi.XEN_ADD_TO_PHYSMAP.offset_of("domid"),
        "AP_SIZE": abi.XEN_ADD_TO_PHYSMAP.offset_of("size"),
        "AP_SPACE": abi.XEN_ADD_TO_PHYSMAP.offset_of("space"),
        "AP_IDX": abi.XEN_ADD_TO_PHYSMAP.offset_of("idx"),
        "AP_GPFN": abi.XEN_ADD_TO_PHYSMAP.offset_of("gpfn"),
        "PARAM_STORE_PFN": abi.HvmParam.STORE_PFN,
        "PARAM_STORE_EVTCHN": abi.HvmParam.STORE_EVTCHN,
        "PARAM_CONSOLE_PFN": abi.HvmParam.CONSOLE_PFN,
        "PARAM_CONSOLE_EVTCHN": abi.HvmParam.CONSOLE_EVTCHN,
        # hvm-start-info: the hvm_start_info v1 the PV path builds (built_hvm_layout)
        "HVM_MAGIC": hvm.offset_of("magic"),
        "HVM_INFO_VERSION": BUILT_HVM_VERSION,
        "SIF_MOD_START_PFN": StartInfoFlags.MOD_START_PFN,
        "BUILT_CMDLINE": built["cmdline"],
        "BUILT_MODLIST": built["modlist"],
        "BUILT_MEMMAP": built["memmap"],
        "BUILT_MOD_PADDR": built["modlist"] + HVM_MODLIST_ENTRY.offset_of("paddr"),
        "BUILT_MOD_SIZE": built["modlist"] + HVM_MODLIST_ENTRY.offset_of("size"),
        "BUILT_MEMMAP_SIZE": built["memmap"] + HVM_MEMMAP_TABLE_ENTRY.offset_of("size"),
        "BUILT_MEMMAP_TYPE": built["memmap"] + HVM_MEMMAP_TABLE_ENTRY.offset_of("type"),
    }
    return values


BUILT_HVM_VERSION = 1  # the PV path of hvm-start-info builds a version-1 struct


@cache
def built_hvm_layout() -> dict[str, int]:
    """Offsets, in the page the hvm-start-info PV path fills, of what it builds: the
    struct, one module entry, one memory-map entry, the command line (+ NUL)."""
    layout, cursor = {}, 0
    for name, size, align in (
        ("info", hvm_start_info(BUILT_HVM_VERSION).size, 8),
        ("modlist", HVM_MODLIST_ENTRY.size, 8),
        ("memmap", HVM_MEMMAP_TABLE_ENTRY.size, 8),
        ("cmdline", MAX_GUEST_CMDLINE, 1),
    ):
        cursor += -cursor % align
        layout[name] = cursor
        cursor += size
    layout["end"] = cursor
    return layout


# Values the plan decides (addresses) for the start-info set; other sets ask for
# others (render() reports whatever a set's templates need and the layout lacks).
LAYOUT_KEYS = (
    "SHIM_VIRT",
    "SHIM_PHYS",
    "KERNEL_ENTRY",
    "BOOT_MODE_VIRT",
    "STACK_TOP_VIRT",
    "START_INFO_VIRT",
    "PML4_PHYS",
    "PML4_VIRT",
    "NR_PT_FRAMES",
    "HCALL_PAGE_PHYS",
    "HCALL_CONSOLE_IO",
    "HCALL_SCHED_OP",
    "HCALL_MEMORY_OP",
    "HCALL_HVM_OP",
    "IDENTITY_MAP_END",
    "SI_TO_HVM_PARAM",
    "SI_TO_HVM_PARAM_VALUE",
    "SI_TO_ADD_TO_PHYSMAP",
    "SI_TO_MEMORY_MAP",
    "SI_TO_MEMORY_MAP_NR",
    "SI_TO_E820_BUF",
    "E820_CAPACITY",
    "SHARED_INFO_PHYS",
    "SHARED_INFO_PFN",
)


class _HexValues(dict):
    def __missing__(self, key: str) -> str:
        raise AssemblyError(f"template placeholder {{{key}}} has no value")


def render(layout: dict[str, int], handoff: str = "start-info", single_entry: bool = False) -> str:
    """The shim source with every placeholder replaced by a hex literal."""
    text = template_text(template_set(handoff, single_entry))
    missing = placeholders(text) - set(abi_values()) - set(layout)
    if missing:
        raise AssemblyError(f"layout values missing: {', '.join(sorted(missing))}")
    values = _HexValues()
    for key, value in {**abi_values(), **layout}.items():
        values[key] = f"{int(value):#x}" if isinstance(value, int) else value
    source = string.Formatter().vformat(text, (), values)
    check_hex_only(source)
    return source


_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_DECIMAL = re.compile(r"(?<![\w%.$])\$?(\d+)(?![\w])")


def decimal_literals(source: str) -> list[str]:
    """Bare decimal numbers Keystone would read as hex (0 and 1 read the same)."""
    code = _COMMENT.sub("", source)
    return [m.group(0) for m in _DECIMAL.finditer(code) if int(m.group(1)) > 1]


def check_hex_only(source: str) -> None:
    found = decimal_literals(source)
    if found:
        raise AssemblyError(
            f"decimal literals in the shim source (Keystone reads them as hex): {found[:5]}"
        )


def label_table(labels: tuple[str, ...] = EXPORTED_LABELS) -> str:
    return "\n".join(f"\t.quad\t{label} - shim_start" for label in labels) + "\n"


def keystone_assemble(source: str) -> bytes:
    """Assemble AT&T source with Keystone at base 0; empty output is an error."""
    from keystone import KS_ARCH_X86, KS_MODE_64, KS_OPT_SYNTAX_ATT, Ks, KsError

    engine = Ks(KS_ARCH_X86, KS_MODE_64)
    engine.syntax = KS_OPT_SYNTAX_ATT
    try:
        encoding, _count = engine.asm(source, 0)
    except KsError as error:
        raise AssemblyError(f"Keystone rejected the shim: {error}") from None
    if not encoding:
        raise AssemblyError("Keystone produced no bytes (a silently rejected instruction)")
    return bytes(encoding)


_MODE_DIRECTIVE = re.compile(r"^\s*\.code(32|64)\s*$")
MODE_MARK = "shimgen_mode_"  # labels assemble() adds at each .code32/.code64
DATA_LABEL = "shim_data"  # first label of every set's data template


def mark_modes(source: str) -> tuple[str, dict[str, int]]:
    """The source with a label after every .code32/.code64 directive, and each
    label's mode: where the bytes change from one instruction set to the other."""
    lines, marks = [], {}
    for line in source.splitlines():
        lines.append(line)
        found = _MODE_DIRECTIVE.match(line)
        if found:
            name = f"{MODE_MARK}{len(marks)}"
            marks[name] = int(found.group(1))
            lines.append(f"{name}:")
    return "\n".join(lines) + "\n", marks


def _regions(labels: dict[str, int], marks: dict[str, int]) -> tuple[tuple[int, int], ...]:
    data = labels[DATA_LABEL]
    regions: dict[int, int] = {}
    for name, bits in marks.items():
        if labels[name] < data:
            regions[labels[name]] = bits  # a later directive at the same place wins
    regions[data] = 0
    changes = [(offset, bits) for offset, bits in sorted(regions.items())]
    return tuple(r for n, r in enumerate(changes) if n == 0 or r[1] != changes[n - 1][1])


_LABEL_LINE = re.compile(r"^\s*([A-Za-z_]\w*):", re.M)


def source_labels(source: str) -> tuple[str, ...]:
    """Every label defined in source, in order (numeric local labels are not names)."""
    return tuple(dict.fromkeys(_LABEL_LINE.findall(_COMMENT.sub("", source))))


def display_order(labels: dict[str, int], exported: tuple[str, ...]) -> dict[str, int]:
    """labels by offset; at one offset the name a disassembly shows first: an exported
    label, then any other, "*_end" names (the end of what comes before) last."""

    def rank(name: str) -> tuple[int, int, str]:
        kind = 0 if name in exported else 2 if name.endswith("_end") else 1
        return (labels[name], kind, name)

    return {name: labels[name] for name in sorted(labels, key=rank)}


def assemble(
    layout: dict[str, int], handoff: str = "start-info", single_entry: bool = False
) -> Shim:
    source = render(layout, handoff, single_entry)
    marked, marks = mark_modes(source)
    exported = exported_labels(handoff, single_entry)
    every = tuple(dict.fromkeys((*exported, *source_labels(source))))
    names = (*every, *marks)
    raw = cached_assembly(marked + label_table(names), keystone_assemble)
    size = len(raw) - 8 * len(names)
    if size <= 0:
        raise AssemblyError("the label table is larger than the assembled shim")
    offsets = [
        int.from_bytes(raw[size + 8 * n : size + 8 * n + 8], "little") for n in range(len(names))
    ]
    found = dict(zip(names, offsets, strict=True))
    if any(offset > size for offset in offsets):
        raise AssemblyError(f"label offsets outside the shim: {found}")
    return Shim(
        code=raw[:size],
        labels={name: found[name] for name in exported},
        source=source,
        regions=_regions(found, marks),
        all_labels=display_order({name: found[name] for name in every}, exported),
    )
