"""XTF's pv64 tests (../shared/thirdparty), real PV kernels nobody here wrote, under real
Xen 4.17 in QEMU: unpatched as plain PV (the baseline), and patched as PVH, where the
shim's PV ABI layer (issue 11) must give them the PV machine they were built for.

Each test kernel prints ``Test result: SUCCESS`` when it passes. All the domUs boot in
one rig run (``xl create`` after ``xl create``); each dom0 is a Xen boot of its own, so
only example and five of the tests that must pass as PVH boot as dom0 (DOM0_GROUPS).
docs/pv-abi.md ("XTF pv64 tests", "XTF pv64 tests under PVH") says how each candidate
fares and why the other pv64 tests are left out.

Under PVH only the tests in PVH_PASSING must pass; of the others the test asks that the
shim's PVH path handed over to the kernel and the kernel ran: a line from the kernel or
from the PV ABI layer (which speaks only when the kernel calls it), or, when the kernel
died silently, Xen's dump of the dead vCPU with rip inside the kernel's own code.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from shimgen.read.image import read_image
from shimgen.shim.pv_abi import LINE_PREFIX
from shimgen.verify.boot import BootOptions, BootResult, Verdict, boot
from shimgen.verify.xlboot import DomuJob, boot_domus
from shimgen.write.patch import patch_file

pytestmark = [pytest.mark.xen, pytest.mark.slow]

# pv64 test groups that print SUCCESS unpatched as an xl-pv domU and as a PV dom0 of the
# rig's Xen, and that exercise the PV ABI without leaning on what only Xen's own PV
# page-table code can answer (linear page tables, grant maps by PTE): example first.
CANDIDATES = (
    "example",
    "cpuid",
    "msr",
    "rtm-check",
    "xsa-7",
    "xsa-122",
    "xsa-188",
    "xsa-193",
    "xsa-212",
    "xsa-221",
    "xsa-231",
    "xsa-232",
    "xsa-259",
    "xsa-279",
    "xsa-286",
    "xsa-317",
    "xsa-333",
)
# Those that print SUCCESS patched as PVH, too (a domU and a dom0): every candidate but
# xsa-193, whose wrmsr of a non-canonical FS/GS base faults under Xen's PV emulation of
# wrmsr but not in a PVH guest on the rig's CPU (docs/pv-abi.md, "XTF pv64 tests under
# PVH").
PVH_PASSING: tuple[str, ...] = tuple(group for group in CANDIDATES if group != "xsa-193")
# Each dom0 is a Xen boot of its own (2-3 s idle, about 4 s under load), so as dom0
# (both ways) boot example and five that each lean on a different part of the layer:
# cpuid (Xen's forced-emulation prefix throughout), xsa-7 (a syscall as hypercall),
# xsa-259 (an int the trap table refuses), xsa-279 (update_va_mapping's flushes),
# xsa-286 (mmu_update, mmuext_op pin, multicall). Every test in PVH_PASSING passed as
# a PVH dom0 too when measured (docs/pv-abi.md); all 32 dom0 boots cost ~130 s.
DOM0_GROUPS = ("example", "cpuid", "xsa-7", "xsa-259", "xsa-279", "xsa-286")
assert set(DOM0_GROUPS) <= set(PVH_PASSING)
XTF_SUCCESS = "Test result: SUCCESS"
# Seconds each guest may run: an XTF test ends in well under one second of guest time;
# generous for TCG on a loaded machine.
GUEST_SECONDS = 30
DOM0_SECONDS = 180
XTF_MEMORY_MIB = 128  # what XTF's own xl configs give every test
LAYER = LINE_PREFIX.decode()  # the PV ABI layer's lines: an unhandled call or trap
# Xen's dump of a vCPU it gives up on (a triple fault, a domain_crash): the header names
# the domain, the rip line comes a few lines later.
_DUMP_HEADER = re.compile(r"\*\*\* Dumping Dom(\d+) vcpu#\d+ state")
_DUMP_RIP = re.compile(r"RIP:\s+[0-9a-f]{4}:\[<([0-9a-f]+)>\]")
_DOMAIN_IN_ERROR = re.compile(r"\bd(\d+)v\d+ ")


@pytest.fixture(scope="module")
def kernels(
    xtf: Callable[[str, str], Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, Path]]:
    """group -> (the pv64 test as XTF built it, the same patched by shimgen)."""
    folder = tmp_path_factory.mktemp("xtf-pv64")
    out = {}
    for group in CANDIDATES:
        unpatched = xtf(group, "pv64")
        universal = folder / f"{unpatched.name}.universal"
        assert patch_file(unpatched, universal).plan.pv_abi.on, group
        out[group] = (unpatched, universal)
    return out


@pytest.fixture(scope="module")
def domus(
    kernels: dict[str, tuple[Path, Path]], tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[tuple[str, str], BootResult], str]:
    """Every candidate unpatched as xl-pv and patched as xl-pvh, in one rig run; the
    results by (group, loader) and the rig's serial log."""
    cases = [(group, "xl-pv") for group in CANDIDATES] + [(group, "xl-pvh") for group in CANDIDATES]
    jobs = [
        DomuJob(
            kernels[group][loader == "xl-pvh"],
            loader,
            memory=XTF_MEMORY_MIB,
            timeout=GUEST_SECONDS,
        )
        for group, loader in cases
    ]
    log = tmp_path_factory.mktemp("xtf-rig") / "serial.log"
    results = boot_domus(jobs, log=log)
    return dict(zip(cases, results, strict=True)), log.read_text(errors="replace")


