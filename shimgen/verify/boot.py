"""Boot an image for real: QEMU's PVH loader, or Debian's Xen 4.17 inside QEMU (TCG).

The harness starts its own QEMU in a new process group, watches the guest's console
(QEMU's debugcon for bare PVH; Xen's serial log otherwise), decides when the run is
over, ends that process group and returns a :class:`BootResult`. It never leaves a
QEMU behind: every exit path, including exceptions and Ctrl-C, goes through
:func:`_stop`.

How a run ends (QEMU's hw/misc/debugexit.c; Xen's noreboot option in
docs/misc/xen-command-line.pandoc):

- bare QEMU: the guest writes to isa-debug-exit (QEMU exits 2*V+1), or resets
  (``-no-reboot`` turns a triple fault into an exit with status 0);
- Xen: the guest writes isa-debug-exit (a PV dom0 after PHYSDEVOP_set_iopl), or
  Xen logs the end of dom0 ("Hardware Dom0 halted/crashed/shutdown") or its own
  panic; Xen then halts (``noreboot``) and QEMU keeps running, so the harness ends it.

Guest output in Xen's serial log: dom0's console_io writes appear as bare lines,
port 0xe9 writes as ``(d0) `` lines, Xen's own messages as ``(XEN) `` lines.
"""

from __future__ import annotations

import enum
import gzip
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInput, MissingTool, OutputError

# The samples' boot report and isa-debug-exit values, shared with their C header.
from ..structs.harness import (
    DEBUG_EXIT_FAIL,
    DEBUG_EXIT_OK,
    DEBUG_EXIT_PORT,
    REPORT_DONE,
    REPORT_PREFIX,
)

QEMU = "qemu-system-x86_64"
# xl-*: a domU started by `xl create` in a Debian Linux dom0 (see xlboot.py)
XL_LOADERS = ("xl-pv", "xl-pvh", "xl-pvshim")
LOADERS = ("qemu-pvh", "xen-pv", "xen-pvh", *XL_LOADERS)
MACHINES = ("q35", "pc", "microvm")
DEFAULT_MACHINE = "q35"
DEFAULT_TIMEOUT = 30.0

XEN_PACKAGE = "xen-hypervisor-4.17-amd64"
XEN_GZ_IN_PACKAGE = "boot/xen-4.17-amd64.gz"

# Memory: bare PVH guests get 128 MiB; Xen gets 1 GiB and gives dom0 DOM0_MEM_MIB.
QEMU_PVH_MEMORY_MIB = 128
XEN_HOST_MEMORY_MIB = 1024
DOM0_MEM_MIB = 256
# noreboot: a panic halts instead of rebooting after 5 s, so the harness sees it at once.
XEN_LOG_CMDLINE = ("console=com1", "loglvl=all", "guest_loglvl=all", "noreboot")
XEN_CMDLINE = (*XEN_LOG_CMDLINE, f"dom0_mem={DOM0_MEM_MIB}M")
XEN_PVH_CMDLINE = ("dom0=pvh", "dom0-iommu=none")

POLL_INTERVAL = 0.02
# After the log says the run is over, how long to let QEMU exit (or log more) itself.
END_GRACE = 0.3
# A panic block ends with "Manual reset required"; give up waiting for it after this.
PANIC_GRACE = 2.0
STOP_WAIT = 2.0


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


