"""samples/pv-classic, a PV kernel written the way PV unikernels are, through `shimgen
patch` and the emulated PVH boot: patch gives it the PV ABI layer by default, and
under PVH the layer's handlers take it through its steps (each step one line,
tests/pvclassic.py). Its real PV boots are in tests/verify (xen-pv dom0, xl-pv domU).
"""

from __future__ import annotations

from pathlib import Path

import pvclassic
import pytest
from pvkernel import UNHANDLED
from shimgen.structs import xen_abi as abi
from shimgen.structs.harness import REPORT_PREFIX

from shimgen import api
from shimgen.verify.console import parse_report

# The PV-only hypercalls pv-classic's code calls into its page (samples/pv-classic),
# in slot order: the scan must find each, and they turn the layer on.
PV_ONLY_CALLS = (
    "set_trap_table",
    "mmu_update",
    "set_gdt",
    "stack_switch",
    "set_callbacks",
    "update_va_mapping",
    "iret",
    "callback_op",
)


@pytest.fixture(scope="module")
def universal(samples_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pv-classic") / "pv-classic.universal"
    api.patch(samples_build / "pv-classic", out)
    return out


@pytest.fixture(scope="module")
def pvh_run(universal: Path) -> api.EmulateResult:
    return api.emulate(universal, "pvh", run_kernel=True)


def test_patch_turns_the_pv_abi_layer_on_for_its_pv_only_calls(
    samples_build: Path, tmp_path: Path
) -> None:
    source = samples_build / "pv-classic"
    calls = api.inspect(source).to_json()["hypercalls"]["calls"]
    assert [c["name"] for c in calls if c["under_pvh"] == "pv-only"] == list(PV_ONLY_CALLS)
    plan = api.patch(source, tmp_path / "out", dry_run=True).to_json()
    assert plan["pv_abi"]["on"] is True
    assert plan["pv_abi"]["reason"] == "the kernel calls PV-only hypercalls: " + ", ".join(
        PV_ONLY_CALLS
    )


def test_under_emulated_pvh_it_passes_the_steps_the_layer_answers(
    pvh_run: api.EmulateResult,
) -> None:
    lines = pvh_run.debug_output.decode().splitlines()
    report, done = parse_report(lines)
    # it ran to its report's end and its shutdown (which the emulated Xen refuses:
    # the kernel then spins, as a PV kernel that cannot hlt does)
    assert done and pvh_run.outcome == "halted", (pvh_run.outcome, lines[-5:])
    assert int(report["mode"]) == abi.BootMode.XEN_PVH
    passed = pvclassic.passing(lines)
    assert set(pvclassic.PVH_PASSING) <= set(passed), pvclassic.steps(lines)
    assert set(passed) <= set(pvclassic.PV_STEPS + pvclassic.DOMU_STEPS)


def test_under_emulated_pvh_its_report_reaches_its_console_ring(
    pvh_run: api.EmulateResult,
) -> None:
    """A domU's report goes to the console ring it finds through the M2P; the emulated
    console backend drains it on each notify, as xenconsoled does."""
    console = pvh_run.console_output.decode().splitlines()
    assert "shimgen-sample: step.console_ring=ok" in console
    assert console[-1] == "shimgen-sample: done"


# Steps that make one PV-only hypercall (callback_op: its first) and report its result
ONE_CALL_STEPS = ("set_trap_table", "set_callbacks", "callback_op", "stack_switch")
ONE_CALL_STEPS += ("update_va_mapping",)


def test_under_emulated_pvh_a_call_nothing_answers_names_itself(
    pvh_run: api.EmulateResult,
) -> None:
    """A step whose hypercall got -ENOSYS follows the layer's line naming that call."""
    lines = pvh_run.debug_output.decode().splitlines()
    verdicts = pvclassic.steps(lines)
    refused = [name for name in ONE_CALL_STEPS if verdicts[name] == f"fail rc=-{abi.ENOSYS}"]
    for name in refused:
        at = lines.index(f"{REPORT_PREFIX}step.{name}={verdicts[name]}")
        number = int(abi.Hypercall[name.upper()])
        assert lines[at - 1] + "\n" == UNHANDLED.format(number, name)


def test_under_emulated_pvh_its_trap_frames_are_xens(
    pvh_run: api.EmulateResult, universal: Path
) -> None:
    """The frames the shim builds at CPL 0 (asm_templates/36_pv_traps.S) hold what Xen
    shows a PV kernel: the probe's rip, rcx and r11 on top, cs 0xe030 with the saved
    event mask, IF clear while events are masked, ss 0xe02b."""
    frames = pvclassic.trap_frames(pvh_run.debug_output.decode().splitlines())
    pvclassic.assert_frames(frames, universal, ("bp", "ud", "de", "gp"))
