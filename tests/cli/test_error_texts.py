"""Error texts that say what happened in plain words: Xen's PV refusal of a PVH-only
kernel, the ELF32 refusal, and a qemu-pvh timeout after QEMU had started."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import imagegen
import pytest

from shimgen.errors import ExitCode
from shimgen.read.check import NOT_A_PV_KERNEL, NOT_GENERIC, evaluate
from shimgen.read.image import image_from_bytes, read_image
from shimgen.verify.boot import BootOptions, boot
from shimgen.verify.console import (
    ConsoleParser,
    End,
    LogTail,
    QemuRun,
    Verdict,
    judge,
    plain_lead,
)

LOGS = Path(__file__).parent.parent / "data" / "logs"


def shimgen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shimgen", *args], capture_output=True, text=True, timeout=120
    )


def test_pvh_only_kernel_leads_with_a_plain_line(samples_build: Path) -> None:
    reasons = evaluate(read_image(samples_build / "pvh-hello")).pv.reasons
    assert reasons[0] == f"{NOT_A_PV_KERNEL}; PVH only"
    assert reasons[1].startswith(NOT_GENERIC)  # Xen's own words follow
    done = shimgen("check", "--mode", "pv", str(samples_build / "pvh-hello"))
    lines = done.stdout.splitlines()
    assert lines[0].endswith(f"pv: {NOT_A_PV_KERNEL}; PVH only")
    assert NOT_GENERIC in lines[1]


def test_a_named_other_loader_gets_no_plain_line() -> None:
    """'Not 'foo' and ''' says what is wrong; only the empty case is explained."""
    case = imagegen.case("loader_not_generic")
    reasons = evaluate(image_from_bytes(imagegen.write_elf(case.spec), "k")).pv.reasons
    assert reasons and reasons[0].startswith(NOT_GENERIC), reasons


def test_xen_panic_on_a_pvh_only_kernel_leads_with_a_plain_line() -> None:
    panic = f"ELF: {NOT_GENERIC} (Not '' and '')"
    assert plain_lead(panic) == f"{NOT_A_PV_KERNEL}. "
    assert plain_lead(f"ELF: {NOT_GENERIC} (Not 'foo' and '')") == ""


def test_elf32_refusal_suggests_the_conversion(samples_build: Path, tmp_path: Path) -> None:
    done = shimgen(
        "patch",
        str(samples_build / "pvh-hello.elf32"),
        "-o",
        str(tmp_path / "o"),
        "--handoff",
        "start-info",
    )
    assert done.returncode == ExitCode.REFUSED
    assert "objcopy -I elf32-i386 -O elf64-x86-64" in done.stderr
    assert len(done.stderr.splitlines()) == 1


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU not installed")
def test_silent_guest_timeout_does_not_blame_qemus_start(tmp_path: Path) -> None:
    """A PVH kernel that halts without a word: QEMU started, the guest said nothing."""
    silent = tmp_path / "silent"
    silent.write_bytes(imagegen.write_elf(imagegen.case("pvh64").spec))
    result = boot(silent, BootOptions("qemu-pvh", timeout=1.5))
    assert result.verdict is Verdict.TIMEOUT
    assert "starting QEMU" not in result.reason
    assert "QEMU started, no output from the guest yet" in result.reason


def test_a_timeout_after_qemu_started_names_that_stage() -> None:
    for xen, stage in ((False, "no output from the guest yet"), (True, "no output from Xen yet")):
        parser = ConsoleParser(xen=xen)
        parser.qemu_started()
        run = QemuRun(status=None, timed_out=True, wall_time=5.0, pid=1, stderr=[], timeout=5)
        verdict, reason = judge(run, parser, End.TIMEOUT)
        assert verdict is Verdict.TIMEOUT
        assert f"QEMU started, {stage}" in reason and "starting QEMU" not in reason


def test_xens_refusal_of_a_pvh_only_dom0_leads_with_a_plain_line() -> None:
    """On the log of a real Xen 4.17 refusing pvh-hello as a PV dom0."""
    parser = ConsoleParser(xen=True)
    for line in LogTail(LOGS / "xen-pv-refused.log").flush():
        parser.feed(line)
    verdict, reason = judge(QemuRun(None, False, 1.0, 1, [], 5), parser, End.XEN_PANIC)
    assert verdict is Verdict.XEN_ERROR
    assert reason.startswith(f"{NOT_A_PV_KERNEL}. Xen panic: ")
    assert NOT_GENERIC in reason