@dataclass(frozen=True)
class BootOptions:
    loader: str
    machine: str = DEFAULT_MACHINE  # qemu-pvh only; Xen always runs on "pc"
    cmdline: str = ""
    expect: str | None = None  # regex searched in the guest's output
    timeout: float = DEFAULT_TIMEOUT
    log: Path | None = None  # where to copy the raw console log
    xen: Path | None = None  # Xen hypervisor (plain or .gz); default: Debian's, cached
    debug_exit_device: bool = True  # without it guests must end by SCHEDOP_shutdown
    # a module for the kernel: QEMU's -initrd (hvm_start_info module 0), or dom0's
    # initrd (Xen's second multiboot module)
    initrd: Path | None = None
    exit_on: str | None = None  # regex: end the boot as soon as the guest printed it (ok)
    # the isa-debug-exit value meaning success (qemu-pvh, xen-pv, xen-pvh)
    exit_ok: int = DEBUG_EXIT_OK
    memory: int | None = None  # domU memory in MiB (xl loaders; default xlcfg's)

    def __post_init__(self) -> None:
        if self.loader not in LOADERS:
            raise ValueError(f"loader must be one of {', '.join(LOADERS)}")
        if self.machine not in MACHINES:
            raise ValueError(f"machine must be one of {', '.join(MACHINES)}")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if self.uses_xl and self.exit_ok != DEBUG_EXIT_OK:
            raise ValueError("exit_ok: a domU cannot reach QEMU's isa-debug-exit device")

    @property
    def uses_xen(self) -> bool:
        return self.loader.startswith("xen-")

    @property
    def uses_xl(self) -> bool:
        return self.loader in XL_LOADERS


@dataclass
class BootResult:
    image: str
    loader: str
    machine: str
    cmdline: str
    verdict: Verdict
    reason: str
    end: End
    guest_lines: list[str]
    report: dict[str, str]
    report_complete: bool
    xen_build: list[str]
    xen_errors: list[str]
    qemu_messages: list[str]
    qemu_status: int | None  # None when the harness had to end QEMU itself
    debug_exit: int | None  # value the guest wrote to isa-debug-exit
    wall_time: float
    expect: str | None
    expect_matched: bool | None
    qemu_pid: int
    command: list[str] = field(default_factory=list)
    initrd: str | None = None  # the module passed, as given
    # xl loaders: seconds from QEMU's start to each stage (dom0_up, toolstack_up,
    # created, started, first_output, ended)
    timings: dict[str, float] = field(default_factory=dict)
    xenstore: dict[str, str] = field(default_factory=dict)  # what libxl gave the domU
    shutdown_reason: str | None = None  # poweroff, reboot, crash... as xl reported it
    domain_memory_mib: int | None = None  # the domU's memory as `xl list` shows it
    xl_messages: list[str] = field(default_factory=list)  # what xl create printed

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = str(self.verdict)
        data["end"] = str(self.end)
        data["wall_time"] = round(self.wall_time, 3)
        data["timings"] = {stage: round(value, 3) for stage, value in self.timings.items()}
        return data


ProgressCallback = Callable[[str], None]


# --- finding the tools -------------------------------------------------------------


def find_qemu() -> str:
    path = shutil.which(QEMU)
    if path is None:
        raise MissingTool(f"{QEMU} not found: install it with 'apt-get install qemu-system-x86'")
    return path


def find_xen(path: Path | None = None) -> Path:
    """A Xen hypervisor QEMU can boot with -kernel (multiboot), decompressed if needed."""
    if path is not None:
        if not path.is_file():
            raise MissingTool(
                f"Xen hypervisor {path} not found: pass a xen-*.gz or omit --xen to use "
                f"Debian's {XEN_PACKAGE}"
            )
        if path.suffix != ".gz":
            return path
        # The user's folder is not ours to write in: decompress into the cache.
        from .debcache import cache_dir

        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        return _gunzipped(path, cache_dir() / "xen" / f"{path.stem}-{digest}")
    from .debcache import unpacked_package

    gz = unpacked_package(XEN_PACKAGE) / XEN_GZ_IN_PACKAGE
    if not gz.is_file():
        raise MissingTool(
            f"{XEN_PACKAGE} in {gz.parents[1]} holds no {XEN_GZ_IN_PACKAGE}: delete that folder "
            "to fetch it again"
        )
    return _gunzipped(gz, gz.with_suffix(""))


