"""`inspect` of patched images: shim metadata, shim disassembly, golden regression.

The goldens are snapshots of shimgen's own pytest plugin (shimgen/pytest_plugin.py,
the mechanism users get): `inspect --json` of the patched samples without the
volatile fields (Report.stable_json) in __snapshots__/test_inspect_shim/. After a
reviewed shim change, rewrite them with:
    pytest tests/read/test_inspect_shim.py --shimgen-update
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SAMPLES = ("pv-hello", "pv-highhalf")


def shimgen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shimgen", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "160", "NO_COLOR": "1"},
    )


@pytest.fixture(scope="module")
def patched(samples_build: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("patched")
    images = {}
    for name in SAMPLES:
        target = out / name
        proc = shimgen("patch", str(samples_build / name), "-o", str(target))
        assert proc.returncode == 0, proc.stderr
        images[name] = target
    return images


def inspect_json(path: Path, *extra: str) -> dict[str, Any]:
    proc = shimgen("inspect", "--json", *extra, str(path))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("name", SAMPLES)
def test_golden(name: str, patched: dict[str, Path], samples_build: Path, shim_snapshot) -> None:
    """Segments, sections, notes, verdicts, shim metadata, labels and the whole shim
    disassembly of each patched sample, as the snapshot beside this file holds them;
    the sample's own sha256 is recorded so that a mismatch says whether the sample
    (toolchain, samples/ source) changed too."""
    shim_snapshot(patched[name], source=samples_build / name)


def test_golden_is_the_cli_report(patched: dict[str, Path]) -> None:
    """The snapshot's facts are `inspect --json` less the volatile fields, nothing else."""
    import shimgen

    cli = inspect_json(patched["pv-hello"])
    stable = json.loads(json.dumps(shimgen.inspect(patched["pv-hello"]).stable_json()))
    assert {k: v for k, v in cli.items() if k not in ("path", "sha256")}.keys() == stable.keys()
    assert stable["segments"] == cli["segments"] and stable["verdicts"] == cli["verdicts"]
    assert stable["shim"]["disassembly"] == cli["shim"]["disassembly"]
    assert "original_sha256" in cli["shim"]["metadata"]
    assert "original_sha256" not in stable["shim"]["metadata"]
    shimgen_notes = [n for n in stable["notes"] if n["owner"] == "shimgen"]
    assert shimgen_notes and all(
        n["desc"] == "(decoded under shim.metadata)" for n in shimgen_notes
    )


def test_unpatched_has_no_shim(samples_build: Path) -> None:
    for name in (*SAMPLES, "pvh-hello"):
        assert inspect_json(samples_build / name)["shim"] is None


