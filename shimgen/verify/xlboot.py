"""Boot images as Xen domUs with `xl create`: many guests in one QEMU run.

QEMU (TCG) boots Debian's Xen 4.17 with the xl rig's dom0 (:mod:`.xlrig`): Debian's
Linux kernel and an initramfs whose init starts xenstored and xenconsoled and runs
``xl create`` for each job in turn. The jobs travel in a second cpio archive appended
to the cached dom0 initramfs (``/jobs/N/``: the image, its ramdisk, the xl config
from :mod:`.xlcfg`, the name and the time limit).

dom0 reports on its console (hvc0, which Xen copies to the serial log) with lines
``@xlrig JOB KEY ...``; a PVH guest's port 0xe9 output appears in the same log as
``(dN) ...`` lines from Xen. :class:`RigParser` reads both and stamps each event with
the time since QEMU started, which gives the timings of every stage.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MissingTool
from ..structs.xen_abi import ShutdownReason
from .boot import DEFAULT_TIMEOUT, BootOptions, BootResult, save_log
from .console import (
    XEN_ERROR_LINE,
    ConsoleParser,
    End,
    QemuRun,
    Verdict,
    apply_expect,
    parse_report,
)
from .debcache import cache_dir
from .qemu import (
    XEN_HOST_MEMORY_MIB,
    XEN_LOG_CMDLINE,
    ProgressCallback,
    chardev_path,
    check_image,
    check_initrd,
    common_qemu_args,
    escape_commas,
    find_qemu,
    find_xen,
    run_qemu,
)
from .xlcfg import DEFAULT_MEMORY_MIB, PRESERVE, XlConfig, render
from .xlrig import DOM0_CMDLINE, MARK, PV_SHIM, Cpio, Dom0Files, dom0_files

# dom0's memory: the 66 MiB dom0 kernel is placed at 16 MiB, then the initramfs.
RIG_DOM0_MEM_MIB = 192
# Xen itself and the guests' page tables, on top of dom0 and the largest guest.
RIG_XEN_RESERVE_MIB = 256
# Seconds for QEMU, Xen and dom0 to come up (TCG on a loaded machine), and for each
# job's xl create, xenstore reads and clean-up on top of its own time limit.
RIG_START_BUDGET = 180.0
JOB_OVERHEAD = 30.0
# QEMU and Xen options for Xen's pv-shim under TCG: with TCG's default family 0xf the
# shim's Xen writes the K8-only HWCR MSR and faults; with family 23 the outer Xen must
# not use mwait idle.
PVSHIM_CPU = "max,-smap,family=23,model=1,stepping=2"
PVSHIM_XEN_CMDLINE = ("cpuidle=no", "mwait-idle=no")
DEFAULT_CPU = "max,-smap"
# Xen: dom0 gets a fixed amount and one vCPU; free memory is not scrubbed at boot
# (nothing secret lives in a throwaway QEMU).
RIG_XEN_CMDLINE = (
    f"dom0_mem={RIG_DOM0_MEM_MIB}M,max:{RIG_DOM0_MEM_MIB}M",
    "dom0_max_vcpus=1",
    "bootscrub=0",
)

_LOADER_CONFIG = {
    "xl-pv": ("pv", False),
    "xl-pvh": ("pvh", False),
    "xl-pvshim": ("pvh", True),
}


@dataclass(frozen=True)
class DomuJob:
    """One guest for `xl create`."""

    image: Path
    loader: str = "xl-pvh"  # xl-pv, xl-pvh or xl-pvshim
    cmdline: str = ""
    initrd: Path | None = None  # the xl config's ramdisk
    memory: int = DEFAULT_MEMORY_MIB
    maxmem: int | None = None  # MiB, above memory
    timeout: float = DEFAULT_TIMEOUT  # seconds the guest may run
    expect: str | None = None
    exit_on: str | None = None  # regex (also read by grep -E in dom0)
    # regex (grep -E on the console ring's whole text, "." crossing lines): once the
    # guest's output matches it, dom0 asks it to power off (`xl shutdown`), as a user
    # would; the verdict is then the guest's own shutdown
    shutdown_on: str | None = None

    def __post_init__(self) -> None:
        if self.loader not in _LOADER_CONFIG:
            raise ValueError(f"loader must be one of {', '.join(_LOADER_CONFIG)}")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")

    @property
    def pvshim(self) -> bool:
        return _LOADER_CONFIG[self.loader][1]

    def xl_config(self, number: int) -> XlConfig:
        xl_type, pvshim = _LOADER_CONFIG[self.loader]
        folder = Path(f"/jobs/{number}")
        return XlConfig(
            kernel=folder / "kernel",
            type=xl_type,
            pvshim=pvshim,
            memory=self.memory,
            maxmem=self.maxmem,
            cmdline=self.cmdline,
            ramdisk=None if self.initrd is None else folder / "ramdisk",
            name=domain_name(self.image, number),
            lifecycle=PRESERVE,
        )


def job_from_options(image: Path, options: BootOptions) -> DomuJob:
    return DomuJob(
        image=image,
        loader=options.loader,
        cmdline=options.cmdline,
        initrd=options.initrd,
        memory=options.memory or DEFAULT_MEMORY_MIB,
        timeout=options.timeout,
        expect=options.expect,
        exit_on=options.exit_on,
        shutdown_on=options.shutdown_on,
    )


def domain_name(image: Path, number: int) -> str:
    """The domU's name: the image's name (characters xl and xenstore accept) and the
    job's number, unique within a rig run."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", image.name)[:40] or "guest"
    return f"{stem}-{number}"


