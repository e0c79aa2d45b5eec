"""`shimgen layout` and `shimgen decode`, run as a user runs them, plus decode's findings."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from shimgen.structs import (
    HVM_START_MAGIC,
    START_INFO_MAGIC,
    StartInfoFlags,
    boot_structures,
    hvm_start_info,
    start_info,
)
from shimgen.structs.decode import UnknownStructure, decode

from shimgen.cli import layout_cmd
from shimgen.errors import BadInput, ExitCode

CMDLINE = b"console=hvc0 root=/dev/xvda [debug]"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    # A wide terminal, so rich never folds a field name the test looks for.
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "shimgen", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *texts: str) -> str:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("shimgen: error: ")
    assert "Traceback" not in result.stderr
    for text in texts:
        assert text in lines[0]
    return lines[0]


# --- dumps ------------------------------------------------------------------------------------


def start_info_values(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "magic": START_INFO_MAGIC[64].ljust(32, b"\0"),
        "nr_pages": 0x8000,
        "shared_info": 0x7F000,
        "flags": 0,
        "store_mfn": 0x1234,
        "store_evtchn": 1,
        "console": {"domU": {"mfn": 0x1235, "evtchn": 2}},
        "pt_base": 0x400000,
        "nr_pt_frames": 4,
        "mfn_list": 0x300000,
        "mod_start": 0,
        "mod_len": 0,
        "cmd_line": CMDLINE.ljust(1024, b"\0"),
        "first_p2m_pfn": 0,
        "nr_p2m_frames": 0,
    }
    return {**values, **changes}


def hvm_values(**changes: Any) -> dict[str, Any]:
    values = {
        "magic": HVM_START_MAGIC,
        "version": 1,
        "flags": 0,
        "nr_modules": 0,
        "modlist_paddr": 0,
        "cmdline_paddr": 0x2000,
        "rsdp_paddr": 0xF0000,
        "memmap_paddr": 0x3000,
        "memmap_entries": 3,
        "reserved": 0,
    }
    return {**values, **changes}


def dump(tmp_path: Path, data: bytes, name: str = "dump.bin") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


# --- layout -------------------------------------------------------------------------------------


def test_layout_table_mentions_fields_holes_and_size() -> None:
    result = run_cli("layout", "start_info")
    assert result.returncode == 0, result.stderr
    for text in (
        "struct start_info",
        "cmd_line",
        "console",
        "domU",
        "info_size",
        "1168",
        "4 bytes hole",
        "xen_pfn_t",
    ):
        assert text in result.stdout, text


def test_layout_without_struct_shows_every_structure() -> None:
    result = run_cli("layout")
    assert result.returncode == 0, result.stderr
    for name in boot_structures():
        assert f"({name})" in result.stdout, name


def test_layout_version_picks_the_variant() -> None:
    v0 = run_cli("layout", "hvm_start_info", "--version", "0")
    assert v0.returncode == 0, v0.stderr
    assert "40 bytes" in v0.stdout and "memmap_paddr" not in v0.stdout
    pv32 = run_cli("layout", "start_info", "--version", "32")
    assert "1112 bytes" in pv32.stdout


def test_layout_json_gives_the_engine_layout() -> None:
    result = run_cli("layout", "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert list(data) == list(boot_structures())
    for name, record in boot_structures().items():
        fields = [(f["path"], f["offset"], f["size"]) for f in data[name]["fields"]]
        assert fields == [(leaf.path, leaf.offset, leaf.size) for leaf in record.layout()]
        assert data[name]["size"] == record.size
    holes = [
        (gap["offset"], gap["size"]) for gap in data["start_info"]["gaps"] if gap["kind"] == "hole"
    ]
    assert holes == [(52, 4), (68, 4)]  # after flags and after store_evtchn
    padding = [
        (gap["offset"], gap["size"], gap["in"])
        for gap in data["start_info"]["gaps"]
        if gap["kind"] == "padding"
    ]
    assert padding == [(84, 4, "console.domU")]  # the union's domU view ends at 84


@pytest.mark.parametrize("args", [(), ("hvm_start_info", "--version", "0")])
def test_layout_c_output_compiles(tmp_path: Path, args: tuple[str, ...]) -> None:
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed: apt-get install gcc")
    result = run_cli("layout", *args, "--format", "c")
    assert result.returncode == 0, result.stderr
    header = tmp_path / "shimgen_boot.h"
    header.write_text(result.stdout)
    user = tmp_path / "user.c"
    user.write_text('#include "shimgen_boot.h"\nint shimgen_user;\n')
    gcc = subprocess.run(
        ["gcc", "-std=c11", "-Wall", "-Werror", "-fsyntax-only", str(user)],
        capture_output=True,
        text=True,
    )
    assert gcc.returncode == 0, gcc.stderr
    if args:
        assert "struct shimgen_hvm_start_info_v0 {" in result.stdout
        assert "struct shimgen_start_info " not in result.stdout


def test_layout_unknown_struct_is_a_usage_error() -> None:
    line = assert_one_line_error(run_cli("layout", "start_inf"), ExitCode.USAGE, "start_inf")
    for name in boot_structures():
        assert name in line


@pytest.mark.parametrize(
    "args",
    [
        ("hvm_modlist_entry", "--version", "1"),
        ("hvm_start_info", "--version", "2"),
        ("--version", "1"),
    ],
)
def test_layout_bad_version_is_a_usage_error(args: tuple[str, ...]) -> None:
    assert_one_line_error(run_cli("layout", *args), ExitCode.USAGE)


# --- decode ---------------------------------------------------------------------------------------


def test_decode_good_start_info(tmp_path: Path) -> None:
    values = start_info_values(flags=StartInfoFlags.PRIVILEGED | StartInfoFlags.INITDOMAIN)
    path = dump(tmp_path, b"\xee" * 0x40 + start_info(64).build(values))
    result = run_cli("decode", "start_info", path, "--offset", "0x40")
    assert result.returncode == 0, result.stdout + result.stderr
    assert CMDLINE.decode() in result.stdout
    assert "SIF_PRIVILEGED | SIF_INITDOMAIN" in result.stdout
    assert "no problems found" in result.stdout


def test_decode_bad_magic_exits_1_and_says_so(tmp_path: Path) -> None:
    values = start_info_values(magic=b"xen-2.0-x86_64".ljust(32, b"\0"))
    path = dump(tmp_path, start_info(64).build(values))
    result = run_cli("decode", "start_info", path)
    assert result.returncode == ExitCode.FAILED, result.stderr
    assert "bad magic 'xen-2.0-x86_64'" in result.stdout


def test_decode_bad_hvm_magic_json(tmp_path: Path) -> None:
    path = dump(tmp_path, hvm_start_info(1).build(hvm_values(magic=0x12345678)))
    result = run_cli("decode", "hvm_start_info", path, "--json")
    assert result.returncode == ExitCode.FAILED, result.stderr
    data = json.loads(result.stdout)
    assert [finding["code"] for finding in data["findings"]] == ["bad-magic"]
    assert data["fields"][0] == {
        "path": "magic",
        "offset": 0,
        "size": 4,
        "type": "uint32_t",
        "value": 0x12345678,
        "meaning": f"expected {HVM_START_MAGIC:#x}",
    }


def test_decode_hvm_version_comes_from_the_dump(tmp_path: Path) -> None:
    v0 = hvm_start_info(0).build(
        {
            k: v
            for k, v in hvm_values(version=0).items()
            if k in {leaf.path for leaf in hvm_start_info(0).layout()}
        }
    )
    result = run_cli("decode", "hvm_start_info", dump(tmp_path, v0), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["structure"] == "hvm_start_info_v0"
    # Asked for v1 explicitly, the 40-byte v0 dump is too short: input error.
    forced = run_cli("decode", "hvm_start_info", dump(tmp_path, v0), "--version", "1")
    assert_one_line_error(forced, ExitCode.BAD_INPUT, "needs 56 bytes", "only 40 available")


def test_decode_truncated_dump_exits_3_with_one_line(tmp_path: Path) -> None:
    path = dump(tmp_path, start_info(64).build(start_info_values())[:100])
    result = run_cli("decode", "start_info", path)
    assert_one_line_error(result, ExitCode.BAD_INPUT, "needs 1168 bytes", "only 100 available")
    assert result.stdout == ""


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "offset"])
def test_decode_unreadable_input_exits_3(tmp_path: Path, case: str) -> None:
    args = {
        "missing": [str(tmp_path / "nope.bin")],
        "directory": [str(tmp_path)],
        "empty": [dump(tmp_path, b"", "empty.bin")],
        "offset": [dump(tmp_path, bytes(64), "short.bin"), "--offset", "0x1000"],
    }[case]
    assert_one_line_error(run_cli("decode", "hvm_start_info", *args), ExitCode.BAD_INPUT)


def test_decode_unknown_struct_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("decode", "hvm_start", dump(tmp_path, bytes(64)))
    assert_one_line_error(result, ExitCode.USAGE, "hvm_start_info")


def test_every_option_has_help() -> None:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers()
    layout_cmd.register(commands)
    for name, sub in commands.choices.items():
        assert sub.description, name
        for action in sub._actions:
            assert action.help, f"{name} {action.dest}"


def test_command_module_imports_no_rich_or_construct() -> None:
    # Every shimgen command builds this module's parsers: keep its imports light.
    code = (
        "import sys, shimgen.cli.layout_cmd; "
        "print(sorted(m for m in ('rich', 'construct') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


# --- findings, straight from the decoder ------------------------------------------------------


def codes(name: str, data: bytes, **kwargs: Any) -> list[str]:
    return [finding.code for finding in decode(name, data, **kwargs).findings]


def test_clean_structures_have_no_findings() -> None:
    assert codes("start_info", start_info(64).build(start_info_values())) == []
    assert codes("hvm_start_info", hvm_start_info(1).build(hvm_values())) == []


def test_start_info_findings() -> None:
    build = start_info(64).build
    assert codes("start_info", build(start_info_values(flags=0x20 | 0x100))) == ["unknown-flags"]
    assert codes("start_info", build(start_info_values(cmd_line=b"x" * 1024))) == [
        "unterminated-string"
    ]
    magic32 = START_INFO_MAGIC[32].ljust(32, b"\0")
    # A 32-bit guest's magic under the 64-bit layout says which layout to use instead.
    assert codes("start_info", build(start_info_values(magic=magic32)), version=64) == [
        "word-size-mismatch"
    ]


def test_start_info_word_size_from_the_magic() -> None:
    data = start_info(32).build(start_info_values(magic=START_INFO_MAGIC[32].ljust(32, b"\0")))
    decoded = decode("start_info", data)
    assert decoded.name == "start_info_x86_32" and decoded.clean
    assert decoded.field("cmd_line").value.startswith(CMDLINE)


def test_hvm_start_info_findings() -> None:
    build = hvm_start_info(1).build
    assert codes("hvm_start_info", build(hvm_values(reserved=1))) == ["reserved-nonzero"]
    assert codes("hvm_start_info", build(hvm_values(version=7))) == ["unknown-version"]
    assert codes("hvm_start_info", build(hvm_values(nr_modules=2))) == ["missing-table"]
    assert codes("hvm_start_info", build(hvm_values(version=0)), version=1) == ["version-mismatch"]
    both = codes("hvm_start_info", build(hvm_values(magic=0, flags=1 << 20)))
    assert both == ["bad-magic", "unknown-flags"]  # in layout order


def test_table_entry_findings() -> None:
    modlist = boot_structures()["hvm_modlist_entry"]
    entry = modlist.build({"paddr": 1, "size": 2, "cmdline_paddr": 0, "reserved": 5})
    assert codes("hvm_modlist_entry", entry) == ["reserved-nonzero"]
    memmap = boot_structures()["hvm_memmap_table_entry"]
    ram = decode(
        "hvm_memmap_table_entry",
        memmap.build({"addr": 0, "size": 0x9F000, "type": 1, "reserved": 0}),
    )
    assert ram.clean and ram.field("type").meaning == "RAM"


def test_decode_errors_are_typed() -> None:
    with pytest.raises(BadInput, match="needs 56 bytes at offset 0x8, only 8 available"):
        decode("hvm_start_info", bytes(16), offset=8, version=1)
    with pytest.raises(UnknownStructure, match="valid names"):
        decode("nope", bytes(64))
