"""What a boot printed and what it means: the console log read line by line, sorted
into guest output and Xen's messages, the end of the run spotted, and the verdict.

Nothing here runs a process: the harness (qemu.py, boot.py, xlboot.py) feeds lines
and a :class:`QemuRun`, and the tests feed logs recorded from real boots
(tests/verify/test_console_parsing.py).

Guest output in Xen's serial log: dom0's console_io writes appear as bare lines,
port 0xe9 writes as ``(dN) `` lines, Xen's own messages as ``(XEN) `` lines.
How a run ends (QEMU's hw/misc/debugexit.c; Xen's noreboot option in
docs/misc/xen-command-line.pandoc): bare QEMU ends when the guest writes to
isa-debug-exit (QEMU exits 2*V+1) or resets (``-no-reboot`` turns a triple fault
into an exit with status 0); under Xen, the guest writes isa-debug-exit (a PV dom0
after PHYSDEVOP_set_iopl), or Xen logs the end of dom0 or its own panic.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..structs.harness import (
    DEBUG_EXIT_FAIL,
    DEBUG_EXIT_OK,
    REPORT_DONE,
    REPORT_PREFIX,
)


class Verdict(enum.StrEnum):
    OK = "ok"  # the guest ended well (and --expect matched)
    MISMATCH = "mismatch"  # the guest ended well but --expect did not match its output
    GUEST_FAILED = "guest-failed"  # the guest reported failure, or asked for a crash/reboot
    CRASHED = "crashed"  # the guest faulted (Xen crashed dom0, triple fault, reset)
    XEN_ERROR = "xen-error"  # Xen refused the image or panicked
    LOADER_ERROR = "loader-error"  # QEMU refused the image or could not start
    TIMEOUT = "timeout"  # still running at the deadline


class End(enum.StrEnum):
    """What the harness saw that ended the run."""

    DEBUG_EXIT = "isa-debug-exit"
    DOM0_POWEROFF = "dom0-poweroff"
    DOM0_CRASH = "dom0-crash"
    DOM0_REBOOT = "dom0-reboot"
    DOM0_SHUTDOWN = "dom0-shutdown"
    XEN_PANIC = "xen-panic"
    QEMU_RESET = "qemu-reset"
    QEMU_EXIT = "qemu-exit"
    TIMEOUT = "timeout"
    EXIT_ON = "exit-on"  # the guest printed --exit-on's regex
    # xl loaders: how the domU ended, as xl reported it
    DOMU_POWEROFF = "domu-poweroff"
    DOMU_REBOOT = "domu-reboot"
    DOMU_CRASH = "domu-crash"
    DOMU_SHUTDOWN = "domu-shutdown"  # another shutdown reason (suspend, watchdog...)
    XL_REFUSED = "xl-refused"  # xl create failed before the domain ran
    RIG_FAILED = "rig-failed"  # Xen or dom0 died, or dom0 never came up


@dataclass
class QemuRun:
    """What a QEMU run left: its exit status (None when the harness ended it), whether
    the deadline passed, and QEMU's own messages."""

    status: int | None
    timed_out: bool
    wall_time: float
    pid: int
    stderr: list[str]
    timeout: float


# --- reading the console ------------------------------------------------------------