# --- the guests' part of the initramfs ---------------------------------------------


def jobs_archive(jobs: Sequence[DomuJob], files: Dom0Files) -> bytes:
    """The second cpio archive: /jobs/order and /jobs/N/ for every job."""
    archive = Cpio()
    for number, job in enumerate(jobs, 1):
        folder = f"jobs/{number}"
        config = job.xl_config(number)
        archive.file(f"{folder}/name", config.name.encode())
        archive.file(f"{folder}/timeout", f"{job.timeout:g}\n".encode())
        archive.file(f"{folder}/xl.cfg", render(config).encode())
        archive.file(f"{folder}/kernel", job.image.read_bytes())
        if job.initrd is not None:
            archive.file(f"{folder}/ramdisk", job.initrd.read_bytes())
        if job.exit_on is not None:
            archive.file(f"{folder}/exit_on", f"{job.exit_on}\n".encode())
        if job.shutdown_on is not None:
            archive.file(f"{folder}/shutdown_on", f"{job.shutdown_on}\n".encode())
    if any(job.pvshim for job in jobs):
        # Only runs that need it carry the 6 MiB pv-shim.
        archive.file(PV_SHIM, files.pv_shim.read_bytes())
    order = "".join(f"{number}\n" for number in range(1, len(jobs) + 1))
    archive.file("jobs/order", order.encode())
    return archive.finish()


def rig_argv(
    qemu: str, xen: Path, files: Dom0Files, initrd: Path, jobs: Sequence[DomuJob], log: Path
) -> list[str]:
    pvshim = any(job.pvshim for job in jobs)
    xen_cmdline = (*XEN_LOG_CMDLINE, *RIG_XEN_CMDLINE, *(PVSHIM_XEN_CMDLINE if pvshim else ()))
    largest = max(max(job.memory, job.maxmem or 0) for job in jobs)
    memory = RIG_DOM0_MEM_MIB + largest + RIG_XEN_RESERVE_MIB
    # Multiboot modules: dom0's kernel with its command line, then its initramfs.
    module = escape_commas(f"{files.kernel} {DOM0_CMDLINE}") + "," + escape_commas(str(initrd))
    options = BootOptions(loader="xen-pv")
    return [
        qemu,
        "-machine", "pc",
        "-accel", "tcg",
        "-cpu", PVSHIM_CPU if pvshim else DEFAULT_CPU,
        "-m", str(max(XEN_HOST_MEMORY_MIB, memory)),
        "-kernel", str(xen),
        "-append", " ".join(xen_cmdline),
        "-initrd", module,
        "-serial", f"file:{chardev_path(log)}",
        *common_qemu_args(options),
    ]  # fmt: skip


