"""A kernel that already boots both ways (its own ENTRY and PHYS32_ENTRY) keeps its
PVH entry: `patch` refuses it under auto, and an explicit handoff keeps the
kernel's own PHYS32_ENTRY unless --replace-pvh-entry is given. What Xen reads is
checked with libxenguest; a real kernel with both entries boots under QEMU's PVH
loader through its own entry.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import imagegen
import pytest
from shimgen.structs.shim_meta import SHIM_META_OWNER

from shimgen.errors import ExitCode, Refused
from shimgen.read.image import image_from_bytes, read_image
from shimgen.verify import xenparser
from shimgen.verify.boot import BootOptions, Verdict, boot
from shimgen.write.patch import patch_bytes, patch_file, shim_meta

UNIVERSAL = "already universal: ENTRY and PHYS32_ENTRY present"


def shimgen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shimgen", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def both_ways(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """imagegen's kernel with its own PV ENTRY and its own PHYS32_ENTRY."""
    return imagegen.build("pv_and_pvh", tmp_path_factory.mktemp("universal"))


@pytest.fixture(scope="module")
def helper() -> Path:
    if not xenparser.available():
        pytest.skip("libxenguest helper unavailable (gcc, libxen-dev)")
    return xenparser.helper_binary()


def test_auto_refuses_a_kernel_that_boots_both_ways(both_ways: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = shimgen("patch", str(both_ways), "-o", str(out))
    assert result.returncode == ExitCode.REFUSED, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and UNIVERSAL in lines[0] and "--replace-pvh-entry" in lines[0]
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("handoff", ["start-info", "hvm-start-info"])
def test_explicit_handoff_keeps_the_kernels_pvh_entry(
    helper: Path, both_ways: Path, tmp_path: Path, handoff: str
) -> None:
    out = tmp_path / "out"
    kernel_text = imagegen.PV64_VIRT_BASE + imagegen.PHYS_BASE
    entry64 = f"{kernel_text:#x}" if handoff == "hvm-start-info" else None
    plan = patch_file(both_ways, out, handoff=handoff, entry64=entry64).plan
    assert plan.kept_pvh_entry == imagegen.PVH_ENTRY
    assert any("is kept" in warning for warning in plan.warnings)
    pvh = xenparser.parse(out, "pvh")
    assert pvh.accepted_by_elf_loader, pvh.messages
    assert pvh.parms["phys_entry"] == imagegen.PVH_ENTRY  # what Xen enters: the kernel's own
    pv = xenparser.parse(out, "pv")
    assert pv.accepted_by_elf_loader, pv.messages
    assert pv.parms["virt_entry"] == plan.pv_entry  # PV still goes through the shim
    assert shim_meta(read_image(out)).pvh_entry == imagegen.PVH_ENTRY


def test_replace_pvh_entry_points_it_at_the_shim(
    helper: Path, both_ways: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    plan = patch_file(both_ways, out, handoff="start-info", replace_pvh_entry=True).plan
    assert plan.kept_pvh_entry is None
    assert plan.shim_paddr <= plan.pvh_entry < plan.shim_paddr + plan.memsz
    assert xenparser.parse(out, "pvh").parms["phys_entry"] == plan.pvh_entry
    meta = shim_meta(read_image(out))
    assert meta.options["replace_pvh_entry"] is True
    again = patch_bytes(out.read_bytes(), str(out), force=True, handoff="start-info")
    assert again.plan.kept_pvh_entry == imagegen.PVH_ENTRY  # the option is the user's


def test_single_entry_needs_replace_pvh_entry(both_ways: Path, tmp_path: Path) -> None:
    with pytest.raises(Refused, match="--replace-pvh-entry"):
        patch_file(both_ways, tmp_path / "out", handoff="start-info", single_entry=True)


def test_dry_run_names_the_kept_entry(both_ways: Path, tmp_path: Path) -> None:
    result = shimgen(
        "patch", str(both_ways), "-o", str(tmp_path / "o"), "--handoff", "start-info", "--json"
    )
    assert result.returncode == ExitCode.OK, result.stderr
    plan = json.loads(result.stdout)
    assert plan["kept_pvh_entry"] == plan["pvh_entry"] == imagegen.PVH_ENTRY
    notes = {(n["name"], n["action"]) for n in plan["notes"]}
    assert ("PHYS32_ENTRY", "kept") in notes and ("ENTRY", "replaced") in notes


# --- a real kernel with both entries -------------------------------------------------


@pytest.fixture(scope="module")
def real_both_ways(samples_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pv-hello made universal by shimgen, then its metadata note renamed: to every
    reader it is an independent kernel with a working ENTRY and PHYS32_ENTRY."""
    data = bytearray(patch_bytes((samples_build / "pv-hello").read_bytes(), "pv-hello").data)
    owner = SHIM_META_OWNER + b"\0"
    at = data.index(owner)
    data[at : at + len(owner)] = b"x" * (len(owner) - 1) + b"\0"
    assert shim_meta(image_from_bytes(bytes(data))) is None
    path = tmp_path_factory.mktemp("real") / "pv-hello.both-ways"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.qemu
def test_kept_entry_boots_under_qemu_pvh(real_both_ways: Path, tmp_path: Path) -> None:
    own = image_from_bytes(real_both_ways.read_bytes())
    own_entry = next(n.value for n in own.xen_notes if n.name == "PHYS32_ENTRY")
    out = tmp_path / "out"
    plan = patch_file(real_both_ways, out, handoff="start-info").plan
    assert plan.pvh_entry == own_entry
    result = boot(out, BootOptions(loader="qemu-pvh", timeout=120))
    assert result.verdict is Verdict.OK, result.to_json()
    assert result.report["mode"] == "3"