def missing_tool(loader: str) -> str | None:
    """Why loader cannot boot an image here without fetching anything, or None.

    For test suites deciding to skip: Debian's Xen counts only when it is already in
    the cache (`python -m shimgen.verify.debcache xen-hypervisor-4.17-amd64` puts it
    there; `shimgen boot` fetches it by itself)."""
    from .debcache import cache_dir, is_cached

    if loader not in LOADERS:
        raise ValueError(f"loader must be one of {', '.join(LOADERS)}")
    try:
        find_qemu()
    except MissingTool as error:
        return str(error)
    if loader.startswith("xen-") and not is_cached(XEN_PACKAGE):
        return (
            f"Debian's Xen ({XEN_PACKAGE}) is not in the shimgen cache {cache_dir()}: "
            f"fetch it with 'python -m shimgen.verify.debcache {XEN_PACKAGE}'"
        )
    return None


def _gunzipped(gz: Path, target: Path) -> Path:
    if target.is_file() and target.stat().st_mtime >= gz.stat().st_mtime:
        return target
    try:
        data = gzip.decompress(gz.read_bytes())
    except (OSError, EOFError) as error:
        raise BadInput(f"{gz}: not a gzip file ({error})") from None
    # Write then rename: a concurrent run never sees a half-written hypervisor.
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f".{target.name}.{os.getpid()}")
    scratch.write_bytes(data)
    scratch.replace(target)
    return target


def check_image(image: Path) -> None:
    """Refuse what no loader could take, with one line instead of QEMU's noise."""
    if _head(image, 4) != b"\x7fELF":
        raise BadInput(f"{image}: not an ELF file")


def _check_initrd(initrd: Path) -> None:
    _head(initrd, 0, " (--initrd)")


def _head(path: Path, size: int, what: str = "") -> bytes:
    """The first size bytes of a file QEMU will be given, or one line saying why not."""
    try:
        with path.open("rb") as stream:
            return stream.read(size)
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file{what}") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: is a directory{what}") from None
    except OSError as error:
        raise BadInput(f"{path}: cannot read ({error.strerror}){what}") from None


# --- QEMU command lines -------------------------------------------------------------


def _common_qemu_args(options: BootOptions) -> list[str]:
    args = ["-display", "none", "-monitor", "none", "-nic", "none", "-no-reboot"]
    if options.debug_exit_device:
        args += ["-device", f"isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=0x04"]
    return args


def qemu_pvh_argv(qemu: str, image: Path, options: BootOptions, log: Path) -> list[str]:
    return [
        qemu,
        "-machine", options.machine,
        "-accel", "tcg",
        "-m", str(QEMU_PVH_MEMORY_MIB),
        "-kernel", str(image),
        "-append", options.cmdline,
        *(["-initrd", _escape_commas(str(options.initrd))] if options.initrd else []),
        "-serial", "none",
        "-debugcon", f"file:{_chardev_path(log)}",
        *_common_qemu_args(options),
    ]  # fmt: skip


def xen_argv(
    qemu: str,
    xen: Path,
    guest: Path,
    options: BootOptions,
    log: Path,
    initrd: Path | None = None,
) -> list[str]:
    xen_cmdline = XEN_CMDLINE + (XEN_PVH_CMDLINE if options.loader == "xen-pvh" else ())
    # The multiboot module string is "FILE ARGS"; Xen drops FILE and hands ARGS to dom0.
    # A second module is dom0's initrd.
    module = _escape_commas(f"{guest} {options.cmdline}".rstrip())
    if initrd is not None:
        module += f",{initrd}"
    return [
        qemu,
        "-machine", "pc",
        "-accel", "tcg",
        # Measured with Debian's Xen 4.17 under TCG: PVH dom0 needs SVM+NPT from "max".
        "-cpu", "max,-smap",
        "-m", str(XEN_HOST_MEMORY_MIB),
        "-kernel", str(xen),
        "-append", " ".join(xen_cmdline),
        "-initrd", module,
        "-serial", f"file:{_chardev_path(log)}",
        *_common_qemu_args(options),
    ]  # fmt: skip


def _escape_commas(text: str) -> str:
    # QEMU splits -initrd at commas into multiboot modules; ",," is a literal comma.
    return text.replace(",", ",,")