# --- reading the rig's console ------------------------------------------------------

_DEBUG_PORT_LINE = re.compile(r"^\(d(\d+)\) ?(.*)$")
# Xen prints a guest's whole debug-port line at once, possibly in the middle of a line
# dom0 is writing.
_DEBUG_PORT_INSIDE = re.compile(r"\(d\d+\) ")
_XEN_DOMAIN = re.compile(r"\bd(\d+)(?:v\d+)?\b")
_REASON = re.compile(r"has shut down, reason code (\d+)")
_DOMID = re.compile(r"domid=(\d+)")
_RIG_END = "all-done"
_RIG_STAGES = {"dom0-up": "dom0_up", "toolstack-up": "toolstack_up"}
# Xen's last words after dom0 powers the machine off (QEMU keeps running).
_XEN_POWERED_OFF = re.compile(r"Entering ACPI S5 state")


@dataclass
class JobRecord:
    """What dom0 reported about one job."""

    times: dict[str, float] = field(default_factory=dict)
    domid: int | None = None
    console: list[tuple[float, str]] = field(default_factory=list)
    xenstore: dict[str, str] = field(default_factory=dict)
    xl_lines: list[str] = field(default_factory=list)
    list_line: str | None = None
    free_before: int | None = None  # Xen's free memory (MiB) before xl create
    free_running: int | None = None  # ... and once the domain runs
    xl_status: int | None = None
    timed_out: bool = False
    exit_on: bool = False  # dom0 (or the harness, for the last job) saw --exit-on's regex
    done: bool = False


