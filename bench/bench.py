"""shimgen's figures, measured in one run: `python bench/bench.py` (after `make setup`).

Prints:
  (a) patch time of a sample next to `objcopy --add-section` of the same file (the
      baseline), as a ratio;
  (b) emulated instruction counts of every shim path and the shim's code/data bytes;
  (c) `shimgen inspect` start-up time on a small image, next to `python -c pass`;
  (d) boot time under qemu-pvh of the PVH-native sample, unpatched, next to the
      patched PV sample booting through the shim.
Counts are deterministic; times are medians of several runs on this machine.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "build"
RUNS = 5
LARGE_IMAGE_BYTES = 100 << 20
GNU_TIME = "/usr/bin/time"  # Debian package time


def median_seconds(action: Callable[[], object], runs: int = RUNS) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(*argv: str | Path) -> None:
    subprocess.run([str(a) for a in argv], check=True, capture_output=True)


def _child_run(argv: list[str | Path]) -> tuple[float, int]:
    """Wall time and peak RSS (KiB) of one command, measured by GNU time: the
    rusage of a child forked from this (large) process would count our pages too."""
    start = time.perf_counter()
    done = subprocess.run(
        [GNU_TIME, "-f", "%M", *[str(a) for a in argv]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=True,
    )
    elapsed = time.perf_counter() - start  # GNU time's own %e has 10 ms steps
    return elapsed, int(done.stderr.strip().splitlines()[-1])


def _median_child(argv: list[str | Path]) -> tuple[float, int]:
    runs = [_child_run(argv) for _ in range(RUNS)]
    return statistics.median(r[0] for r in runs), max(r[1] for r in runs)


def _large_image(workdir: Path) -> Path:
    """A PV kernel image of about 100 MB, generated like the test images."""
    sys.path.insert(0, str(ROOT / "tests"))
    import imagegen

    spec = dataclasses.replace(imagegen.case("pv64").spec, text_size=LARGE_IMAGE_BYTES)
    path = workdir / "large.elf"
    path.write_bytes(imagegen.write_elf(spec))
    return path


def patch_time(workdir: Path) -> list[tuple[str, str]]:
    rows = []
    blob = workdir / "blob"
    blob.write_bytes(b"\0" * 0x7000)  # about the size of the shim segment
    for label, source in (("pv-hello", SAMPLES / "pv-hello"), ("100 MB", _large_image(workdir))):
        out = workdir / "patched"
        shimgen = [sys.executable, "-m", "shimgen", "patch", source, "-o", out, "--force", "--json"]
        objcopy = ["objcopy", "--add-section", f".shim={blob}", source, workdir / "objcopied"]
        ours, our_rss = _median_child(shimgen)
        base, base_rss = _median_child(objcopy)
        rows += [
            (f"patch {label}: shimgen patch", f"{ours * 1000:.0f} ms, {our_rss >> 10} MiB peak"),
            (
                f"patch {label}: objcopy --add-section",
                f"{base * 1000:.0f} ms, {base_rss >> 10} MiB",
            ),
            (f"patch {label}: ratio shimgen / objcopy", f"{ours / base:.2f}x time"),
        ]
    return rows


def shim_counts(workdir: Path) -> list[tuple[str, str]]:
    from shimgen.emulate import StartState, emulate
    from shimgen.image import read_image

    rows = []
    for sample in ("pv-hello", "pv-highhalf"):
        out = workdir / f"{sample}.universal"
        argv = [sys.executable, "-m", "shimgen", "patch", SAMPLES / sample, "-o", out, "--json"]
        plan = json.loads(
            subprocess.run(
                [str(a) for a in argv], check=True, capture_output=True, text=True
            ).stdout
        )
        shim = plan["shim"]
        rows.append((f"{sample}: shim code", f"{shim['code_size']} B"))
        rows.append(
            (f"{sample}: shim segment filesz / memsz", f"{shim['filesz']} / {shim['memsz']} B")
        )
        image = read_image(out)
        for label, state in (
            ("PV", StartState("pv")),
            ("PVH + Xen, hvm_start_info v1", StartState("pvh", xen=True, hvm_version=1)),
            ("PVH + Xen, v0 (memory map from Xen)", StartState("pvh", xen=True, hvm_version=0)),
            ("PVH without Xen, v1", StartState("pvh", xen=False, hvm_version=1)),
            ("PVH + Xen, 1023-byte cmdline", StartState("pvh", cmdline=b"x" * 1023)),
        ):
            result = emulate(image, state)
            rows.append((f"{sample}: {label}", f"{result.instructions} instructions"))
    return rows


def inspect_startup() -> list[tuple[str, str]]:
    image = SAMPLES / "pvh-hello"
    ours = median_seconds(lambda: run(sys.executable, "-m", "shimgen", "inspect", image))
    bare = median_seconds(lambda: run(sys.executable, "-c", "pass"))
    return [
        ("shimgen inspect pvh-hello", f"{ours * 1000:.0f} ms"),
        ("python -c pass (baseline)", f"{bare * 1000:.0f} ms"),
        ("ratio", f"{ours / bare:.1f}x"),
    ]


def boot_times(workdir: Path) -> list[tuple[str, str]]:
    from shimgen.boot import BootOptions, boot

    universal = workdir / "pv-hello.universal"
    options = BootOptions(loader="qemu-pvh")
    native = median_seconds(lambda: boot(SAMPLES / "pvh-hello", options), runs=3)
    shimmed = median_seconds(lambda: boot(universal, options), runs=3)
    return [
        ("qemu-pvh boot, pvh-hello (native PVH)", f"{native * 1000:.0f} ms"),
        ("qemu-pvh boot, pv-hello through the shim", f"{shimmed * 1000:.0f} ms"),
        ("ratio shim / native", f"{shimmed / native:.2f}x"),
    ]


def main() -> int:
    from rich.console import Console
    from rich.table import Table

    subprocess.run(["make", "-s", "-C", str(ROOT / "samples")], check=True)
    table = Table(
        title=f"shimgen bench on {platform.node()} ({platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()})"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        sections: list[tuple[str, list[tuple[str, str]]]] = [
            ("(b) shim paths", shim_counts(workdir)),
            (
                "(a) patch",
                patch_time(workdir) if shutil.which("objcopy") and Path(GNU_TIME).exists() else [],
            ),
            ("(c) start-up", inspect_startup()),
            ("(d) boot", boot_times(workdir) if shutil.which("qemu-system-x86_64") else []),
        ]
    for title, rows in sections:
        table.add_row(f"[bold]{title}[/]", "")
        for label, value in rows:
            table.add_row(f"  {label}", value)
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
