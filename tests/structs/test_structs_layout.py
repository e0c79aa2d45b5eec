"""Boot-structure layouts against gcc's view of Xen's real public headers.

Xen's headers come from Debian's libxen-dev (/usr/include/xen). For every structure
the layout engine knows, a C file with one offsetof/sizeof per leaf is generated
from ``Record.layout()`` (a new field is checked without touching this file),
compiled to assembly only (nothing runs, so -m32 works without a 32-bit libc) and
the numbers are read back from the ``.long`` directives.

The x86_32 start_info is checked twice, independently: xen/xen.h compiled with
-m32, and xen/foreign/x86_32.h (the explicit-width copy Xen's tools use) on -m64.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from shimgen.structs import (
    HVM_START_MAGIC,
    MAX_GUEST_CMDLINE,
    SIF_PM_MASK,
    E820Type,
    Field,
    Record,
    StartInfoFlags,
    boot_structures,
)
from shimgen.structs.cheader import c_struct_name, render_header
from shimgen.structs.clayout import U32, U64, CharArray
from valuetree import leaf_paths

INCLUDE = Path("/usr/include")
XEN_H = "xen/xen.h"
HVM_H = "xen/arch-x86/hvm/start_info.h"
FOREIGN_32 = "xen/foreign/x86_32.h"
FOREIGN_64 = "xen/foreign/x86_64.h"
# A guest built today asks for the newest interface; the layouts are the same in all.
XEN_DEFINES = ("-D__XEN_INTERFACE_VERSION__=__XEN_LATEST_INTERFACE_VERSION__",)
CFLAGS = ("-Wall", "-Wextra", "-Werror", "-ffreestanding")
C11 = "-std=c11"
# xen/foreign/x86_64.h spells its 8-byte alignment with a GNU attribute, and only
# outside strict ISO mode (otherwise it expands to FIXME on purpose).
GNU11 = "-std=gnu11"


@dataclass(frozen=True)
class XenView:
    """How Xen's headers spell one of our structures, for one ABI."""

    cli_name: str
    c_type: str
    abi: str  # "-m64" or "-m32"
    header: str
    size_expr: str = ""  # when Xen has no type of exactly this size (hvm_start_info v0)
    std: str = C11

    @property
    def id(self) -> str:
        return f"{self.cli_name}:{self.c_type}:{self.abi}"


_HVM_V0_SIZE = "offsetof(struct hvm_start_info, memmap_paddr)"  # v1 appended from here
XEN_VIEWS = (
    XenView("start_info", "start_info_t", "-m64", XEN_H),
    XenView("start_info", "struct start_info_x86_64", "-m64", FOREIGN_64, std=GNU11),
    # The foreign header exists to read a 64-bit guest's struct from any ABI.
    XenView("start_info", "struct start_info_x86_64", "-m32", FOREIGN_64, std=GNU11),
    XenView("start_info_x86_32", "start_info_t", "-m32", XEN_H),
    XenView("start_info_x86_32", "struct start_info_x86_32", "-m64", FOREIGN_32),
    XenView("hvm_start_info", "struct hvm_start_info", "-m64", HVM_H),
    XenView("hvm_start_info", "struct hvm_start_info", "-m32", HVM_H),
    XenView("hvm_start_info_v0", "struct hvm_start_info", "-m64", HVM_H, _HVM_V0_SIZE),
    XenView("hvm_start_info_v0", "struct hvm_start_info", "-m32", HVM_H, _HVM_V0_SIZE),
    XenView("hvm_modlist_entry", "struct hvm_modlist_entry", "-m64", HVM_H),
    XenView("hvm_modlist_entry", "struct hvm_modlist_entry", "-m32", HVM_H),
    XenView("hvm_memmap_table_entry", "struct hvm_memmap_table_entry", "-m64", HVM_H),
    XenView("hvm_memmap_table_entry", "struct hvm_memmap_table_entry", "-m32", HVM_H),
)
# Where each structure's bytes are checked against gcc: the ABI a guest reads it in.
NATIVE_VIEW = {
    "start_info": XEN_VIEWS[0],
    "start_info_x86_32": XEN_VIEWS[3],
    "hvm_start_info": XEN_VIEWS[5],
    "hvm_start_info_v0": XEN_VIEWS[7],
    "hvm_modlist_entry": XEN_VIEWS[9],
    "hvm_memmap_table_entry": XEN_VIEWS[11],
}


