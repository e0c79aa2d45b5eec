"""Boot an image for real: QEMU's PVH loader, Debian's Xen 4.17 inside QEMU (TCG) with
the image as dom0, or (xlboot.py) as a domU started by `xl create`.

:func:`boot` starts QEMU (qemu.py), follows the console (console.py), decides when
the run is over and returns a :class:`BootResult`.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MissingTool, OutputError
from ..structs.harness import (
    DEBUG_EXIT_OK,
)
from .console import (
    ConsoleParser,
    End,
    QemuRun,
    Verdict,
    apply_expect,
    debug_exit_value,
    end_of,
    judge,
    parse_report,
)
from .qemu import (
    XEN_PACKAGE,
    ProgressCallback,
    check_image,
    check_initrd,
    find_qemu,
    find_xen,
    qemu_pvh_argv,
    run_qemu,
    xen_argv,
)

# xl-*: a domU started by `xl create` in a Debian Linux dom0 (see xlboot.py)
XL_LOADERS = ("xl-pv", "xl-pvh", "xl-pvshim")
LOADERS = ("qemu-pvh", "xen-pv", "xen-pvh", *XL_LOADERS)
MACHINES = ("q35", "pc", "microvm")
DEFAULT_MACHINE = "q35"
DEFAULT_TIMEOUT = 30.0


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
    # xl loaders: once the guest's output matches this regex, dom0 asks it to power
    # off (xl shutdown) and the verdict is how it ends
    shutdown_on: str | None = None

    def __post_init__(self) -> None:
        if self.loader not in LOADERS:
            raise ValueError(f"loader must be one of {', '.join(LOADERS)}")
        if self.machine not in MACHINES:
            raise ValueError(f"machine must be one of {', '.join(MACHINES)}")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if self.uses_xl and self.exit_ok != DEBUG_EXIT_OK:
            raise ValueError("exit_ok: a domU cannot reach QEMU's isa-debug-exit device")
        if self.shutdown_on is not None and not self.uses_xl:
            raise ValueError("shutdown_on: only an xl domU is asked to shut down")

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
    # what Xen's free memory dropped by while the domU ran (`xl info` free_memory before
    # `xl create` and after it started): every page Xen spent on it, pv-shim's included
    host_memory_mib: int | None = None
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
        check_initrd(options.initrd)
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
        save_log(None, options.log)  # an unwritable log fails before a slow boot
    qemu = find_qemu()
    xen = find_xen(options.xen) if options.uses_xen else None
    with tempfile.TemporaryDirectory(prefix="shimgen-boot-") as scratch:
        log = Path(scratch) / "console.log"
        argv = _argv(qemu, xen, image.resolve(), options, Path(scratch), log)
        parser = ConsoleParser(xen=options.uses_xen, exit_on=options.exit_on)
        run = run_qemu(argv, log, parser, options.timeout, on_progress)
        if options.log is not None:
            save_log(log, options.log)
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


def save_log(log: Path | None, destination: Path) -> None:
    try:
        data = log.read_bytes() if log is not None and log.exists() else b""
        destination.write_bytes(data)
    except OSError as error:
        raise OutputError(f"{destination}: cannot write the log ({error.strerror})") from None


def _result(
    image: Path, options: BootOptions, argv: list[str], run: QemuRun, parser: ConsoleParser
) -> BootResult:
    end = end_of(run, parser)
    verdict, reason = judge(run, parser, end, options.exit_ok)
    verdict, reason, matched = apply_expect(verdict, reason, options.expect, parser.guest_lines)
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
        debug_exit=debug_exit_value(run.status),
        wall_time=run.wall_time,
        expect=options.expect,
        expect_matched=matched,
        qemu_pid=run.pid,
        command=argv,
        initrd=None if options.initrd is None else str(options.initrd),
    )
