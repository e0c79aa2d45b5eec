"""Mini-OS (../shared/thirdparty, its PV build) as a real Xen domU both ways, in one xl rig
run: unpatched as `xl-pv`, patched by `shimgen patch` as `xl-pvh` (docs/pv-abi.md, issue
11's Mini-OS item). As PVH it must print what it prints as PV, through its console
ring, up to its application's main, and power off when xl asks it to (a xenstore watch
on control/shutdown: its event channel, the upcall, SCHEDOP_block). Its test
application (CONFIG_TEST) shows the timer: a thread that prints the time every second
(msleep: set_timer_op, then SCHEDOP_block until the timer's event).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from shimgen import api
from shimgen.shim import pv_abi
from shimgen.verify.boot import BootResult
from shimgen.verify.xlboot import DomuJob, boot_domus

pytestmark = [pytest.mark.xen, pytest.mark.slow]

SECONDS = 120  # each guest's own limit; the machine is shared
MAIN = "kernel.c: dummy main: par=0"  # the default application's main (kernel.c)
TICK = "T(s="  # test.c's periodic thread, once a second
# asked to power off once it has printed its main (the default build) or two ticks
AFTER_MAIN = re.escape(MAIN)
AFTER_TWO_TICKS = re.escape(TICK) + ".*" + re.escape(TICK)
# numbers (addresses, frame counts, sizes) differ between the two boots: PV and PVH
# lay out memory differently
NUMBER = re.compile(r"\b(0x)*[0-9a-f]*[0-9][0-9a-f]*\b")


def shape(line: str) -> str:
    return NUMBER.sub("N", line.strip())


def ring_lines(result: BootResult) -> list[str]:
    """The kernel's own lines, without those the layer prints on the debug port."""
    text = pv_abi.LINE_PREFIX.decode()
    return [line.strip() for line in result.guest_lines if not line.startswith(text)]


@pytest.fixture(scope="module")
def booted(
    mini_os: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, BootResult]:
    folder = tmp_path_factory.mktemp("mini-os")
    plain, test = mini_os("pv"), mini_os("pv-test")
    patched, patched_test = folder / "mini-os.universal", folder / "mini-os-test.universal"
    assert api.patch(plain, patched).plan.pv_abi.on
    assert api.patch(test, patched_test).plan.pv_abi.on
    jobs = {
        "pv": DomuJob(plain, "xl-pv", timeout=SECONDS, shutdown_on=AFTER_MAIN),
        "pvh": DomuJob(patched, "xl-pvh", timeout=SECONDS, shutdown_on=AFTER_MAIN),
        "pvh-test": DomuJob(patched_test, "xl-pvh", timeout=SECONDS, shutdown_on=AFTER_TWO_TICKS),
    }
    results = boot_domus(list(jobs.values()), log=folder / "rig.log")
    return dict(zip(jobs, results, strict=True))


def test_as_pvh_it_prints_what_it_prints_as_pv_up_to_its_main(
    booted: dict[str, BootResult],
) -> None:
    pv, pvh = ring_lines(booted["pv"]), ring_lines(booted["pvh"])
    assert MAIN in pv, booted["pv"].to_json()
    assert MAIN in pvh, booted["pvh"].to_json()
    up_to_main = [shape(line) for line in pv[: pv.index(MAIN) + 1]]
    assert len(up_to_main) > 30  # its start of day: memory, console, grant table, threads
    assert [shape(line) for line in pvh[: pvh.index(MAIN) + 1]] == up_to_main
    assert "gnttab_table mapped at 0x100000000000." in pvh  # the demand-map area's start


def test_both_power_off_when_told(booted: dict[str, BootResult]) -> None:
    for name in ("pv", "pvh"):
        result = booted[name]
        assert result.shutdown_reason == "poweroff", result.to_json()
        lines = ring_lines(result)
        assert "Shutdown requested: 0" in lines[lines.index(MAIN) :], result.to_json()
    # the layer answered every call: none unhandled, no unhandled trap
    layer = [line for line in booted["pvh"].guest_lines if line.startswith("shimgen: pv-abi")]
    assert layer == ["shimgen: pv-abi: the kernel shuts down, reason 0x00"]


def test_its_timer_ticks_every_second_as_pvh(booted: dict[str, BootResult]) -> None:
    result = booted["pvh-test"]
    assert result.shutdown_reason == "poweroff", result.to_json()
    ticks = [
        int(match[1])
        for line in ring_lines(result)
        if (match := re.match(r"T\(s=(\d+) us=\d+\)", line))
    ]
    assert len(ticks) >= 2 and ticks[1] - ticks[0] == 1, ticks  # msleep(1000)
    # and its xenbus test talked to xenstore (a reply to its first request)
    assert any(line.startswith("Got a reply, type") for line in ring_lines(result))