def _chardev_path(path: Path) -> str:
    return _escape_commas(str(path))


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
_XEN_ERROR = re.compile(
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
        errors = [line.strip() for line in self.xen_lines if _XEN_ERROR.search(line)]
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


# --- running QEMU -------------------------------------------------------------------


@dataclass
class _Run:
    status: int | None
    timed_out: bool
    wall_time: float
    pid: int
    stderr: list[str]
    timeout: float


@contextmanager
def _qemu_process(argv: list[str], stderr_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """QEMU in its own process group, ended (with any children) however we leave."""
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End QEMU's process group: SIGTERM, then SIGKILL. Only while the leader is not
    reaped is its pid (= the group id) certainly still ours."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=STOP_WAIT)
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


def _watch(
    proc: subprocess.Popen[bytes],
    tail: LogTail,
    parser: ConsoleParser,
    timeout: float,
    on_progress: ProgressCallback | None,
) -> bool:
    """Follow the console until QEMU exits, the log says the run is over, or the
    deadline passes. Returns whether the deadline passed."""
    start = time.monotonic()
    ended_at: float | None = None
    stage = ""
    while proc.poll() is None:
        for line in tail.read_lines():
            parser.feed(line)
        parser.peek(_decode(tail.partial))
        now = time.monotonic()
        if parser.end is not None and ended_at is None:
            ended_at = now
        if ended_at is not None:
            grace = END_GRACE if parser.final or parser.end is not End.XEN_PANIC else PANIC_GRACE
            if parser.final or now - ended_at >= grace:
                # One short last chance for QEMU to exit on its own (e.g. -no-reboot).
                _wait_quietly(proc, END_GRACE if not parser.final else 0.05)
                return False
        if now - start >= timeout:
            return True
        if on_progress is not None and parser.stage != stage:
            stage = parser.stage
            on_progress(stage)
        time.sleep(POLL_INTERVAL)
    return False


def _wait_quietly(proc: subprocess.Popen[bytes], seconds: float) -> None:
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=seconds)


def _run_qemu(
    argv: list[str],
    log: Path,
    parser: ConsoleParser,
    timeout: float,
    on_progress: ProgressCallback | None,
) -> _Run:
    stderr_path = log.with_name("qemu-stderr.log")
    tail = LogTail(log)
    start = time.monotonic()
    with _qemu_process(argv, stderr_path) as proc:
        parser.qemu_started()
        timed_out = _watch(proc, tail, parser, timeout, on_progress)
        status = proc.poll()
    wall_time = time.monotonic() - start
    for line in tail.flush():
        parser.feed(line)
    stderr = [_decode(raw) for raw in stderr_path.read_bytes().splitlines() if raw.strip()]
    if status is None:  # we ended it: QEMU's note about our signal is noise
        stderr = [line for line in stderr if "terminating on signal" not in line]
    return _Run(status, timed_out, wall_time, proc.pid, stderr, timeout)


# --- judging the run ----------------------------------------------------------------


def _debug_exit_value(status: int | None) -> int | None:
    # QEMU's own failures exit 1; a guest's write of 0 would too, so 0 is not reported.
    if status is None or status < 3 or status % 2 == 0:
        return None
    return (status - 1) // 2


def _end_of(run: _Run, parser: ConsoleParser) -> End:
    if _debug_exit_value(run.status) is not None:
        return End.DEBUG_EXIT
    if parser.end is not None:
        return parser.end
    if run.timed_out:
        return End.TIMEOUT
    return End.QEMU_RESET if run.status == 0 else End.QEMU_EXIT


def judge(
    run: _Run, parser: ConsoleParser, end: End, exit_ok: int = DEBUG_EXIT_OK
) -> tuple[Verdict, str]:
    """The verdict before --expect is applied, with a one-line reason."""
    if end is End.DEBUG_EXIT:
        return _judge_debug_exit(_debug_exit_value(run.status), exit_ok)
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
    return Verdict.XEN_ERROR, _plain_lead(detail) + f"Xen panic: {detail}"


def _plain_lead(message: str) -> str:
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


def _apply_expect(
    verdict: Verdict, reason: str, expect: str | None, guest_lines: list[str]
) -> tuple[Verdict, str, bool | None]:
    if expect is None:
        return verdict, reason, None
    matched = re.search(expect, "\n".join(guest_lines), re.MULTILINE) is not None
    if verdict is Verdict.OK and not matched:
        return Verdict.MISMATCH, f"guest output does not match {expect!r}", matched
    return verdict, reason, matched


# --- the entry point ----------------------------------------------------------------


def boot(
    image: Path, options: BootOptions, on_progress: ProgressCallback | None = None
) -> BootResult:
    """Boot image under options.loader and report what happened.

    Raises BadInput for an image no loader could take, MissingTool when QEMU or Xen
    is missing, OutputError when the log cannot be written. on_progress receives the
    stage ("Xen booting", "guest running"...) whenever it changes; an exception it
    raises (e.g. KeyboardInterrupt) still ends QEMU.
    """
    check_image(image)
    if options.initrd is not None:
        _check_initrd(options.initrd)
    if options.expect is not None:
        re.compile(options.expect)  # a bad regex fails before a slow boot
    if options.exit_on is not None:
        re.compile(options.exit_on)
    if options.uses_xl:
        from .xlboot import boot_domus, job_from_options

        return boot_domus(
            [job_from_options(image, options)],
            log=options.log,
            on_progress=on_progress,
            xen=options.xen,
        )[0]
    if options.log is not None:
        _save_log(None, options.log)  # an unwritable log fails before a slow boot
    qemu = find_qemu()
    xen = find_xen(options.xen) if options.uses_xen else None
    with tempfile.TemporaryDirectory(prefix="shimgen-boot-") as scratch:
        log = Path(scratch) / "console.log"
        argv = _argv(qemu, xen, image.resolve(), options, Path(scratch), log)
        parser = ConsoleParser(xen=options.uses_xen, exit_on=options.exit_on)
        run = _run_qemu(argv, log, parser, options.timeout, on_progress)
        if options.log is not None:
            _save_log(log, options.log)
    return _result(image, options, argv, run, parser)


def _argv(
    qemu: str, xen: Path | None, image: Path, options: BootOptions, scratch: Path, log: Path
) -> list[str]:
    if xen is None:
        return qemu_pvh_argv(qemu, image, options, log)
    # A fixed name in our own folder: the image's real path may hold spaces or commas,
    # which the multiboot module string cannot carry.
    guest = scratch / "guest"
    guest.symlink_to(image)
    initrd = None
    if options.initrd is not None:
        initrd = scratch / "initrd"
        initrd.symlink_to(options.initrd.resolve())
    return xen_argv(qemu, xen, guest, options, log, initrd)


def _save_log(log: Path | None, destination: Path) -> None:
    try:
        data = log.read_bytes() if log is not None and log.exists() else b""
        destination.write_bytes(data)
    except OSError as error:
        raise OutputError(f"{destination}: cannot write the log ({error.strerror})") from None


def _result(
    image: Path, options: BootOptions, argv: list[str], run: _Run, parser: ConsoleParser
) -> BootResult:
    end = _end_of(run, parser)
    verdict, reason = judge(run, parser, end, options.exit_ok)
    verdict, reason, matched = _apply_expect(verdict, reason, options.expect, parser.guest_lines)
    report, complete = parse_report(parser.guest_lines)
    return BootResult(
        image=str(image),
        loader=options.loader,
        machine=options.machine if options.loader == "qemu-pvh" else "pc",
        cmdline=options.cmdline,
        verdict=verdict,
        reason=reason,
        end=end,
        guest_lines=parser.guest_lines,
        report=report,
        report_complete=complete,
        xen_build=parser.xen_build(),
        xen_errors=parser.xen_errors(),
        qemu_messages=run.stderr,
        qemu_status=run.status,
        debug_exit=_debug_exit_value(run.status),
        wall_time=run.wall_time,
        expect=options.expect,
        expect_matched=matched,
        qemu_pid=run.pid,
        command=argv,
        initrd=None if options.initrd is None else str(options.initrd),
    )