class RigParser(ConsoleParser):
    """Sorts the rig's serial log into Xen messages, dom0 output, markers and the
    guests' debug-port lines, each stamped with the seconds since QEMU started."""

    def __init__(self, jobs: Sequence[DomuJob]) -> None:
        super().__init__(xen=True)
        self.jobs = list(jobs)
        self.records = {number: JobRecord() for number in range(1, len(jobs) + 1)}
        self.rig_times: dict[str, float] = {}
        self.rig_errors: list[str] = []
        self.dom0_lines: list[str] = []
        self.port_lines: dict[int, list[tuple[float, str]]] = {}
        self.xen_timed: list[tuple[float, str]] = []
        self.all_done = False
        self.start = time.monotonic()
        self._patterns = {
            number: re.compile(job.exit_on) if job.exit_on else None
            for number, job in enumerate(jobs, 1)
        }

    def now(self) -> float:
        return time.monotonic() - self.start

    def feed(self, line: str) -> None:
        inside = _DEBUG_PORT_INSIDE.search(line, 1)
        if inside is not None and not line.startswith("(XEN)"):
            self.feed(line[: inside.start()])
            self.feed(line[inside.start() :])
            return
        port = _DEBUG_PORT_LINE.match(line)
        if port is not None:
            domid, text = int(port[1]), port[2]
            self.port_lines.setdefault(domid, []).append((self.now(), text))
            self._check_exit_on(self._job_of(domid), text)
            return
        super().feed(line)

    def peek(self, partial: str) -> None:
        super().peek(partial)
        if self.all_done and _XEN_POWERED_OFF.search(partial):
            self.final = True

    # ConsoleParser sends every line that is not Xen's here: dom0's console.
    def _guest(self, line: str) -> None:
        if line.startswith(MARK + " "):
            self._marker(line[len(MARK) + 1 :])
        else:
            self.dom0_lines.append(line)

    def _xen(self, line: str) -> None:
        super()._xen(line)
        self.xen_timed.append((self.now(), line))
        if self.all_done and _XEN_POWERED_OFF.search(line):
            self.final = True

    def _marker(self, body: str) -> None:
        # A guest's last console line, unterminated, runs into dom0's next marker.
        joined = body.find(f"{MARK} ")
        if joined > 0:
            head = body[:joined].rstrip(" \r")
            if head.partition(" ")[2] != "con:":  # not just an empty unterminated line
                self._marker(head)
            self._marker(body[joined + len(MARK) + 1 :])
            return
        job, _, rest = body.partition(" ")
        key, _, value = rest.partition(" ")
        if job == "-":
            self._rig_marker(key, value)
            return
        if not job.isdigit() or int(job) not in self.records:
            return
        number = int(job)
        self._job_marker(number, self.records[number], key, value)

    def _rig_marker(self, key: str, value: str) -> None:
        if key in _RIG_STAGES:
            self.rig_times[_RIG_STAGES[key]] = self.now()
            self.stage = key.replace("-", " ")
        elif key == "error":
            self.rig_errors.append(value)
        elif key == _RIG_END:
            self.all_done = True
            self.stage = "dom0 powering off"
            # Xen logs its ACPI S5 entry and stops; end QEMU shortly if that never shows.
            self.end = End.DOM0_POWEROFF

    def _job_marker(self, number: int, record: JobRecord, key: str, value: str) -> None:
        now = self.now()
        if key == "con:":
            # xenconsoled logs the ring as the guest wrote it, carriage returns included
            value = value.strip("\r")
            record.console.append((now, value))
            self._check_exit_on(number, value)
        elif key == "create":
            record.times["created"] = now
            self.stage = f"guest {number}/{len(self.jobs)}: xl create"
        elif key == "started":
            record.times["started"] = now
            match = _DOMID.search(value)
            record.domid = int(match[1]) if match else None
            self.stage = f"guest {number}/{len(self.jobs)} running"
        elif key == "store":
            name, _, content = value.partition("=")
            record.xenstore[name] = content
        elif key == "list:":
            record.list_line = value
        elif key == "free-before":
            record.free_before = int(value) if value.isdigit() else None
        elif key == "free-running":
            record.free_running = int(value) if value.isdigit() else None
        elif key == "timeout":
            record.timed_out = True
        elif key == "exit-on":
            record.exit_on = True
        elif key == "shutdown-asked":
            record.times["shutdown_asked"] = now
        elif key == "ended":
            record.times["ended"] = now
        elif key == "xl-status":
            record.xl_status = int(value) if value.isdigit() else None
        elif key == "xl:":
            record.xl_lines.append(value)
        elif key == "done":
            record.done = True

    def _job_of(self, domid: int) -> int | None:
        for number, record in self.records.items():
            if record.domid == domid:
                return number
        # A PVH guest's first lines can come before dom0 reports its domid: it is the
        # job being started, the last one created.
        created = [n for n, r in self.records.items() if "created" in r.times and not r.done]
        return created[-1] if created else None

    def _check_exit_on(self, number: int | None, text: str) -> None:
        if number is None or self._patterns.get(number) is None:
            return
        if not self._patterns[number].search(text):
            return
        record = self.records[number]
        record.exit_on = True
        record.times.setdefault("ended", self.now())
        # dom0 ends earlier jobs itself; after the last one nothing is left to wait for.
        if number == len(self.jobs) and self.end is None:
            self.end = End.EXIT_ON
            self.final = True

    def guest_output(self, number: int) -> list[tuple[float, str]]:
        """The guest's console ring and debug-port lines, in the order they arrived."""
        record = self.records[number]
        port = self.port_lines.get(record.domid, []) if record.domid is not None else []
        if record.domid is None:
            # The domain never reported started; its lines are those of the domid the
            # rig would have given it (domids count up from 1 per created domain).
            port = self.port_lines.get(self._expected_domid(number), [])
        return sorted(record.console + port, key=lambda item: item[0])

    def _expected_domid(self, number: int) -> int:
        return sum(1 for n in range(1, number + 1) if "created" in self.records[n].times)

    def domain_xen_errors(self, domid: int | None) -> list[str]:
        if domid is None:
            return []
        return [
            line.strip()
            for _, line in self.xen_timed
            if XEN_ERROR_LINE.search(line)
            and any(int(m[1]) == domid for m in _XEN_DOMAIN.finditer(line))
        ]


# --- judging each job ---------------------------------------------------------------


def _shutdown_reason(record: JobRecord) -> ShutdownReason | None:
    for line in record.xl_lines:
        match = _REASON.search(line)
        if match:
            code = int(match[1])
            return ShutdownReason(code) if code in ShutdownReason._value2member_map_ else None
    return None


