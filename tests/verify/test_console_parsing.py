"""Console parsing and verdicts, on logs recorded from real boots (tests/data/logs).

The logs were saved with `shimgen boot --log` from Xen 4.17 inside QEMU and from
QEMU's PVH loader, booting the pv-hello sample (patched) and the pvh-hello sample.
No QEMU runs here: these tests pin how a run's end and verdict are read from what
Xen and the guest printed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from shimgen.structs.harness import DEBUG_EXIT_OK

from shimgen.verify.console import (
    ConsoleParser,
    End,
    LogTail,
    QemuRun,
    Verdict,
    end_of,
    judge,
    parse_report,
)

LOGS = Path(__file__).parent.parent / "data" / "logs"


def parse(name: str, xen: bool = True) -> ConsoleParser:
    parser = ConsoleParser(xen=xen)
    for line in LogTail(LOGS / name).flush():
        parser.feed(line)
    return parser


def run(status: int | None = None, timed_out: bool = False) -> QemuRun:
    return QemuRun(status=status, timed_out=timed_out, wall_time=1.0, pid=1, stderr=[], timeout=5)


def verdict_of(parser: ConsoleParser, qemu: QemuRun) -> tuple[End, Verdict, str]:
    end = end_of(qemu, parser)
    verdict, reason = judge(qemu, parser, end)
    return end, verdict, reason


@pytest.mark.parametrize(
    ("log", "mode"), [("xen-pv-poweroff.log", "xen-pv"), ("xen-pvh-poweroff.log", "xen-pvh")]
)
def test_dom0_that_exits_ok_is_ok_with_its_whole_report(log: str, mode: str) -> None:
    """The samples end by writing DEBUG_EXIT_OK to isa-debug-exit (QEMU's status 2V+1),
    so the log itself has no end marker."""
    parser = parse(log)
    assert parser.end is None
    end, verdict, _reason = verdict_of(parser, run(status=2 * DEBUG_EXIT_OK + 1))
    assert (end, verdict) == (End.DEBUG_EXIT, Verdict.OK)
    report, complete = parse_report(parser.guest_lines)
    assert complete and report["result"] == "ok" and report["cmdline"] == "hello"
    assert report["mode_name"] == mode
    assert not any("(XEN)" in line for line in parser.guest_lines)
    assert any("Building a" in line for line in parser.xen_build())


def test_port_e9_lines_lose_their_domain_prefix() -> None:
    parser = ConsoleParser(xen=True)
    for line in ("(XEN) *** Serial input to DOM0", "(d0) shimgen-sample: result=ok"):
        parser.feed(line)
    assert parser.guest_lines == ["shimgen-sample: result=ok"]
    assert parser.stage == "guest running"


def test_a_dom0_fault_is_a_crash_with_xens_reason() -> None:
    parser = parse("xen-pv-crash.log")
    end, verdict, reason = verdict_of(parser, run())
    assert (end, verdict) == (End.DOM0_CRASH, Verdict.CRASHED)
    assert "Unhandled" in reason or "domain_crash" in reason
    assert parse_report(parser.guest_lines)[0]["action"] == "crash"


def test_an_image_xen_refuses_is_a_xen_error_naming_libelfs_message() -> None:
    parser = parse("xen-pv-refused.log")
    assert parser.final  # "Manual reset required": nothing more will come
    end, verdict, reason = verdict_of(parser, run())
    assert (end, verdict) == (End.XEN_PANIC, Verdict.XEN_ERROR)
    assert "Will only load images built for the generic loader" in reason


def test_qemu_pvh_run_is_judged_by_the_debug_exit_value() -> None:
    parser = parse("qemu-pvh-ok.log", xen=False)
    end, verdict, _ = verdict_of(parser, run(status=2 * DEBUG_EXIT_OK + 1))
    assert (end, verdict) == (End.DEBUG_EXIT, Verdict.OK)
    assert parse_report(parser.guest_lines)[0]["mode_name"] == "pvh"
    end, verdict, _ = verdict_of(parser, run(status=2 * (DEBUG_EXIT_OK + 1) + 1))
    assert verdict is Verdict.GUEST_FAILED


def test_a_reset_without_xen_is_a_crash_and_a_timeout_names_the_stage() -> None:
    parser = parse("qemu-pvh-ok.log", xen=False)
    assert verdict_of(parser, run(status=0))[:2] == (End.QEMU_RESET, Verdict.CRASHED)
    end, verdict, reason = verdict_of(ConsoleParser(xen=True), run(timed_out=True))
    assert (end, verdict) == (End.TIMEOUT, Verdict.TIMEOUT)
    assert "no end after 5 s" in reason


def test_a_guest_line_without_newline_is_split_from_xens_next_message() -> None:
    parser = ConsoleParser(xen=True)
    parser.feed("shimgen-sample: result=ok(XEN) Hardware Dom0 halted: halting machine")
    assert parser.guest_lines == ["shimgen-sample: result=ok"]
    assert parser.end is End.DOM0_POWEROFF and parser.final


def test_xens_last_words_without_newline_end_the_wait() -> None:
    parser = ConsoleParser(xen=True)
    parser.peek("(XEN) Manual reset required ('noreboot' specified)")
    assert parser.final