def test_json_shim_content(patched: dict[str, Path]) -> None:
    shim = inspect_json(patched["pv-highhalf"])["shim"]
    meta = shim["metadata"]
    assert meta["handoff"] == "start-info"
    assert shim["labels_source"] == "plan"
    listing = shim["disassembly"]
    by_label = {insn["label"]: insn for insn in listing if insn["label"]}
    assert by_label["pv_entry"]["address"] == meta["pv_entry"]
    # The PVH entry runs at its physical address in 32-bit mode, up to the far jump.
    assert by_label["pvh_entry"]["address"] == meta["pvh_entry"]
    assert by_label["pvh_entry"]["bits"] == 32
    assert by_label["pvh_long_entry"]["bits"] == 64
    assert any(i["mnemonic"] == "ljmp" and i["bits"] == 32 for i in listing)
    assert by_label["pvh_virtual"]["address"] >= 0xFFFFFFFF80000000
    assert by_label["msg_bad_magic"]["bits"] == 0
    # Every shim byte is listed exactly once.
    assert sum(len(i["bytes"]) // 2 for i in listing) == meta["shim_code_size"] == shim["code_size"]


def test_no_disasm_json(patched: dict[str, Path]) -> None:
    shim = inspect_json(patched["pv-hello"], "--no-disasm")["shim"]
    assert shim["metadata"]["tool_version"] and shim["disassembly"] is None


def test_human_output(patched: dict[str, Path]) -> None:
    shim = inspect_json(patched["pv-hello"])["shim"]
    first_pvh = next(i for i in shim["disassembly"] if i["label"] == "pvh_entry")
    proc = shimgen("inspect", str(patched["pv-hello"]))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Shim (shimgen metadata)" in out and "handoff start-info" in out
    assert f"PVH {shim['metadata']['pvh_entry']:#x}" in out
    assert "Shim disassembly" in out
    pvh_line = next(line for line in out.splitlines() if "pvh_entry:" in line)
    assert f"{first_pvh['address']:#x}" in pvh_line and first_pvh["mnemonic"] in pvh_line
    assert "qword ptr [rsi]" in out  # operands survive rich markup

    hidden = shimgen("inspect", "--no-disasm", str(patched["pv-hello"]))
    assert hidden.returncode == 0, hidden.stderr
    assert "Shim (shimgen metadata)" in hidden.stdout
    assert "Shim disassembly" not in hidden.stdout and "pvh_entry:" not in hidden.stdout


def test_unpatched_human_output_has_no_shim(samples_build: Path) -> None:
    proc = shimgen("inspect", str(samples_build / "pv-hello"))
    assert proc.returncode == 0 and "Shim" not in proc.stdout


def test_corrupt_shim_note_still_inspects(patched: dict[str, Path], tmp_path: Path) -> None:
    data = bytearray(patched["pv-hello"].read_bytes())
    at = data.find(b"shimgen\0")  # the metadata note's name; its desc follows
    assert at > 0
    data[at + 8 : at + 12] = b"\xff\xff\xff\xff"  # format field: no longer 1
    broken = tmp_path / "broken"
    broken.write_bytes(bytes(data))
    # everything is shown, and the status says the image is malformed (as patch says)
    proc = shimgen("inspect", "--json", str(broken))
    assert proc.returncode == 3, proc.stderr
    assert "corrupt" in json.loads(proc.stdout)["shim"]["error"]
    proc = shimgen("inspect", str(broken))
    assert proc.returncode == 3 and "shim metadata unreadable" in proc.stdout
    assert proc.stderr.startswith("shimgen: error: ") and "corrupt" in proc.stderr


def test_hostile_code_regions_are_ignored(patched: dict[str, Path], tmp_path: Path) -> None:
    """A note that parses but whose regions are nonsense (modes that do not exist,
    offsets past the code): inspect and diff still decode, from the entry points."""
    from shimgen.structs.shim_meta import SHIM_META_NOTE_TYPE

    from shimgen.read.image import read_image
    from shimgen.read.shim_view import shim_meta

    data = bytearray(patched["pv-hello"].read_bytes())
    image = read_image(patched["pv-hello"])
    note = next(n for n in image.notes if n.type == SHIM_META_NOTE_TYPE)
    meta = shim_meta(image)
    desc = note.offset + 12 + -(-note.namesz // 4) * 4  # header, name padded to 4
    assert data[desc : desc + len(note.desc)] == note.desc
    # offsets inside the code with modes that do not exist, and one far past it
    wrong = [(n * 16, 7 + n) for n in range(len(meta.code_regions) - 1)] + [(0xFFFFFFF0, 64)]
    meta.code_regions = wrong
    rebuilt = meta.build()
    assert len(rebuilt) == len(note.desc)
    data[desc : desc + len(rebuilt)] = rebuilt
    hostile = tmp_path / "hostile-regions"
    hostile.write_bytes(bytes(data))
    shim = inspect_json(hostile)["shim"]
    assert shim["metadata"]["code_regions"] == [list(r) for r in wrong]
    bits = {line["bits"] for line in shim["disassembly"]}
    assert bits == {0, 32, 64}  # the entry points still say where each mode runs
    proc = shimgen("diff", str(patched["pv-hello"]), str(hostile))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr


def test_inspect_of_a_passthrough_image(samples_build, tmp_path) -> None:
    """pvh-passthrough shims have no PV entry: inspect still lists them, code then data."""
    out = tmp_path / "pvh-hello.universal"
    patched = subprocess.run(
        [
            sys.executable,
            "-m",
            "shimgen",
            "patch",
            str(samples_build / "pvh-hello"),
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert patched.returncode == 0, patched.stderr
    result = subprocess.run(
        [sys.executable, "-m", "shimgen", "inspect", "--json", str(out)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    shim = json.loads(result.stdout)["shim"]
    assert shim["metadata"]["handoff"] == "pvh-passthrough"
    lines = shim["disassembly"]
    assert lines[0]["label"] == "pvh_entry" and lines[0]["bits"] == 32
    assert any(line["mnemonic"] == ".ascii" for line in lines)  # the message bytes are data


def test_overridden_entry_note_is_not_marked_used(patched: dict[str, Path]) -> None:
    """After a patch the kernel's ENTRY (first PT_NOTE) is still in the file, but
    libelf takes the last ENTRY, the shim's: only that one is used."""
    report = inspect_json(patched["pv-hello"], "--no-disasm")
    entries = [n for n in report["xen_notes"]["segments"] if n["name"] == "ENTRY"]
    assert len(entries) == 2, entries
    original, shim = entries
    last_note = max(s["index"] for s in report["segments"] if s["type_name"] == "NOTE")
    assert shim["source"] == f"PT_NOTE[{last_note}]" and shim["used"] is True
    assert shim["overridden_by"] is None
    assert original["used"] is False
    assert original["overridden_by"] == f"PT_NOTE[{last_note}] @ {shim['offset']:#x}"
    assert shim["value"] == report["shim"]["metadata"]["pv_entry"]
    text = shimgen("inspect", "--no-disasm", str(patched["pv-hello"])).stdout
    assert f"overridden by PT_NOTE[{last_note}]" in text


def test_repeated_features_all_count(tmp_path: Path) -> None:
    """FEATURES accumulate in libelf: no FEATURES note overrides another, while the
    first of two ENTRY notes is overridden by the second."""
    from dataclasses import replace

    import imagegen
    from shimgen.structs import XenNote

    from shimgen.read.image import image_from_bytes

    features = tuple(
        imagegen.xen_string(imagegen.XEN_FEATURES, name)
        for name in ("writable_page_tables", "hvm_callback_vector")
    )
    notes = imagegen.pv64_notes(extra=features)
    spec = replace(imagegen.PV64, note_segments=imagegen._in_pt_note(*notes))
    image = image_from_bytes(imagegen.write_elf(spec))
    uses = [u for u in image.note_uses() if u[0].type == XenNote.FEATURES and u[1]]
    assert [u[0].value for u in uses] == ["writable_page_tables", "hvm_callback_vector"], uses
    repeated = image_from_bytes(imagegen.write_elf(imagegen.case("repeated_notes").spec))
    entries = [
        u for u in repeated.note_uses() if u[0].type == XenNote.ENTRY and u[0].source[:3] == "PT_"
    ]
    assert [used for _, used, _ in entries] == [False, True]
    assert entries[0][2] is not None and entries[0][2].startswith(entries[1][0].source)