def _xl_error(record: JobRecord) -> str:
    errors = [line for line in record.xl_lines if "error" in line.lower()]
    if errors:
        return errors[0]
    meaningful = [line for line in record.xl_lines if not line.startswith("Parsing config")]
    return meaningful[0] if meaningful else f"xl create exited with status {record.xl_status}"


_REASON_ENDS = {
    ShutdownReason.POWEROFF: End.DOMU_POWEROFF,
    ShutdownReason.REBOOT: End.DOMU_REBOOT,
    ShutdownReason.CRASH: End.DOMU_CRASH,
}


def judge_job(
    job: DomuJob, record: JobRecord, parser: RigParser, timed_out: bool
) -> tuple[Verdict, str, End]:
    """The verdict of one job before --expect, a one-line reason and how it ended."""
    if record.exit_on:
        return Verdict.OK, f"guest printed {job.exit_on!r} (--exit-on)", End.EXIT_ON
    if record.timed_out:
        return (
            Verdict.TIMEOUT,
            f"no shutdown {job.timeout:g} s after the start; xl destroyed it",
            End.TIMEOUT,
        )
    if "started" not in record.times and record.xl_status is not None:
        return Verdict.XEN_ERROR, f"xl create refused it: {_xl_error(record)}", End.XL_REFUSED
    if record.xl_status is None:
        return _judge_unfinished(record, parser, timed_out)
    reason = _shutdown_reason(record)
    if reason is ShutdownReason.POWEROFF:
        return Verdict.OK, "the domU powered off (SCHEDOP_shutdown)", End.DOMU_POWEROFF
    faults = parser.domain_xen_errors(record.domid)
    end = _REASON_ENDS.get(reason, End.DOMU_SHUTDOWN) if reason is not None else End.DOMU_SHUTDOWN
    if faults:
        return Verdict.CRASHED, f"Xen: {faults[0]}", end
    if reason is ShutdownReason.REBOOT:
        return Verdict.GUEST_FAILED, "the domU asked for a reboot (or triple faulted)", end
    if reason is ShutdownReason.CRASH:
        return Verdict.GUEST_FAILED, "the domU shut down with reason crash", end
    name = reason.name.lower() if reason is not None else "unknown"
    return Verdict.GUEST_FAILED, f"the domU shut down with reason {name}", end


def _judge_unfinished(
    record: JobRecord, parser: RigParser, timed_out: bool
) -> tuple[Verdict, str, End]:
    if parser.panic_lines:
        return Verdict.XEN_ERROR, f"Xen panic: {parser.panic_lines[0]}", End.XEN_PANIC
    if parser.end in (End.DOM0_CRASH, End.DOM0_REBOOT, End.DOM0_SHUTDOWN):
        return Verdict.LOADER_ERROR, f"the rig's dom0 died ({parser.end})", End.RIG_FAILED
    if parser.rig_errors:
        return Verdict.LOADER_ERROR, f"rig: {parser.rig_errors[0]}", End.RIG_FAILED
    if timed_out:
        return Verdict.TIMEOUT, f"the rig ran out of time ({parser.stage})", End.TIMEOUT
    return (
        Verdict.LOADER_ERROR,
        f"the rig stopped before this guest ended ({parser.stage})",
        (End.RIG_FAILED),
    )


def _memory_mib(list_line: str | None) -> int | None:
    # `xl list NAME` row: Name ID Mem VCPUs State Time(s)
    fields = (list_line or "").split()
    return int(fields[2]) if len(fields) >= 6 and fields[2].isdigit() else None


def _host_memory_mib(record: JobRecord) -> int | None:
    if record.free_before is None or record.free_running is None:
        return None
    return record.free_before - record.free_running


# Lines Xen's pv-shim prints on the guest's console ring before the guest runs.
_PVSHIM_LINE = re.compile(r"^\(XEN\) ")


