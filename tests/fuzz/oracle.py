"""What must hold for any input, however hostile.

In-process: `image_from_bytes`, `evaluate`, `patch_bytes` (and `diff_images` when
shimgen.verify.diff exists) end normally or raise a ShimgenError with a documented input
status (3 bad input, 6 refused); nothing else, and within a time limit. A patch
that succeeds must be a sound universal image: readable, its input recoverable
byte for byte from it, PHYS32_ENTRY in the last PT_NOTE, bootable as PVH, and as PV
whenever the input was.

Through the CLI (`python -m shimgen`, a subprocess with a timeout and a memory
limit): a documented exit status (never 70), at most one line on stderr and never
a traceback, and `patch` leaves no output file and no temporary file on error.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from shimgen.structs import XenNote
from shimgen.structs.elf import SegmentType

from shimgen.errors import ExitCode, ShimgenError
from shimgen.read.check import Verdicts, evaluate
from shimgen.read.image import Image, image_from_bytes
from shimgen.read.shim_view import shim_meta
from shimgen.write.patch import PatchResult, original_bytes, patch_bytes

# Time limits count CPU seconds, not wall time: a hang (a loop that never ends) burns
# CPU and is caught; a machine loaded by other work slows the clock but not the count.
IN_PROCESS_SECONDS = 10
CLI_SECONDS = 20
CLI_WALL_FACTOR = 6  # and a wall-clock bound, far above, for a process that blocks
IN_PROCESS_MEMORY = 2 << 30
CLI_MEMORY = 4 << 30  # a memory bomb fails (MemoryError, exit 70) instead of swapping
NAME = "fuzz-input"
READ_CODES = frozenset({ExitCode.BAD_INPUT})
PATCH_CODES = frozenset({ExitCode.BAD_INPUT, ExitCode.REFUSED})
FEATURES_REASON = "FEATURES requires"  # check.py's words for what the shim cannot change
HAS_DIFF = importlib.util.find_spec("shimgen.verify.diff") is not None
# Documented statuses per command for an image argument (2 and 4 cannot happen here).
CLI_CODES = {
    "inspect": frozenset({ExitCode.OK, ExitCode.BAD_INPUT}),
    "check": frozenset({ExitCode.OK, ExitCode.FAILED, ExitCode.BAD_INPUT}),
    "patch": frozenset({ExitCode.OK, ExitCode.BAD_INPUT, ExitCode.REFUSED}),
    "diff": frozenset({ExitCode.OK, ExitCode.FAILED, ExitCode.BAD_INPUT}),
}
T = TypeVar("T")


CRASH_DIR = Path(os.environ.get("SHIMGEN_FUZZ_CRASHES", "build/fuzz-crashes"))


class Hang(AssertionError):
    """A reader ran past its time limit."""


@contextlib.contextmanager
def keep_on_failure(data: bytes) -> Iterator[None]:
    """Save an input that fails an oracle (to minimise it and keep it in
    tests/regressions); the failure names the file."""
    try:
        yield
    except BaseException as error:
        CRASH_DIR.mkdir(parents=True, exist_ok=True)
        path = CRASH_DIR / f"{hashlib.sha256(data).hexdigest()[:16]}.bin"
        path.write_bytes(data)
        error.add_note(f"input saved as {path.resolve()}")
        raise


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise Hang once this process has used seconds of CPU (ITIMER_PROF counts user and
    system time of every thread)."""

    def expire(signum: int, frame: Any) -> None:
        raise Hang(f"still running after {seconds} s of CPU")

    previous = signal.signal(signal.SIGPROF, expire)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def clean(action: Callable[[], T], allowed: frozenset[ExitCode]) -> T | None:
    """action(), or None when it raised a ShimgenError with an allowed status."""
    try:
        return action()
    except ShimgenError as error:
        status = ExitCode(error.exit_code)
        assert status in allowed, f"{type(error).__name__} ({status.name}): {error}"
        assert str(error).strip(), f"{type(error).__name__} without a message"
        return None


# --- in-process ---------------------------------------------------------------------