class LogTail:
    """Reads a growing log file and hands out complete lines, CR/LF stripped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

    def read_lines(self) -> list[str]:
        try:
            with self.path.open("rb") as stream:
                stream.seek(self.offset)
                chunk = stream.read()
        except FileNotFoundError:  # QEMU has not created it yet
            return []
        self.offset += len(chunk)
        data = self.partial + chunk
        *complete, self.partial = data.split(b"\n")
        return [_decode(line) for line in complete]

    def flush(self) -> list[str]:
        """The last line, even without its newline (QEMU may exit mid-line)."""
        lines = self.read_lines()
        if self.partial:
            lines.append(_decode(self.partial))
            self.partial = b""
        return lines


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").rstrip("\r")


# "(XEN) " starts every Xen line; the space may be gone if a tool trimmed the log.
_XEN_PREFIX = re.compile(r"\(XEN\)(?: |$)")
_DOMAIN_PREFIX = re.compile(r"^\(d\d+\) ")

# Xen messages worth showing from the dom0 build (xen/arch/x86/{pv,hvm}/dom0_build.c).
_XEN_BUILD = re.compile(
    r"\*\*\* Building a|Xen  kernel:|Dom0 kernel:|Loaded kernel:|Init\. ramdisk:|"
    r"Phys-Mach map:|Start info:|Page tables:|Boot stack:|TOTAL:|ENTRY ADDRESS:|"
    r"Dom0 alloc\.:|Dom0 has maximum|PVH is an experimental|^ELF: "
)
# Xen's own failure messages: libelf, the dom0 builders, panics, guest crashes.
XEN_ERROR_LINE = re.compile(
    r"ERROR|Panic on CPU|Could not (set up|construct)|Failed to load|Unable to find|"
    r"not capable|Will only load|Not a Xen-ELF|Xen will only load|out of bounds|"
    r"crashed|Triple fault|domain_crash|Unhandled|FATAL|Assertion|BUG at"
)
# Evidence that dom0 faulted (rather than asked for SHUTDOWN_crash itself).
_GUEST_FAULT = re.compile(r"Triple fault|domain_crash|Unhandled|crashed on cpu")
_XEN_END = (
    (re.compile(r"Hardware Dom0 halted"), End.DOM0_POWEROFF),
    (re.compile(r"Hardware Dom0 crashed"), End.DOM0_CRASH),
    (re.compile(r"Hardware Dom0 shutdown: rebooting"), End.DOM0_REBOOT),
    (re.compile(r"Hardware Dom0 shutdown"), End.DOM0_SHUTDOWN),
    (re.compile(r"Panic on CPU"), End.XEN_PANIC),
)
# Lines after which Xen does nothing more: end QEMU right away.
_XEN_FINAL = re.compile(r"Manual reset required|'noreboot' set|halting machine")


STAGE_STARTING = "starting QEMU"
STAGE_STARTED = {  # QEMU runs, and nothing has come out of its console yet
    False: "QEMU started, no output from the guest yet",
    True: "QEMU started, no output from Xen yet",
}


class ConsoleParser:
    """Sorts console lines into guest output and Xen messages; spots the end of a run."""

    def __init__(self, xen: bool, exit_on: str | None = None) -> None:
        self.xen = xen
        self.exit_on = None if exit_on is None else re.compile(exit_on)
        self.guest_lines: list[str] = []
        self.xen_lines: list[str] = []
        self.stage = STAGE_STARTING
        self.end: End | None = None
        self.final = False  # nothing more will come: stop waiting
        self._in_panic = False
        self.panic_lines: list[str] = []

    def feed(self, line: str) -> None:
        if not self.xen:
            self._guest(line)
            return
        # A guest line without its newline runs into Xen's next message: split there.
        xen = _XEN_PREFIX.search(line)
        if xen is not None:
            if xen.start() > 0:
                self._guest(line[: xen.start()])
            self._xen(line[xen.end() :])
        elif _DOMAIN_PREFIX.match(line):
            self._guest(_DOMAIN_PREFIX.sub("", line, count=1))
        elif line.strip():
            self._guest(line)

    def qemu_started(self) -> None:
        """QEMU's process is running: a run that ends now did not end starting it."""
        if self.stage == STAGE_STARTING:
            self.stage = STAGE_STARTED[self.xen]

    def peek(self, partial: str) -> None:
        """Look at a line still being written: Xen's last words often lack a newline."""
        if self.xen and _XEN_FINAL.search(partial):
            self.final = True

    def _guest(self, line: str) -> None:
        self.guest_lines.append(line)
        self.stage = "guest running"
        if self.exit_on is not None and self.end is None and self.exit_on.search(line):
            self.end = End.EXIT_ON
            self.final = True

    def _xen(self, line: str) -> None:
        self.xen_lines.append(line)
        if self.stage in (STAGE_STARTING, STAGE_STARTED[True]):
            self.stage = "Xen booting"
        if "*** Building a" in line:
            self.stage = "Xen building dom0"
        elif "*** Serial input to DOM0" in line:
            self.stage = "dom0 running"
        self._track_panic(line)
        for pattern, end in _XEN_END:
            if self.end is None and pattern.search(line):
                self.end = end
                break
        if _XEN_FINAL.search(line):
            self.final = True

    def _track_panic(self, line: str) -> None:
        # Panic block: "****", "Panic on CPU n:", message lines, "****".
        if "Panic on CPU" in line:
            self._in_panic = True
        elif self._in_panic and line.startswith("****"):
            self._in_panic = False
        elif self._in_panic and line.strip():
            self.panic_lines.append(line.strip())

    def xen_build(self) -> list[str]:
        return [line.strip() for line in self.xen_lines if _XEN_BUILD.search(line)]

    def xen_errors(self) -> list[str]:
        errors = [line.strip() for line in self.xen_lines if XEN_ERROR_LINE.search(line)]
        return errors + [line for line in self.panic_lines if line not in errors]

    def guest_faulted(self) -> bool:
        return any(_GUEST_FAULT.search(line) for line in self.xen_lines)


def parse_report(lines: list[str]) -> tuple[dict[str, str], bool]:
    """The samples' key=value report (a repeated key keeps its last value), and
    whether its closing "done" line arrived."""
    report: dict[str, str] = {}
    done = False
    for line in lines:
        if not line.startswith(REPORT_PREFIX):
            continue
        body = line[len(REPORT_PREFIX) :]
        if body == REPORT_DONE:
            done = True
        key, sep, value = body.partition("=")
        if sep:
            report[key] = value
    return report, done


