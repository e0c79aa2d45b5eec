"""QEMU for the boot harness: finding QEMU and Xen, their command lines, and running
QEMU in a process group of its own that is always ended, whatever happens (every
exit path, including exceptions and Ctrl-C, goes through :func:`_stop`).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BadInput, MissingTool
from ..structs.harness import (
    DEBUG_EXIT_PORT,
)
from .console import ConsoleParser, End, LogTail, QemuRun, _decode

if TYPE_CHECKING:
    from .boot import BootOptions

ProgressCallback = Callable[[str], None]

QEMU = "qemu-system-x86_64"

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


def check_initrd(initrd: Path) -> None:
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


def common_qemu_args(options: BootOptions) -> list[str]:
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
        *(["-initrd", escape_commas(str(options.initrd))] if options.initrd else []),
        "-serial", "none",
        "-debugcon", f"file:{chardev_path(log)}",
        *common_qemu_args(options),
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
    module = escape_commas(f"{guest} {options.cmdline}".rstrip())
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
        "-serial", f"file:{chardev_path(log)}",
        *common_qemu_args(options),
    ]  # fmt: skip


def escape_commas(text: str) -> str:
    # QEMU splits -initrd at commas into multiboot modules; ",," is a literal comma.
    return text.replace(",", ",,")


def chardev_path(path: Path) -> str:
    return escape_commas(str(path))


# --- running QEMU -------------------------------------------------------------------


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


def run_qemu(
    argv: list[str],
    log: Path,
    parser: ConsoleParser,
    timeout: float,
    on_progress: ProgressCallback | None,
) -> QemuRun:
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
    return QemuRun(status, timed_out, wall_time, proc.pid, stderr, timeout)