@contextlib.contextmanager
def memory_limit(extra: int = IN_PROCESS_MEMORY) -> Iterator[None]:
    """Address space capped at what the process has now plus extra: a memory bomb
    raises MemoryError (a finding) instead of exhausting the machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as statm:
        now = int(statm.read().split()[0]) * resource.getpagesize()
    limit = now + extra if hard == resource.RLIM_INFINITY else min(now + extra, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def check_in_process(
    data: bytes, other: bytes | None = None, seconds: float = IN_PROCESS_SECONDS
) -> str:
    """Run every reader (and the patcher, and diff against other) on data; the
    outcome, for statistics."""
    with time_limit(seconds), memory_limit():
        image = clean(lambda: image_from_bytes(data, NAME), READ_CODES)
        if image is None:
            return "rejected"
        verdicts = evaluate(image)
        _check_image(image, data, verdicts)
        if HAS_DIFF and other is not None:
            _check_diff(image, other)
        result = clean(lambda: patch_bytes(data, NAME), PATCH_CODES)
        if result is None:
            return _repatch(image, data) or "read, patch refused"
        check_patched(image, verdicts, result)
        return "patched"


def _repatch(image: Image, data: bytes) -> str | None:
    """An image with a shimgen note: patch --force rebuilds from its original bytes."""
    if not any(note.owner == "shimgen" for note in image.notes):
        return None
    result = clean(lambda: patch_bytes(data, NAME, force=True), PATCH_CODES)
    if result is None:
        return "read, re-patch refused"
    assert result.repatched
    meta = shim_meta(image)
    assert meta is not None
    original = image_from_bytes(original_bytes(image.data, meta), "original")
    check_patched(original, evaluate(original), result)
    return "re-patched"


def _check_image(image: Image, data: bytes, verdicts: Verdicts) -> None:
    assert image.size == len(data)
    for note in image.notes:
        assert 0 <= note.offset < len(image.data), note
    json.dumps(image.to_json() | {"verdicts": verdicts.to_json()})


def _check_diff(image: Image, other: bytes) -> None:
    from shimgen.verify.diff import diff_images

    second = clean(lambda: image_from_bytes(other, "fuzz-other"), READ_CODES)
    if second is not None:
        for report in (diff_images(image, second), diff_images(second, image)):
            json.dumps(report.to_json())
            report.summary()


def check_patched(image: Image, verdicts: Verdicts, result: PatchResult) -> None:
    out = image_from_bytes(result.data, "patched")
    assert not out.header_overflow, out.header_overflow
    meta = shim_meta(out)
    assert meta is not None, "no shimgen metadata note"
    assert original_bytes(result.data, meta) == image.data, "input not recoverable"
    last = out.segments[-1]
    assert last.type == SegmentType.NOTE and last.align == 4, last
    phys = [
        n
        for n in out.segment_xen_notes
        if n.type == XenNote.PHYS32_ENTRY and n.source == f"PT_NOTE[{last.index}]"
    ]
    assert phys and phys[-1].value == result.plan.pvh_entry, phys
    after = evaluate(out)
    if verdicts.pv.ok:
        assert after.pv.ok and after.pvh.ok, (after.pv.reasons, after.pvh.reasons)
    else:
        # A kernel's FEATURES ('!dom0', an unknown required feature) may keep the
        # output from booting as a domU too; nothing else may.
        assert all(FEATURES_REASON in r for r in after.pvh.reasons), after.pvh.reasons


# --- the CLI ------------------------------------------------------------------------


def _limits(seconds: float) -> list[str]:
    """prlimit as a prefix (preexec_fn is unsafe with the threads check_cli uses): the
    memory bound, and the CPU seconds after which the kernel ends the process
    (SIGXCPU at the soft limit, SIGKILL a second later at the hard one)."""
    prlimit = shutil.which("prlimit")
    cpu = math.ceil(seconds)
    return [prlimit, f"--as={CLI_MEMORY}", f"--cpu={cpu}:{cpu + 1}"] if prlimit else []


def run_cli(
    *args: str, cwd: Path | None = None, seconds: float = CLI_SECONDS
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SHIMGEN_DEBUG"}
    env["COLUMNS"] = "120"
    try:
        result = subprocess.run(
            [*_limits(seconds), sys.executable, "-m", "shimgen", *args],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=seconds * CLI_WALL_FACTOR,
            env=env,
            cwd=cwd,
        )
    except subprocess.TimeoutExpired:
        wall = seconds * CLI_WALL_FACTOR
        raise Hang(f"shimgen {' '.join(args)}: no answer after {wall} s") from None
    if result.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        raise Hang(f"shimgen {' '.join(args)}: still running after {seconds} s of CPU")
    return result


def check_cli_result(command: str, result: subprocess.CompletedProcess[str]) -> None:
    where = " ".join(map(str, result.args[result.args.index("shimgen") :]))
    assert result.returncode in CLI_CODES[command], (
        f"{where}: exit {result.returncode}: {result.stderr.strip()}"
    )
    assert "Traceback" not in result.stderr, f"{where}: {result.stderr}"
    lines = result.stderr.splitlines()
    assert len(lines) <= 1, f"{where}: stderr has {len(lines)} lines: {result.stderr}"
    if result.returncode not in (ExitCode.OK, ExitCode.FAILED):
        assert lines and lines[0].startswith("shimgen: error: "), f"{where}: {result.stderr}"


def check_cli(
    path: Path, other: Path | None = None, seconds: float = CLI_SECONDS, human: bool = True
) -> None:
    """inspect, check, patch (and diff) at once on one file; human: also the rich
    renderings of inspect and diff, not only their JSON."""
    out = path.parent / "out.elf"
    runs = [
        ("inspect", ("inspect", "--json", str(path))),
        ("check", ("check", "--json", str(path))),
        ("patch", ("patch", str(path), "-o", str(out))),
    ]
    if human:
        runs.append(("inspect", ("inspect", str(path))))
    if HAS_DIFF and other is not None:
        runs.append(("diff", ("diff", *(() if human else ("--json",)), str(path), str(other))))
    before = set(path.parent.iterdir())
    with ThreadPoolExecutor(max_workers=len(runs)) as pool:
        results = list(pool.map(lambda run: run_cli(*run[1], seconds=seconds), runs))
    for (command, _), result in zip(runs, results, strict=True):
        check_cli_result(command, result)
    _check_patch_output(results[2], out, before)


def _check_patch_output(
    result: subprocess.CompletedProcess[str], out: Path, before: set[Path]
) -> None:
    """On success the output and nothing else; on error nothing at all."""
    after = set(out.parent.iterdir())
    if result.returncode == ExitCode.OK:
        assert after - before == {out}, sorted(map(str, after - before))
        assert shim_meta(image_from_bytes(out.read_bytes(), str(out))) is not None
        out.unlink()
    else:
        assert after == before, f"left behind: {sorted(map(str, after - before))}"