# --- compiling without running --------------------------------------------------------------


@cache
def _tools_ok() -> None:
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed: apt-get install gcc")
    if not (INCLUDE / HVM_H).exists():
        pytest.fail("Xen's public headers are needed: apt-get install libxen-dev")


@cache
def m32_works() -> bool:
    """Whether this gcc can compile -m32 freestanding code (no multilib needed for -S)."""
    result = subprocess.run(
        ["gcc", "-m32", C11, *CFLAGS, "-S", "-o", "-", "-x", "c", "-"],
        input="#include <stdint.h>\nuint64_t probe;\n",
        capture_output=True,
        text=True,
    )
    return result.returncode == 0


def need_abi(abi: str) -> None:
    _tools_ok()
    if abi == "-m32" and not m32_works():
        pytest.skip("gcc cannot compile -m32 freestanding code here")


def compile_c(source: str, abi: str, *extra: str, std: str = C11) -> str:
    """Assembly gcc makes of ``source``; a failed compile fails the test with its errors."""
    result = subprocess.run(
        ["gcc", abi, std, *CFLAGS, *XEN_DEFINES, *extra, "-S", "-o", "-", "-x", "c", "-"],
        input=source,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.fail(f"gcc {abi} failed:\n{result.stderr}\n--- source ---\n{source}")
    return result.stdout


def read_array(assembly: str, symbol: str) -> list[int]:
    """The values of ``const unsigned int symbol[]`` from gcc's assembly output."""
    values: list[int] = []
    lines = iter(assembly.splitlines())
    for line in lines:
        if line.strip() == f"{symbol}:":
            break
    else:
        raise AssertionError(f"{symbol} not found in gcc's output")
    for line in lines:
        directive, _, operand = line.strip().replace("\t", " ").partition(" ")
        if directive == ".long":
            values.append(int(operand.strip(), 0))
        elif directive == ".zero":  # gcc folds runs of zeros
            values += [0] * (int(operand.strip(), 0) // 4)
        else:
            break
    return values


def probe(abi: str, prelude: str, expressions: list[str], std: str = C11) -> list[int]:
    source = (
        "#include <stddef.h>\n#include <stdint.h>\n"
        + prelude
        + "\nconst unsigned int shimgen_probe[] = {\n    "
        + ",\n    ".join(f"(unsigned int)({expr})" for expr in expressions)
        + "\n};\n"
    )
    values = read_array(compile_c(source, abi, std=std), "shimgen_probe")
    assert len(values) == len(expressions)
    return values


# --- Xen's layout as gcc sees it --------------------------------------------------------------


@dataclass(frozen=True)
class GccLayout:
    size: int
    leaves: dict[str, tuple[int, int]]  # path -> (offset, size)


def gcc_layout(view: XenView, record: Record) -> GccLayout:
    need_abi(view.abi)
    paths = [leaf.path for leaf in record.layout()]
    expressions = [view.size_expr or f"sizeof({view.c_type})"]
    for path in paths:
        expressions += [f"offsetof({view.c_type}, {path})", f"sizeof((({view.c_type} *)0)->{path})"]
    values = probe(view.abi, f"#include <{view.header}>\n", expressions, view.std)
    pairs = values[1:]
    leaves = {path: (pairs[2 * i], pairs[2 * i + 1]) for i, path in enumerate(paths)}
    return GccLayout(values[0], leaves)


@cache
def xen_layout(view: XenView) -> GccLayout:
    return gcc_layout(view, boot_structures()[view.cli_name])


def mismatches(record: Record, gcc: GccLayout) -> list[str]:
    """Every leaf (and the size) where the layout engine and gcc disagree."""
    problems = []
    if record.size != gcc.size:
        problems.append(f"sizeof: ours {record.size}, gcc {gcc.size}")
    for leaf in record.layout():
        ours = (leaf.offset, leaf.size)
        if gcc.leaves[leaf.path] != ours:
            problems.append(f"{leaf.path}: ours (offset, size) {ours}, gcc {gcc.leaves[leaf.path]}")
    return problems


def test_every_structure_has_a_xen_view() -> None:
    # A structure added to boot_structures() must be checked against Xen too.
    assert {view.cli_name for view in XEN_VIEWS} == set(boot_structures())
    assert set(NATIVE_VIEW) == set(boot_structures())


@pytest.mark.parametrize("view", XEN_VIEWS, ids=lambda view: view.id)
def test_offsets_and_sizes_match_xen(view: XenView) -> None:
    record = boot_structures()[view.cli_name]
    assert mismatches(record, xen_layout(view)) == []


def test_documented_numbers() -> None:
    """The numbers the comments of xen/include/public/xen.h and
    arch-x86/hvm/start_info.h give, as gcc reads the declarations."""
    start = xen_layout(NATIVE_VIEW["start_info"])
    assert start.size == 1168
    assert start.leaves["console.domU.evtchn"] == (80, 4)
    assert start.leaves["console.dom0.info_size"] == (76, 4)
    assert start.leaves["cmd_line"] == (128, 1024)
    assert start.leaves["nr_p2m_frames"] == (1160, 8)
    assert xen_layout(NATIVE_VIEW["hvm_start_info"]).leaves["reserved"] == (52, 4)
    assert xen_layout(NATIVE_VIEW["hvm_start_info_v0"]).size == 40
    assert xen_layout(NATIVE_VIEW["hvm_modlist_entry"]).size == 32
    assert xen_layout(NATIVE_VIEW["hvm_memmap_table_entry"]).leaves["type"] == (16, 4)


def test_the_check_catches_a_wrong_layout() -> None:
    # The comparison itself must be able to fail: declare the memmap type 8 bytes wide.
    wrong = Record(
        "hvm_memmap_table_entry",
        (Field("addr", U64), Field("size", U64), Field("type", U64), Field("reserved", U32)),
    )
    problems = mismatches(wrong, gcc_layout(NATIVE_VIEW["hvm_memmap_table_entry"], wrong))
    assert [problem.split(":")[0] for problem in problems] == ["sizeof", "type", "reserved"]


# --- field names, in order, from the header text ------------------------------------------------


def _leaf_names_in_header(text: str, tag: str) -> list[str]:
    """Leaf member names of ``struct tag`` in a C header, in declaration order."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    start = text.index(f"struct {tag} {{") + len(f"struct {tag} {{")
    depth, end = 1, start
    while depth:
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        end += 1
    body = "\n".join(line for line in text[start : end - 1].splitlines() if "#" not in line)
    names = []
    for chunk in body.split(";"):
        if chunk.rfind("}") > chunk.rfind("{"):
            continue  # "} domU": the name of a nested aggregate, not a leaf
        declaration = chunk[chunk.rfind("{") + 1 :].strip()
        if declaration:
            names.append(re.search(r"(\w+)\s*(\[[^\]]*\])?$", declaration).group(1))
    return names


NAME_SOURCES = (
    ("start_info", XEN_H, "start_info"),
    ("start_info_x86_32", FOREIGN_32, "start_info_x86_32"),
    ("hvm_start_info", HVM_H, "hvm_start_info"),
    ("hvm_start_info_v0", HVM_H, "hvm_start_info"),
    ("hvm_modlist_entry", HVM_H, "hvm_modlist_entry"),
    ("hvm_memmap_table_entry", HVM_H, "hvm_memmap_table_entry"),
)


@pytest.mark.parametrize(("name", "header", "tag"), NAME_SOURCES, ids=[s[0] for s in NAME_SOURCES])
def test_field_names_match_xen_header(name: str, header: str, tag: str) -> None:
    # Offsets alone would miss a field we never declared at the very end of a struct.
    _tools_ok()
    ours = [leaf.path.rsplit(".", 1)[-1] for leaf in boot_structures()[name].layout()]
    theirs = _leaf_names_in_header((INCLUDE / header).read_text(), tag)
    if name == "hvm_start_info_v0":
        theirs = theirs[: len(ours)]  # v0 is the first part of the struct
    assert ours == theirs


# --- constants ------------------------------------------------------------------------------------


def test_constants_match_xen() -> None:
    need_abi("-m64")
    pairs = [(f"SIF_{bit.name}", int(bit)) for bit in StartInfoFlags]
    pairs += [("SIF_PM_MASK", SIF_PM_MASK), ("XEN_HVM_START_MAGIC_VALUE", HVM_START_MAGIC)]
    pairs += [(f"XEN_HVM_MEMMAP_TYPE_{kind.name}", int(kind)) for kind in E820Type]
    pairs += [("MAX_GUEST_CMDLINE", MAX_GUEST_CMDLINE)]
    prelude = f"#include <{XEN_H}>\n#include <{HVM_H}>\n"  # probe() includes stdint.h first
    values = probe("-m64", prelude, [name for name, _ in pairs])
    assert dict(zip([name for name, _ in pairs], values, strict=True)) == dict(pairs)


# --- the construct writes bytes where gcc puts the fields -----------------------------------


def _pattern(path: str, size: int) -> bytes:
    """Bytes unique to one field, so a value landing at the wrong offset shows."""
    digest = hashlib.sha256(path.encode()).digest()
    return (digest * (size // len(digest) + 1))[:size]


def _member_options(member: Field, prefix: str) -> list[dict[str, Any]]:
    path = f"{prefix}{member.name}"
    if isinstance(member.type, Record):
        return [{member.name: tree} for tree in _value_trees(member.type, f"{path}.")]
    raw = _pattern(path, member.type.size)
    value = raw if isinstance(member.type, CharArray) else int.from_bytes(raw, "little")
    return [{member.name: value}]


def _value_trees(record: Record, prefix: str = "") -> list[dict[str, Any]]:
    """Build inputs with a distinct value per leaf, one per choice of union member."""
    if record.kind == "union":  # the construct builds one member of a union at a time
        return [option for member in record.fields for option in _member_options(member, prefix)]
    trees: list[dict[str, Any]] = [{}]
    for member in record.fields:
        trees = [{**tree, **option} for tree in trees for option in _member_options(member, prefix)]
    return trees


@pytest.mark.parametrize("name", list(boot_structures()))
def test_construct_builds_at_gcc_offsets(name: str) -> None:
    record = boot_structures()[name]
    gcc = xen_layout(NATIVE_VIEW[name])
    trees = _value_trees(record)
    # Between them the builds cover every leaf, each union member included.
    assert {path for tree in trees for path in leaf_paths(tree)} == {
        leaf.path for leaf in record.layout()
    }
    for tree in trees:
        built = record.build(tree)
        assert len(built) == gcc.size
        untouched = bytearray(built)
        for path in leaf_paths(tree):
            offset, size = gcc.leaves[path]
            assert built[offset : offset + size] == _pattern(path, size), path
            untouched[offset : offset + size] = bytes(size)
        assert untouched == bytes(gcc.size), "padding must build as zeros"


# --- the generated C header -----------------------------------------------------------------


ABIS = ("-m64", "-m32")


@pytest.mark.parametrize("abi", ABIS)
def test_header_compiles_with_its_asserts(abi: str) -> None:
    need_abi(abi)
    header = render_header()
    assert header.count("_STATIC_ASSERT(offsetof(") == sum(
        len(record.layout()) for record in boot_structures().values()
    )
    compile_c(header + "int shimgen_unused;\n", abi, "-Wpedantic")


def test_header_works_as_cplusplus_and_assembly() -> None:
    _tools_ok()
    header = render_header()
    if shutil.which("g++"):
        cxx = subprocess.run(
            ["g++", "-std=c++11", "-Wall", "-Werror", "-fsyntax-only", "-x", "c++", "-"],
            input=header,
            capture_output=True,
            text=True,
        )
        assert cxx.returncode == 0, cxx.stderr
    # Assembly sees only the macros: no C may leak outside #ifndef __ASSEMBLER__.
    source = header + "movl $SHIMGEN_START_INFO_CMD_LINE_OFFSET, %eax\n"
    asm = subprocess.run(
        ["gcc", "-c", "-x", "assembler-with-cpp", "-o", "/dev/null", "-"],
        input=source,
        capture_output=True,
        text=True,
    )
    assert asm.returncode == 0, asm.stderr


def test_header_asserts_can_fail() -> None:
    need_abi("-m64")
    header = render_header(["hvm_memmap_table_entry"])
    broken = header.replace("type) == 16", "type) == 20")
    assert broken != header
    result = subprocess.run(
        ["gcc", "-m64", C11, *CFLAGS, "-fsyntax-only", "-x", "c", "-"],
        input=broken,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "hvm_memmap_table_entry.type: offset" in result.stderr


@pytest.mark.parametrize("view", XEN_VIEWS, ids=lambda view: view.id)
def test_header_matches_xen_in_one_translation_unit(view: XenView) -> None:
    """shimgen's header next to Xen's: no clashes, and every offset and size equal."""
    need_abi(view.abi)
    record = boot_structures()[view.cli_name]
    ours = f"struct {c_struct_name(view.cli_name)}"
    macro = f"SHIMGEN_{view.cli_name.upper()}"
    checks = [
        f"sizeof({ours}) == {view.size_expr or f'sizeof({view.c_type})'}",
        f"{macro}_SIZE == sizeof({ours})",
    ]
    for leaf in record.layout():
        mine, xen = f"(({ours} *)0)->{leaf.path}", f"(({view.c_type} *)0)->{leaf.path}"
        offset_macro = f"{macro}_{leaf.path.replace('.', '_').upper()}_OFFSET"
        checks += [
            f"offsetof({ours}, {leaf.path}) == offsetof({view.c_type}, {leaf.path})",
            f"sizeof({mine}) == sizeof({xen})",
            f"{offset_macro} == offsetof({ours}, {leaf.path})",
        ]
    source = (
        "#include <stddef.h>\n#include <stdint.h>\n"
        f"#include <{view.header}>\n#include <{XEN_H}>\n#include <{HVM_H}>\n"
        + render_header()
        + "".join(f'_Static_assert({check}, "{check}");\n' for check in checks)
    )
    compile_c(source, view.abi, std=view.std)


def test_header_constants_match_xen() -> None:
    need_abi("-m64")
    checks = [f"SHIMGEN_SIF_{bit.name} == SIF_{bit.name}" for bit in StartInfoFlags]
    checks += [f"SHIMGEN_E820_{kind.name} == XEN_HVM_MEMMAP_TYPE_{kind.name}" for kind in E820Type]
    checks += [
        "SHIMGEN_SIF_PM_MASK == SIF_PM_MASK",
        "SHIMGEN_HVM_START_MAGIC == XEN_HVM_START_MAGIC_VALUE",
        "SHIMGEN_MAX_GUEST_CMDLINE == MAX_GUEST_CMDLINE",
    ]
    source = (
        f"#include <stdint.h>\n#include <{XEN_H}>\n#include <{HVM_H}>\n"
        + render_header()
        + "".join(f'_Static_assert({check}, "{check}");\n' for check in checks)
    )
    compile_c(source, "-m64")