# --- judging the run ----------------------------------------------------------------


def debug_exit_value(status: int | None) -> int | None:
    # QEMU's own failures exit 1; a guest's write of 0 would too, so 0 is not reported.
    if status is None or status < 3 or status % 2 == 0:
        return None
    return (status - 1) // 2


def end_of(run: QemuRun, parser: ConsoleParser) -> End:
    if debug_exit_value(run.status) is not None:
        return End.DEBUG_EXIT
    if parser.end is not None:
        return parser.end
    if run.timed_out:
        return End.TIMEOUT
    return End.QEMU_RESET if run.status == 0 else End.QEMU_EXIT


def judge(
    run: QemuRun, parser: ConsoleParser, end: End, exit_ok: int = DEBUG_EXIT_OK
) -> tuple[Verdict, str]:
    """The verdict before --expect is applied, with a one-line reason."""
    if end is End.DEBUG_EXIT:
        return _judge_debug_exit(debug_exit_value(run.status), exit_ok)
    if end is End.EXIT_ON and parser.exit_on is not None:
        return Verdict.OK, f"guest printed {parser.exit_on.pattern!r} (--exit-on)"
    if end in _XEN_ENDS:
        return _XEN_ENDS[end](parser)
    if end is End.TIMEOUT:
        return Verdict.TIMEOUT, f"no end after {run.timeout:g} s ({parser.stage}); QEMU ended"
    if end is End.QEMU_RESET:
        if parser.xen and parser.panic_lines:
            return Verdict.XEN_ERROR, f"Xen panic: {parser.panic_lines[0]}"
        return Verdict.CRASHED, "the machine reset (triple fault?) and QEMU exited"
    message = run.stderr[0] if run.stderr else f"QEMU exited with status {run.status}"
    return Verdict.LOADER_ERROR, message


def _judge_debug_exit(value: int | None, exit_ok: int = DEBUG_EXIT_OK) -> tuple[Verdict, str]:
    if value == exit_ok:
        return Verdict.OK, f"guest wrote {value:#x} (ok) to isa-debug-exit"
    if value == DEBUG_EXIT_FAIL:
        return Verdict.GUEST_FAILED, f"guest wrote {value:#x} (fail) to isa-debug-exit"
    return Verdict.GUEST_FAILED, f"guest wrote unexpected value {value:#x} to isa-debug-exit"


def _judge_poweroff(parser: ConsoleParser) -> tuple[Verdict, str]:
    return Verdict.OK, "dom0 powered off (SCHEDOP_shutdown)"


def _judge_crash(parser: ConsoleParser) -> tuple[Verdict, str]:
    if parser.guest_faulted():
        fault = next(line for line in parser.xen_errors() if _GUEST_FAULT.search(line))
        return Verdict.CRASHED, f"Xen crashed dom0: {fault}"
    return Verdict.GUEST_FAILED, "dom0 shut down with reason crash"


def _judge_reboot(parser: ConsoleParser) -> tuple[Verdict, str]:
    if parser.guest_faulted():
        return Verdict.CRASHED, "dom0 faulted (triple fault) and Xen rebooted"
    return Verdict.GUEST_FAILED, "dom0 asked for a reboot"


def _judge_shutdown(parser: ConsoleParser) -> tuple[Verdict, str]:
    return Verdict.GUEST_FAILED, "dom0 shut down with an unusual reason"


def _judge_panic(parser: ConsoleParser) -> tuple[Verdict, str]:
    # The first libelf/builder message says why far better than the panic line.
    specific = [line for line in parser.xen_errors() if "Panic on CPU" not in line]
    detail = specific[0] if specific else "no message"
    return Verdict.XEN_ERROR, plain_lead(detail) + f"Xen panic: {detail}"


def plain_lead(message: str) -> str:
    """What Xen's message means, before it, when its own words do not say it."""
    from ..read.check import NOT_A_PV_KERNEL, NOT_GENERIC

    if f"{NOT_GENERIC} (Not '' and '')" in message:
        return f"{NOT_A_PV_KERNEL}. "
    return ""


_XEN_ENDS: dict[End, Callable[[ConsoleParser], tuple[Verdict, str]]] = {
    End.DOM0_POWEROFF: _judge_poweroff,
    End.DOM0_CRASH: _judge_crash,
    End.DOM0_REBOOT: _judge_reboot,
    End.DOM0_SHUTDOWN: _judge_shutdown,
    End.XEN_PANIC: _judge_panic,
}


def apply_expect(
    verdict: Verdict, reason: str, expect: str | None, guest_lines: list[str]
) -> tuple[Verdict, str, bool | None]:
    if expect is None:
        return verdict, reason, None
    matched = re.search(expect, "\n".join(guest_lines), re.MULTILINE) is not None
    if verdict is Verdict.OK and not matched:
        return Verdict.MISMATCH, f"guest output does not match {expect!r}", matched
    return verdict, reason, matched
