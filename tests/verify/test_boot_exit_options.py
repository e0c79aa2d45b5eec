"""`boot --exit-on` and `--exit-ok` under QEMU's PVH loader (fast: no Xen); `--shutdown-on`
refused there."""

from __future__ import annotations

from pathlib import Path

import pytest
from shimgen.structs.harness import DEBUG_EXIT_FAIL

from shimgen.cli import main
from shimgen.errors import ExitCode
from shimgen.verify.boot import BootOptions, End, Verdict, boot

pytestmark = [pytest.mark.qemu]


def test_exit_on_ends_a_hanging_guest_with_ok(samples_build: Path) -> None:
    options = BootOptions(
        loader="qemu-pvh", cmdline="sample=hang", exit_on=r"action=han[g]", timeout=30
    )
    result = boot(samples_build / "pvh-hello", options)
    assert result.verdict is Verdict.OK and result.end is End.EXIT_ON
    assert result.wall_time < options.timeout


def test_without_exit_on_the_same_guest_times_out(samples_build: Path) -> None:
    options = BootOptions(loader="qemu-pvh", cmdline="sample=hang", timeout=2)
    result = boot(samples_build / "pvh-hello", options)
    assert result.verdict is Verdict.TIMEOUT


@pytest.mark.parametrize(
    ("exit_ok", "verdict"), [(None, Verdict.GUEST_FAILED), (DEBUG_EXIT_FAIL, Verdict.OK)]
)
def test_exit_ok_names_the_success_value(samples_build: Path, exit_ok, verdict) -> None:
    extra = {} if exit_ok is None else {"exit_ok": exit_ok}
    options = BootOptions(loader="qemu-pvh", cmdline="sample=fail", **extra)
    result = boot(samples_build / "pvh-hello", options)
    assert result.debug_exit == DEBUG_EXIT_FAIL
    assert result.verdict is verdict


def test_exit_ok_is_refused_for_a_domu(samples_build: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["boot", str(samples_build / "pvh-hello"), "--loader", "xl-pvh", "--exit-ok", "1"])
    assert exited.value.code == ExitCode.USAGE
    assert "isa-debug-exit" in capsys.readouterr().err


def test_shutdown_on_is_refused_outside_xl(samples_build: Path, capsys) -> None:
    """Only a domU has a toolstack to ask it to shut down (`xl shutdown`)."""
    image = str(samples_build / "pvh-hello")
    with pytest.raises(SystemExit) as exited:
        main(["boot", image, "--loader", "qemu-pvh", "--shutdown-on", "x"])
    assert exited.value.code == ExitCode.USAGE
    assert "--shutdown-on applies to the xl-* loaders only" in capsys.readouterr().err
    with pytest.raises(ValueError, match="shutdown_on"):
        BootOptions(loader="xen-pvh", shutdown_on="x")
