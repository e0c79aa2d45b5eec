"""The kernel's contract with shimgen, as C: ``shimgen layout --format c``.

The header a kernel includes carries the boot modes the shim passes, the
``shimgen_boot_mode`` declaration, and the report and isa-debug-exit values the boot
harness reads. A C program compiled against the generated header prints them back,
to be compared with the Python values the shim and the harness use. The sample
kernels build against that header (samples/build/shimgen.h): their sources may hold
no copy of these numbers.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import SAMPLES_DIR
from shimgen.structs import harness
from shimgen.structs import xen_abi as abi
from shimgen.structs.cheader import render_header

# The C names a kernel uses, with the Python value each must carry.
CONTRACT: dict[str, int | str] = {
    **{f"SHIMGEN_BOOT_MODE_{mode.name}": int(mode) for mode in abi.BootMode},
    "SHIMGEN_REPORT_PREFIX": harness.REPORT_PREFIX,
    "SHIMGEN_REPORT_DONE": harness.REPORT_DONE,
    "SHIMGEN_DEBUG_EXIT_PORT": harness.DEBUG_EXIT_PORT,
    "SHIMGEN_DEBUG_EXIT_OK": harness.DEBUG_EXIT_OK,
    "SHIMGEN_DEBUG_EXIT_FAIL": harness.DEBUG_EXIT_FAIL,
    "SHIMGEN_DEBUGCON_PORT": abi.DEBUGCON_PORT,
}
SAMPLE_SOURCE_PATTERNS = ("*.c", "*.h", "*.S", "*.ld")


def _need_gcc() -> None:
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed: apt-get install gcc")


def _printer(names: dict[str, int | str]) -> str:
    """A C program printing ``NAME<TAB>value`` for each name; strings in brackets."""
    lines = []
    for name, value in names.items():
        if isinstance(value, str):
            lines.append(f'    printf("{name}\\t[%s]\\n", {name});')
        else:
            lines.append(f'    printf("{name}\\t%lld\\n", (long long){name});')
    body = "\n".join(lines)
    return (
        '#include <stdio.h>\n#include "shimgen.h"\n'
        "int main(void)\n{\n"
        f"{body}\n"
        f'    printf("sizeof {abi.BOOT_MODE_SYMBOL}\\t%zu\\n", sizeof {abi.BOOT_MODE_SYMBOL});\n'
        "    return 0;\n}\n"
    )


def _run_printer(tmp_path: Path, header: str) -> dict[str, str]:
    (tmp_path / "shimgen.h").write_text(header)
    source = tmp_path / "contract.c"
    source.write_text(_printer(CONTRACT))
    program = tmp_path / "contract"
    build = subprocess.run(
        ["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-o", str(program), str(source)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(program)], capture_output=True, text=True, check=True)
    return dict(line.split("\t", 1) for line in run.stdout.splitlines())


def _python_view() -> dict[str, str]:
    view = {
        name: f"[{value}]" if isinstance(value, str) else str(value)
        for name, value in CONTRACT.items()
    }
    view[f"sizeof {abi.BOOT_MODE_SYMBOL}"] = str(abi.BOOT_MODE_TYPE.size)
    return view


def test_header_values_are_the_python_values(tmp_path: Path) -> None:
    _need_gcc()
    assert _run_printer(tmp_path, render_header()) == _python_view()


def test_a_wrong_header_value_is_seen(tmp_path: Path) -> None:
    """The comparison above can fail: a header with one value changed is caught."""
    _need_gcc()
    header = render_header()
    wrong = header.replace(
        f"SHIMGEN_DEBUG_EXIT_OK {harness.DEBUG_EXIT_OK:#x}\n",
        f"SHIMGEN_DEBUG_EXIT_OK {harness.DEBUG_EXIT_OK + 1:#x}\n",
    )
    assert wrong != header
    printed = _run_printer(tmp_path, wrong)
    assert printed["SHIMGEN_DEBUG_EXIT_OK"] == str(harness.DEBUG_EXIT_OK + 1)


def test_every_layout_selection_carries_the_contract() -> None:
    """One structure asked for, or all: the contract lines come with either."""
    for header in (render_header(), render_header(["hvm_start_info"])):
        for name in CONTRACT:
            assert re.search(rf"^#define {name} ", header, re.MULTILINE), name
        assert f" {abi.BOOT_MODE_SYMBOL};" in header


def test_boot_mode_declaration_matches_a_kernel_definition(tmp_path: Path) -> None:
    """A kernel defines the variable the way the samples do; the header's extern agrees
    (a different type would be a conflicting declaration, an error)."""
    _need_gcc()
    source = tmp_path / "kernel.c"
    (tmp_path / "shimgen.h").write_text(render_header())
    c_type = abi.BOOT_MODE_TYPE.fixed_c_name
    source.write_text(
        '#include "shimgen.h"\n'
        f'__attribute__((section(".data"))) {c_type} {abi.BOOT_MODE_SYMBOL} = 0;\n'
    )
    for bits in ("-m64", "-m32"):
        result = subprocess.run(
            [
                "gcc",
                bits,
                "-std=gnu11",
                "-Wall",
                "-Werror",
                "-ffreestanding",
                "-fsyntax-only",
                str(source),
            ],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr


# --- the samples use the generated header, not copies ------------------------------------------


def _sample_sources() -> list[Path]:
    sources = [
        path
        for pattern in SAMPLE_SOURCE_PATTERNS
        for path in SAMPLES_DIR.rglob(pattern)
        if "build" not in path.relative_to(SAMPLES_DIR).parts
    ]
    assert sources, f"no sample sources under {SAMPLES_DIR}"
    return sorted(sources)


def _without_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.DOTALL)
    return re.sub(r"//[^\n]*", " ", text)


def _defined_names(code: str) -> set[str]:
    """Names a C file defines as macros or enumerators."""
    macros = re.findall(r"^\s*#\s*define\s+(\w+)", code, re.MULTILINE)
    enumerators = re.findall(r"\b([A-Z][A-Z0-9_]*)\s*=(?!=)", code)
    return {*macros, *enumerators}


def _copies_a_contract_name(name: str) -> str | None:
    """The contract macro ``name`` restates (MODE_XEN_PV for SHIMGEN_BOOT_MODE_XEN_PV,
    REPORT_PREFIX for SHIMGEN_REPORT_PREFIX), or None."""
    bare = name.removeprefix("SHIMGEN_")
    for contract in CONTRACT:
        tail = contract.removeprefix("SHIMGEN_")
        # whole words only, and more than one: OK alone is not DEBUG_EXIT_OK
        if bare == tail or ("_" in bare and tail.endswith(f"_{bare}")):
            return contract
        if bare.endswith(f"_{tail}"):
            return contract
    return None


def sample_copies(sources: list[Path], root: Path = SAMPLES_DIR) -> list[str]:
    """Every place a sample source restates a value of the contract."""
    numbers = [harness.DEBUG_EXIT_PORT, abi.DEBUGCON_PORT]  # distinctive enough to grep
    number_tokens = re.compile(
        r"\b(?:" + "|".join(f"{n:#x}|{n}" for n in numbers) + r")[uU]?\b", re.IGNORECASE
    )
    found = []
    for path in sources:
        code = _without_comments(path.read_text())
        where = path.relative_to(root)
        for name in sorted(_defined_names(code)):
            copied = _copies_a_contract_name(name)
            if copied:
                found.append(f"{where}: defines {name}, a copy of {copied}")
        if harness.REPORT_PREFIX.strip() in code:
            found.append(f"{where}: spells the report prefix {harness.REPORT_PREFIX!r}")
        found += [f"{where}: port number {m.group()}" for m in number_tokens.finditer(code)]
    return found


def test_samples_keep_no_copy_of_the_contract() -> None:
    assert sample_copies(_sample_sources()) == []


def test_the_copy_check_finds_copies(tmp_path: Path) -> None:
    """What the samples used to hold by hand is found: the check can fail."""
    copy = tmp_path / "sample.h"
    copy.write_text(
        '#define REPORT_PREFIX "shimgen-sample: "\n'
        "enum boot_mode { MODE_XEN_PV = 1, MODE_XEN_PVH = 2 };\n"
        "#define DEBUG_EXIT_PORT 0xf4\n"
        "static void f(void) { outb(0xE9, 1); }  /* 0xe9 in a comment is fine */\n"
    )
    found = [line.split(": ", 1)[1] for line in sample_copies([copy], root=tmp_path)]
    assert found == [
        "defines DEBUG_EXIT_PORT, a copy of SHIMGEN_DEBUG_EXIT_PORT",
        "defines MODE_XEN_PV, a copy of SHIMGEN_BOOT_MODE_XEN_PV",
        "defines MODE_XEN_PVH, a copy of SHIMGEN_BOOT_MODE_XEN_PVH",
        "defines REPORT_PREFIX, a copy of SHIMGEN_REPORT_PREFIX",
        f"spells the report prefix {harness.REPORT_PREFIX!r}",
        "port number 0xf4",
        "port number 0xE9",
    ]


def test_samples_build_against_the_generated_header(samples_build: Path) -> None:
    """`make -C samples` wrote shimgen's header, and the samples include it."""
    assert (samples_build / "shimgen.h").read_text() == render_header()
    sample_h = _without_comments((SAMPLES_DIR / "lib" / "sample.h").read_text())
    assert re.search(r'^#include "shimgen.h"$', sample_h, re.MULTILINE)
    used = "\n".join(_without_comments(path.read_text()) for path in _sample_sources())
    assert [name for name in CONTRACT if not re.search(rf"\b{name}\b", used)] == []