def _output(result: BootResult) -> str:
    return "\n".join(result.guest_lines + result.xen_errors) + f"\n({result.reason})"


def _crash_rips(log: str, domid: int) -> list[int]:
    """The rip of every vCPU dump Xen printed for the domain."""
    rips, dumping = [], False
    for line in log.splitlines():
        header = _DUMP_HEADER.search(line)
        if header is not None:
            dumping = int(header[1]) == domid
            continue
        rip = _DUMP_RIP.search(line)
        if rip is not None and dumping:
            rips.append(int(rip[1], 16))
            dumping = False
    return rips


def _kernel_ran(result: BootResult, log: str, kernel: Path) -> str | None:
    """What shows the kernel's own code ran, or None: a line from the kernel or from the
    PV ABI layer (the shim's own lines otherwise only say why it did not enter the
    kernel), else a crash dump with rip in an executable segment of the kernel."""
    spoken = [
        line
        for line in result.guest_lines
        if line.strip() and (not line.startswith("shimgen: ") or line.startswith(LAYER))
    ]
    if spoken:
        return f"it printed {spoken[0]!r}"
    code = [s for s in read_image(kernel).segments if s.loadable and s.executable]
    for error in result.xen_errors:
        domain = _DOMAIN_IN_ERROR.search(error)
        if domain is None:
            continue
        for rip in _crash_rips(log, int(domain[1])):
            if any(s.vaddr <= rip < s.vaddr + s.memsz for s in code):
                return f"Xen: {error}; rip {rip:#x} in the kernel's code"
    return None


def _check_pvh(group: str, result: BootResult, log: str, kernel: Path) -> None:
    if group in PVH_PASSING:
        assert XTF_SUCCESS in result.guest_lines, _output(result)
        return
    evidence = _kernel_ran(result, log, kernel)
    assert evidence is not None, f"no sign the kernel ran:\n{_output(result)}"


# --- domUs ---------------------------------------------------------------------------


@pytest.mark.parametrize("group", CANDIDATES)
def test_unpatched_passes_as_a_pv_domu(domus, group: str) -> None:
    results, _ = domus
    result = results[(group, "xl-pv")]
    assert XTF_SUCCESS in result.guest_lines, _output(result)
    assert result.verdict is Verdict.OK, _output(result)


@pytest.mark.parametrize("group", CANDIDATES)
def test_patched_as_a_pvh_domu(domus, kernels, group: str) -> None:
    results, log = domus
    _check_pvh(group, results[(group, "xl-pvh")], log, kernels[group][0])


# --- dom0s ---------------------------------------------------------------------------


@pytest.mark.parametrize("group", DOM0_GROUPS)
def test_unpatched_passes_as_a_pv_dom0(kernels, group: str) -> None:
    result = boot(kernels[group][0], BootOptions(loader="xen-pv", timeout=DOM0_SECONDS))
    assert XTF_SUCCESS in result.guest_lines, _output(result)


@pytest.mark.parametrize("group", DOM0_GROUPS)
def test_patched_as_a_pvh_dom0(kernels, tmp_path: Path, group: str) -> None:
    log = tmp_path / "serial.log"
    options = BootOptions(loader="xen-pvh", timeout=DOM0_SECONDS, log=log)
    result = boot(kernels[group][1], options)
    _check_pvh(group, result, log.read_text(errors="replace"), kernels[group][0])