def _timings(job: DomuJob, parser: RigParser, record: JobRecord, output: list[tuple[float, str]]):
    times = dict(parser.rig_times)
    times.update(record.times)
    # The first output is the guest's own: not a blank line, nor pv-shim's boot messages.
    output = [
        (when, text)
        for when, text in output
        if text.strip() and not (job.pvshim and _PVSHIM_LINE.match(text))
    ]
    if output:
        times["first_output"] = output[0][0]
        # dom0 polls for xl's "Waiting for domain" line; a guest that printed first
        # was running already.
        if "started" in times:
            times["started"] = min(times["started"], output[0][0])
    order = ("dom0_up", "toolstack_up", "created", "started", "first_output")
    order += ("shutdown_asked", "ended")
    return {stage: times[stage] for stage in order if stage in times}


def _job_result(
    number: int,
    job: DomuJob,
    parser: RigParser,
    run: QemuRun,
    argv: list[str],
) -> BootResult:
    record = parser.records[number]
    output = parser.guest_output(number)
    lines = [text for _, text in output]
    verdict, reason, end = judge_job(job, record, parser, run.timed_out)
    verdict, reason, matched = apply_expect(verdict, reason, job.expect, lines)
    report, complete = parse_report(lines)
    shutdown = _shutdown_reason(record)
    return BootResult(
        image=str(job.image),
        loader=job.loader,
        machine="pc",
        cmdline=job.cmdline,
        verdict=verdict,
        reason=reason,
        end=end,
        guest_lines=lines,
        report=report,
        report_complete=complete,
        xen_build=[],
        xen_errors=parser.domain_xen_errors(record.domid) + parser.panic_lines,
        qemu_messages=run.stderr,
        qemu_status=run.status,
        debug_exit=None,
        wall_time=run.wall_time,
        expect=job.expect,
        expect_matched=matched,
        qemu_pid=run.pid,
        command=argv,
        initrd=None if job.initrd is None else str(job.initrd),
        timings=_timings(job, parser, record, output),
        xenstore=dict(record.xenstore),
        shutdown_reason=None if shutdown is None else shutdown.name.lower(),
        domain_memory_mib=_memory_mib(record.list_line),
        host_memory_mib=_host_memory_mib(record),
        xl_messages=list(record.xl_lines),
    )


# --- the entry point ----------------------------------------------------------------


def boot_domus(
    jobs: Sequence[DomuJob],
    *,
    log: Path | None = None,
    on_progress: ProgressCallback | None = None,
    xen: Path | None = None,
) -> list[BootResult]:
    """Boot every job as a domU, one after the other, in one QEMU run; one result each.

    Raises BadInput for an image or initrd that cannot be read, MissingTool when
    QEMU, Xen or a Debian package of the rig is missing (the message names what to
    install and the cache), OutputError when the log cannot be written.
    """
    if not jobs:
        return []
    for job in jobs:
        check_image(job.image)
        if job.initrd is not None:
            check_initrd(job.initrd)
    if log is not None:
        save_log(None, log)
    qemu = find_qemu()
    try:
        xen_binary = find_xen(xen)
        files = dom0_files()
    except MissingTool as error:
        raise MissingTool(
            f"the xl rig cannot start: {error} (cache: {cache_dir()}; `make cache` fetches "
            "everything it needs)"
        ) from None
    timeout = RIG_START_BUDGET + sum(job.timeout + JOB_OVERHEAD for job in jobs)
    with tempfile.TemporaryDirectory(prefix="shimgen-xl-") as scratch:
        initrd = Path(scratch) / "dom0.cpio"
        _write_initrd(initrd, files, jobs)
        serial = Path(scratch) / "console.log"
        argv = rig_argv(qemu, xen_binary, files, initrd, jobs, serial)
        parser = RigParser(jobs)
        run = run_qemu(argv, serial, parser, timeout, on_progress)
        if log is not None:
            save_log(serial, log)
    return [_job_result(number, job, parser, run, argv) for number, job in enumerate(jobs, 1)]


def _write_initrd(target: Path, files: Dom0Files, jobs: Sequence[DomuJob]) -> None:
    # The cached archive, then the jobs' archive: Linux unpacks both, in order.
    with target.open("wb") as out:
        with files.initramfs.open("rb") as base:
            while chunk := base.read(1 << 20):
                out.write(chunk)
        out.write(jobs_archive(jobs, files))
