"""shimgen's figures, measured in one run: `python bench/bench.py` (after `make setup`).

Prints:
  (a) patch time and peak memory of a sample and of a ~100 MB image, next to two
      baselines on the same file: `objcopy --add-section` (writes in place, no
      fsync), and, like for like with shimgen's fsyncs, that objcopy then
      `sync FILE` (coreutils fsyncs the file); a ratio to each;
  (b) emulated instruction counts of every shim path and the shim's code/data bytes;
  (c) `shimgen inspect` start-up time on a small image, next to `python -c pass`;
  (d) boot time under qemu-pvh of the PVH-native sample, unpatched, next to the
      patched PV sample booting through the shim;
  (e) domU boots in one xl rig run (Xen 4.17 in QEMU, `xl create` in a Linux dom0):
      the patched PV samples as plain PVH next to the unpatched ones under Xen's
      pv-shim (PV in a PVH container, Xen's own way; pv-classic is PV-only and runs as
      PVH through the shim's PV ABI layer), and a PVH-native kernel with no shim as
      the floor any PVH guest pays: time to the first console line and to
      the shutdown, the domain's memory as `xl list` shows it, and what Xen's free
      memory dropped by while it ran (pv-shim's own memory counts there); the same
      for XTF's test-pv64-example (../shared/thirdparty), with each one's outcome
      (the patched one's figures show even while it does not pass under PVH).
Counts are deterministic; times are medians of several runs on this machine. shimgen
runs as installed: its bytecode compiled once (pip does it at install time), not on
every run as PYTHONDONTWRITEBYTECODE would have it.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
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
# What the bench imports itself; the commands it times need the same.
NEEDED_MODULES = ("shimgen.write.patch", "shimgen.verify.emulate", "rich")
RUNS = 5
SMALL_RUNS = 15  # runs of the commands that take a fraction of a second
LARGE_RUNS = 9  # runs of each command patching the 100 MB image
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
    subprocess.run([str(a) for a in argv], check=True, capture_output=True, env=CHILD_ENV)


def _installed_env(pycache: Path) -> dict[str, str]:
    """The environment of a shimgen run as installed: bytecode compiled once, here into
    a cache of the bench's own (pip compiles it at install time; a tree run with
    PYTHONDONTWRITEBYTECODE recompiles every module on every start, ~30 ms). The
    shimgen measured is this checkout's, installed or not."""
    path = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    env = dict(os.environ, PYTHONPYCACHEPREFIX=str(pycache), PYTHONPATH=path)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def require_shimgen() -> None:
    """Import this checkout's shimgen (with or without an install), or say what to run
    when this Python lacks its dependencies."""
    sys.path.insert(0, str(ROOT))
    try:
        for name in NEEDED_MODULES:
            importlib.import_module(name)
    except ImportError as error:
        venv = ROOT / ".venv" / "bin" / "python"
        run = f"{venv} {Path(__file__).resolve()}" if venv.exists() else "make bench"
        print(
            f"bench/bench.py: {sys.executable} cannot import what shimgen needs ({error}): "
            f"run {run}, or pip install -e . into this Python",
            file=sys.stderr,
        )
        raise SystemExit(4) from None


CHILD_ENV = _installed_env(ROOT / ".cache" / "bench-pycache")


def _child_run(argv: list[str | Path], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Wall time and peak RSS (KiB) of one command, measured by GNU time: the
    rusage of a child forked from this (large) process would count our pages too."""
    start = time.perf_counter()
    done = subprocess.run(
        [GNU_TIME, "-f", "%M", *[str(a) for a in argv]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=True,
        env=CHILD_ENV if env is None else env,
    )
    elapsed = time.perf_counter() - start  # GNU time's own %e has 10 ms steps
    return elapsed, int(done.stderr.strip().splitlines()[-1])


def _settled() -> None:
    """Write back every dirty page before a timed run: on ext4 an fsync commits the
    journal and waits for other files' dirty data (a 100 MB output of the run
    before), a wait that belongs to no run."""
    os.sync()


def _timed(argv: list[str | Path], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall and CPU time (user + system, every thread) of one run of a command."""
    start = time.perf_counter()
    child = subprocess.Popen(
        [str(a) for a in argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=CHILD_ENV if env is None else env,
    )
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        raise subprocess.CalledProcessError(os.waitstatus_to_exitcode(status), argv)
    return wall, usage.ru_utime + usage.ru_stime


def _interleaved(
    commands: dict[str, tuple[list[str | Path], dict[str, str] | None]],
    runs: int = SMALL_RUNS,
    before: Callable[[], object] = lambda: None,
) -> dict[str, tuple[float, float]]:
    """Median wall and CPU time of each command, the commands taking turns run by run
    so that each sees the same load (others' jobs come and go on a shared machine)."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for argv, env in commands.values():  # bytecode compiled, caches filled
        before()
        _timed(argv, env)
    for _ in range(runs):
        for name, (argv, env) in commands.items():
            before()
            times[name].append(_timed(argv, env))
    return {
        name: (statistics.median(w for w, _ in each), statistics.median(c for _, c in each))
        for name, each in times.items()
    }


def _wall_cpu(figures: tuple[float, float]) -> str:
    return f"{_ms(figures[0])} wall, {_ms(figures[1])} CPU"


def _median_child(*commands: list[str | Path]) -> tuple[float, int]:
    """Median over RUNS of the commands run one after the other (their times added),
    and the largest peak RSS any of them reached."""
    runs = []
    for _ in range(RUNS):
        _settled()
        each = [_child_run(argv) for argv in commands]
        runs.append((sum(t for t, _ in each), max(rss for _, rss in each)))
    return statistics.median(r[0] for r in runs), max(r[1] for r in runs)


def _large_image(workdir: Path) -> Path:
    """A PV kernel image of about 100 MB, generated like the test images."""
    sys.path.insert(0, str(ROOT / "tests"))
    import imagegen

    spec = dataclasses.replace(imagegen.case("pv64").spec, text_size=LARGE_IMAGE_BYTES)
    path = workdir / "large.elf"
    if not path.exists():  # made once per run; patch --in-place restores it after use
        path.write_bytes(imagegen.write_elf(spec))
    return path


# The least any Python tool that records the input's sha256 and writes the output
# atomically does: hash in a thread while the kernel copies, then rename. No ELF.
FLOOR_SCRIPT = """
import hashlib, os, sys, threading
src = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(src).st_size
def digest():
    hasher, buffer, offset = hashlib.sha256(), memoryview(bytearray(1 << 20)), 0
    while offset < size:
        count = os.preadv(src, [buffer], offset)
        hasher.update(buffer[:count])
        offset += count
worker = threading.Thread(target=digest)
worker.start()
dst = os.open(sys.argv[2] + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
done = 0
while done < size:
    done += os.copy_file_range(src, dst, size - done, done, done)
worker.join()
os.fsync(dst)
os.close(dst)
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
"""


def _shimgen(*args: str | Path) -> list[str | Path]:
    return [sys.executable, "-m", "shimgen", *args]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _objcopy_rows(label: str, source: Path, workdir: Path, ours: float) -> list[tuple[str, str]]:
    """objcopy adding a section of the shim's size, alone and followed by `sync FILE`
    (coreutils fsyncs the file: the durability shimgen's output has)."""
    blob = workdir / "blob"
    blob.write_bytes(b"\0" * 0x7000)  # about the size of the shim segment
    copied = workdir / "objcopied"
    objcopy = ["objcopy", "--add-section", f".shim={blob}", source, copied]
    base, base_rss = _median_child(objcopy)
    synced, synced_rss = _median_child(objcopy, ["sync", copied])
    return [
        (f"patch {label}: objcopy --add-section", f"{_ms(base)}, {base_rss >> 10} MiB peak"),
        (f"patch {label}: objcopy, then sync FILE", f"{_ms(synced)}, {synced_rss >> 10} MiB peak"),
        (f"patch {label}: ratio shimgen / objcopy", f"{ours / base:.2f}x time"),
        (f"patch {label}: ratio shimgen / (objcopy + sync)", f"{ours / synced:.2f}x time"),
    ]


def patch_large(workdir: Path) -> list[tuple[str, str]]:
    """`patch -o` of a 100 MB image next to the floor any Python patch with a digest
    and a durable write has (FLOOR_SCRIPT), and objcopy. Each command overwrites its
    output of the previous run, as a rebuild does (replacing a 100 MB file frees its
    blocks, ~20 ms here, for every tool alike). The floor and shimgen alternate, run
    by run, so that both see the same load."""
    source = _large_image(workdir)
    shimgen = _shimgen("patch", source, "-o", workdir / "patched", "--force", "--json")
    script = workdir / "floor.py"
    script.write_text(FLOOR_SCRIPT)
    floor_argv = [sys.executable, script, source, workdir / "floored"]
    figures = _interleaved(
        {"shimgen": (shimgen, None), "floor": (floor_argv, None)},
        runs=LARGE_RUNS,
        before=_settled,
    )
    _settled()
    _, peak = _child_run(shimgen)
    ours, floor = figures["shimgen"], figures["floor"]
    return [
        ("patch 100 MB: shimgen patch -o", f"{_wall_cpu(ours)}, {peak >> 10} MiB peak"),
        (
            "patch 100 MB: floor (Python: hash in a thread, kernel copy, fsync, rename)",
            _wall_cpu(floor),
        ),
        (
            "patch 100 MB: ratio shimgen / floor",
            f"{ours[0] / floor[0]:.2f}x wall, {ours[1] / floor[1]:.2f}x CPU "
            f"(target < {TARGET_FLOOR_RATIO}x)",
        ),
        *_objcopy_rows("100 MB", source, workdir, ours[0]),
    ]


def _restore(path: Path, header: bytes, size: int) -> None:
    """Undo an in-place patch outside the timing: the original header, the original
    size, on the disk (with everything else: _settled)."""
    with path.open("r+b") as stream:
        stream.truncate(size)
        stream.write(header)
        stream.flush()
    _settled()


def _hypercall_scan_cpu(path: Path) -> float:
    """Median CPU time of the search of the kernel's code for calls into its hypercall
    page (read/hypercalls.py), as patch does it over the mapped file: it decides
    whether the PV ABI layer goes in, and it reads every executable byte."""
    import mmap

    from shimgen.read.hypercalls import scan_hypercalls
    from shimgen.read.image import image_from_bytes

    with path.open("rb") as stream:
        data = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
    image = image_from_bytes(data, str(path))
    times = []
    for _ in range(RUNS):
        start = time.process_time()
        scan_hypercalls(image)
        times.append(time.process_time() - start)
    return statistics.median(times)


def patch_in_place(workdir: Path) -> list[tuple[str, str]]:
    """`patch --in-place` of the 100 MB image and of pv-hello, each restored before
    every run, the commands taking turns: without the digest, what grows with the
    image is the search of its code for hypercalls."""
    large = _large_image(workdir)
    small = workdir / "pv-hello"
    shutil.copyfile(SAMPLES / "pv-hello", small)
    originals = [(path, path.read_bytes()[:0x40], path.stat().st_size) for path in (large, small)]

    def restore() -> None:
        for path, header, size in originals:
            _restore(path, header, size)

    def in_place(path: Path, *options: str) -> tuple[list[str | Path], None]:
        return _shimgen("patch", path, "--in-place", "--json", *options), None

    figures = _interleaved(
        {
            "large": in_place(large, "--no-digest"),
            "small": in_place(small, "--no-digest"),
            "digest": in_place(large),
            "start": ([sys.executable, "-c", "pass"], None),
        },
        before=restore,
    )
    restore()
    large_t, small_t, start_t = figures["large"], figures["small"], figures["start"]
    grows = (large_t[0] - small_t[0], large_t[1] - small_t[1])
    beyond = (large_t[0] - start_t[0], large_t[1] - start_t[1])
    return [
        ("in place 100 MB --no-digest", _wall_cpu(large_t)),
        ("in place pv-hello --no-digest", _wall_cpu(small_t)),
        (
            "in place: 100 MB minus pv-hello (what grows with the image)",
            f"{_wall_cpu(grows)} (target: does not grow)",
        ),
        (
            "  of which the search of the 100 MB of code for hypercalls (in-process)",
            f"{_ms(_hypercall_scan_cpu(large))} CPU",
        ),
        ("in place 100 MB, with the digest", _wall_cpu(figures["digest"])),
        ("python -c pass (interpreter start)", _wall_cpu(start_t)),
        (
            "in place 100 MB --no-digest beyond interpreter start",
            f"{_wall_cpu(beyond)} (target < {TARGET_IN_PLACE_MS} ms)",
        ),
    ]


# Importing what `patch` imports, and nothing else: the patch without its work.
PATCH_IMPORTS = "import shimgen.cli.patch_cmd, shimgen.api, shimgen.plan, shimgen.write.patch"


def _without_site(env: dict[str, str]) -> dict[str, str]:
    """The environment of `python -S` finding the checkout and the dependencies on
    PYTHONPATH: no site, so no .pth file runs (an editable install's finder is one).
    What a non-editable install costs, less site's own few milliseconds."""
    import sysconfig

    path = os.pathsep.join((str(ROOT), sysconfig.get_paths()["purelib"]))
    return dict(env, PYTHONPATH=path)


def patch_small(workdir: Path) -> list[tuple[str, str]]:
    """`patch -o` of pv-hello, whole process, with the assembled templates in the
    cache (any patch of the same image and options after the first) and without,
    next to the interpreter's start and to importing what patch imports."""
    cache = workdir / "cache"
    out = workdir / "patched-small"
    argv = _shimgen("patch", SAMPLES / "pv-hello", "-o", out, "--force", "--json")
    env = dict(CHILD_ENV, SHIMGEN_CACHE=str(cache))
    bare = _without_site(env)
    figures = _interleaved(
        {
            "patch": (argv, env),
            "imports": ([sys.executable, "-c", PATCH_IMPORTS], env),
            "start": ([sys.executable, "-c", "pass"], env),
            "patch -S": ([sys.executable, "-S", *argv[1:]], bare),
            "start -S": ([sys.executable, "-S", "-c", "pass"], bare),
        }
    )
    _, rss = _child_run(argv, env)
    cold = []
    for _ in range(RUNS):
        shutil.rmtree(cache / "asm", ignore_errors=True)
        cold.append(_timed(argv, env))
    patch, imports = figures["patch"], figures["imports"]
    work = (patch[0] - imports[0], patch[1] - imports[1])
    return [
        (
            "patch pv-hello: shimgen patch (templates cached)",
            f"{_wall_cpu(patch)}, {rss >> 10} MiB peak (target < {TARGET_SMALL_PATCH_MS} ms wall)",
        ),
        ("patch pv-hello: python -c pass (interpreter start)", _wall_cpu(figures["start"])),
        (f"patch pv-hello: python -c '{PATCH_IMPORTS}'", _wall_cpu(imports)),
        ("patch pv-hello: the patch's own work (patch minus those imports)", _wall_cpu(work)),
        (
            "patch pv-hello: the same patch under python -S (no site, no editable finder)",
            _wall_cpu(figures["patch -S"]),
        ),
        ("patch pv-hello: python -S -c pass", _wall_cpu(figures["start -S"])),
        (
            "patch pv-hello: cold template cache (Keystone runs)",
            _wall_cpu(
                (statistics.median(w for w, _ in cold), statistics.median(c for _, c in cold))
            ),
        ),
        *_objcopy_rows("pv-hello", SAMPLES / "pv-hello", workdir, patch[0]),
    ]


# (sample, patch options) of each handoff's shim
SHIMS = (
    ("pv-hello", []),
    ("pv-highhalf", []),
    ("hvm64-hello", ["--handoff", "hvm-start-info", "--entry64", "_start"]),
    ("pvh-hello", ["--handoff", "pvh-passthrough"]),
    ("pv-hello", ["--pv-abi"]),  # the same shim with the PV ABI layer (issue 11)
)
PV_ABI_OPTION = "--pv-abi"
TARGET_PV_ABI_CODE_BYTES = 16 << 10  # issue 11: the PV ABI part of the shim
TARGET_BEFORE_CMDLINE = 200  # issue 6: emulated instructions on the PVH path
TARGET_FLOOR_RATIO = 1.2  # issue 14: patch -o of the large image against the Python floor
TARGET_IN_PLACE_MS = 10  # issue 14: what patch --in-place --no-digest adds for 100 MB
TARGET_SMALL_PATCH_MS = 80  # issue 14: pv-hello, whole process
TARGET_INSPECT_MS = 300  # issue 6
TARGET_CODE_BYTES = 1024  # issue 6: the start-info shim's code


def _paths(handoff: str) -> list[tuple[str, object]]:
    from shimgen.verify.emulate import StartState

    pv = [("PV", StartState("pv"))] if handoff != "pvh-passthrough" else []
    return [
        *pv,
        ("PVH + Xen, hvm_start_info v1", StartState("pvh", xen=True, hvm_version=1)),
        ("PVH + Xen, v0", StartState("pvh", xen=True, hvm_version=0)),
        ("PVH + Xen behind Viridian", StartState("pvh", other_hypervisor=True)),
        ("PVH without a hypervisor", StartState("pvh", xen=False)),
        ("PVH under KVM (no Xen)", StartState("pvh", xen=False, other_hypervisor=True)),
        ("PVH + Xen, 1023-byte cmdline", StartState("pvh", cmdline=b"x" * 1023)),
    ]


def shim_counts(workdir: Path) -> list[tuple[str, str]]:
    """Code and data bytes of each handoff's shim, and emulated instructions from the
    entry to the kernel (start-info: and to the command-line copy) on every path."""
    import dataclasses as dc

    from shimgen.read.image import read_image
    from shimgen.verify.emulate import emulate

    rows = []
    sizes: dict[str, tuple[int, int]] = {}  # sample -> code, data of its plain shim
    for sample, options in SHIMS:
        out = workdir / f"{sample}.universal"
        argv = [sys.executable, "-m", "shimgen", "patch", SAMPLES / sample, "-o", out]
        done = subprocess.run(
            [str(a) for a in (*argv, *options, "--json")],
            check=True,
            capture_output=True,
            text=True,
        )
        plan = json.loads(done.stdout)
        shim, handoff = plan["shim"], plan["handoff"]
        code = shim["labels"]["shim_data"]
        layer = PV_ABI_OPTION in options
        name = f"{sample} ({handoff}{', with the PV ABI layer' if layer else ''})"
        target = f" (target < {TARGET_CODE_BYTES})" if handoff == "start-info" else ""
        data = shim["code_size"] - code
        if layer:  # the layer's own bytes: against the same sample's shim without it
            base_code, base_data = sizes[sample]
            rows.append(
                (
                    f"{name}: the layer's code / data",
                    f"{code - base_code} / {data - base_data} B "
                    f"(target < {TARGET_PV_ABI_CODE_BYTES} of code)",
                )
            )
            rows.append((f"{name}: its traps and segments part", _traps_part(out)))
            target = ""
        else:
            sizes.setdefault(sample, (code, data))
        rows.append((f"{name}: shim code / data", f"{code} / {data} B{target}"))
        rows.append(
            (f"{name}: shim segment filesz / memsz", f"{shim['filesz']} / {shim['memsz']} B")
        )
        image = read_image(out)
        watch = {}
        if "copy_cmdline" in shim["labels"]:
            watch = {"copy_cmdline": shim["vaddr"] + shim["labels"]["copy_cmdline"]}
        for label, state in _paths(handoff):
            result = emulate(image, dc.replace(state, watch=watch))
            figure = f"{result.instructions} instructions"
            if result.mode == "pvh" and "copy_cmdline" in result.reached:
                before = result.reached["copy_cmdline"]
                figure += f", {before} before the cmdline copy"
                # issue 6's target is the plain shim's; the layer rewrites 24 slots first
                figure += "" if layer else f" (target < {TARGET_BEFORE_CMDLINE})"
            rows.append((f"{name}: {label}", figure))
    return rows


def _traps_part(image: Path) -> str:
    """Code and data bytes of 36_pv_traps.S and 95_pv_traps_data.S in a patched image,
    and the reserved pages they add (IDT, GDT)."""
    from shimgen import api
    from shimgen.shim.pv_abi import RESERVED_PAGES

    at = api.inspect(image).shim.offsets
    code = at["pv_traps_end"] - at["pv_traps_install"]
    data = at["pv_traps_data_end"] - at["pv_callbacks"]
    pages = sum(RESERVED_PAGES.values())
    return (
        f"{code} / {data} B, {pages} reserved pages ({pages * 4} KiB) and the page tables "
        "of the GDT's range (2 frames)"
    )


# xl's PVH domU sizes (MiB) the PV memory layout is measured for: the smallest xl
# default and a guest whose RAM fills the space below the hole (4 GiB: about 8
# million emulated instructions, minutes under Unicorn's per-instruction hook)
PV_MEMORY_GUESTS = (32, 4096, 5120)  # 5120: 1 GiB and more above 4 GiB
XL_LOWMEM_END = 0xFC000000  # libxl's PVH hole (tests/memmaps.py): the RAM below it


def pv_memory_costs(workdir: Path) -> list[tuple[str, str]]:
    """The PV ABI layer's memory layout (35_pv_memory.S, docs/pv-abi.md) on pv-hello
    booted as an xl PVH domU of each size: emulated instructions from pv_memory to
    the kernel's entry, and the pages taken out of nr_pages."""
    from shimgen.structs import E820Type
    from shimgen.structs import xen_abi as abi

    from shimgen import api
    from shimgen.read.image import read_image
    from shimgen.verify.emulate import StartState, emulate

    out = workdir / "pv-hello.pv-memory"
    plan = api.patch(SAMPLES / "pv-hello", out, pv_abi=True).plan
    start = plan.shim_vaddr + plan.shim.all_labels["pv_memory"]
    image = read_image(out)
    rows = []
    for mib in PV_MEMORY_GUESTS:
        ram = min(mib << 20, XL_LOWMEM_END)
        high = (mib << 20) - ram  # libxl puts the rest from 4 GiB on
        memmap = ((0, ram, E820Type.RAM),) + (((1 << 32, high, E820Type.RAM),) if high else ())
        state = StartState(
            "pvh",
            memmap=memmap,
            ram_size=ram,
            high_ram_size=high,
            budget=1 << 26,
            watch={"pv_memory": start},
        )
        result = emulate(image, state)
        if result.start_info is None:
            rows.append((f"{mib} MiB guest", result.outcome))
            continue
        taken = (ram + high) // abi.PAGE_SIZE - result.start_info["nr_pages"]
        spent = result.instructions - result.reached["pv_memory"]
        rows.append(
            (
                f"PV memory layout, {mib} MiB xl domU",
                f"{spent} instructions, {taken} pages ({taken * abi.PAGE_SIZE >> 10} KiB) taken",
            )
        )
    return rows


def inspect_startup() -> list[tuple[str, str]]:
    image = SAMPLES / "pvh-hello"
    run(sys.executable, "-m", "shimgen", "inspect", image)  # bytecode compiled once
    ours = median_seconds(lambda: run(sys.executable, "-m", "shimgen", "inspect", image))
    bare = median_seconds(lambda: run(sys.executable, "-c", "pass"))
    return [
        ("shimgen inspect pvh-hello", f"{ours * 1000:.0f} ms (target < {TARGET_INSPECT_MS} ms)"),
        ("python -c pass (baseline)", f"{bare * 1000:.0f} ms"),
        ("ratio", f"{ours / bare:.1f}x"),
    ]


def boot_times(workdir: Path) -> list[tuple[str, str]]:
    from shimgen.verify.boot import BootOptions, boot

    universal = workdir / "pv-hello.universal"
    if not universal.exists():
        run(*_shimgen("patch", SAMPLES / "pv-hello", "-o", universal))
    options = BootOptions(loader="qemu-pvh")
    native = median_seconds(lambda: boot(SAMPLES / "pvh-hello", options), runs=3)
    shimmed = median_seconds(lambda: boot(universal, options), runs=3)
    return [
        ("qemu-pvh boot, pvh-hello (native PVH)", f"{native * 1000:.0f} ms"),
        ("qemu-pvh boot, pv-hello through the shim", f"{shimmed * 1000:.0f} ms"),
        ("ratio shim / native", f"{shimmed / native:.2f}x"),
    ]


DOMU_ROUNDS = 2  # each guest boots this many times in the one rig run, alternating
XTF_GROUP = "example"  # XTF's test-pv64-example, from ../shared/thirdparty
XTF_MEMORY_MIB = 128  # what XTF's own xl configs give every test
XTF_SUCCESS = "Test result: SUCCESS"
# (label, key of _domu_figures, unit)
DOMU_FIGURES = (
    # the guest's own first line (pv-shim's boot messages do not count); n/a for a
    # PV guest printing with console_io, which a release Xen refuses to a domU
    ("xl create to the guest's first console line", "first", "s"),
    ("xl create to shutdown", "shutdown", "s"),
    ("domain memory (xl list)", "memory", "MiB"),
    ("memory Xen spent on the domain (xl info free_memory)", "host_memory", "MiB"),
    ("memory the kernel is given (start_info nr_pages)", "kernel_memory", "MiB"),
    ("domain memory the kernel cannot use", "overhead", "MiB"),
)
# XTF reports no nr_pages: the figures that come from the samples' report are left out.
XTF_FIGURES = tuple(row for row in DOMU_FIGURES if row[1] not in ("kernel_memory", "overhead"))


# Samples booted patched as xl-pvh and unpatched under pv-shim: pv-hello branches on
# the boot mode itself; pv-classic is PV-only and runs as PVH through the PV ABI layer.
DOMU_SAMPLES = ("pv-hello", "pv-classic")
# The floor: a PVH-native kernel (no shim at all) as xl-pvh, what xl create costs any
# PVH guest; pv-shim's time over it is the most a shim could gain.
FLOOR_SAMPLE = "pvh-hello"


def _floor_rows(runs: list, classic: dict[str, dict[str, float | None]] | None) -> list:
    """The floor's first line, and pv-classic's under pv-shim and patched over it."""
    if not all(result.ok for result in runs):
        failed = next(result for result in runs if not result.ok)
        return [(f"{FLOOR_SAMPLE} (the floor) failed", failed.reason)]
    first = _domu_figures(runs)["first"]
    rows = [
        (
            f"xl create to the first line of {FLOOR_SAMPLE}, PVH-native, no shim (floor)",
            _figure(first, "s"),
        )
    ]
    if classic is None:
        return rows
    shim, pvh = classic["xl-pvshim"]["first"], classic["xl-pvh"]["first"]
    if first and shim and pvh:
        rows.append(
            (
                "pv-classic first line: unpatched xl-pvshim / floor, patched xl-pvh / floor",
                f"{shim / first:.2f}x / {pvh / first:.2f}x",
            )
        )
    return rows


def domu_times(workdir: Path) -> list[tuple[str, str]]:
    from shimgen.verify.xlboot import DomuJob, boot_domus
    from shimgen.write.patch import patch_file

    pairs = []
    for name in DOMU_SAMPLES:
        universal = workdir / f"{name}.xl"
        patch_file(SAMPLES / name, universal)
        pairs.append([DomuJob(universal, "xl-pvh"), DomuJob(SAMPLES / name, "xl-pvshim")])
    floor = [DomuJob(SAMPLES / FLOOR_SAMPLE, "xl-pvh")]
    xtf_pair, xtf_missing = _xtf_jobs(workdir)
    jobs = [job for pair in pairs for job in pair * DOMU_ROUNDS]
    jobs += floor * DOMU_ROUNDS + xtf_pair * DOMU_ROUNDS
    results = boot_domus(jobs)
    rig = results[0].timings
    rows = [
        (
            "rig: QEMU start to dom0 up / toolstack up",
            f"{rig['dom0_up']:.1f} s / {rig['toolstack_up']:.1f} s",
        ),
    ]
    done = 0
    figures_of = {}
    for name, pair in zip(DOMU_SAMPLES, pairs, strict=True):
        runs = results[done : done + len(pair) * DOMU_ROUNDS]
        done += len(runs)
        footprint = _shim_footprint(pair[0].image)
        rows.append((f"the shim's own memory in patched {name} (its segment)", footprint))
        if all(result.ok for result in runs):
            figures_of[name] = _by_loader(pair, runs)
            rows += _pair_rows(name, figures_of[name], DOMU_FIGURES)
        else:
            failed = next(result for result in runs if not result.ok)
            rows.append((f"{name} domU boots failed", f"{failed.loader}: {failed.reason}"))
    floor_runs = results[done : done + DOMU_ROUNDS]
    done += DOMU_ROUNDS
    rows += _floor_rows(floor_runs, figures_of.get("pv-classic"))
    xtf = results[done:]
    if xtf_missing:
        return [*rows, (f"XTF test-pv64-{XTF_GROUP}", f"not measured: {xtf_missing}")]
    # The patched kernel may not pass under PVH yet: its figures show with its outcome.
    outcomes = [_xtf_outcome(xtf[i :: len(xtf_pair)]) for i in range(len(xtf_pair))]
    rows.append(
        (
            f"XTF test-pv64-{XTF_GROUP} outcome: patched xl-pvh / unpatched xl-pvshim",
            " / ".join(outcomes),
        )
    )
    # A crash's figures next to a pass's are shown, not divided.
    comparable = all(outcome == "SUCCESS" for outcome in outcomes)
    figures = _by_loader(xtf_pair, xtf)
    return rows + _pair_rows(f"XTF test-pv64-{XTF_GROUP}", figures, XTF_FIGURES, ratios=comparable)


def _xtf_jobs(workdir: Path) -> tuple[list, str]:
    """XTF's example patched for xl-pvh and as built for xl-pvshim, or why there are none."""
    from shimgen.verify.xlboot import DomuJob
    from shimgen.write.patch import patch_file

    sys.path.insert(0, str(ROOT / "tests"))
    import thirdparty

    try:
        built = thirdparty.xtf_test(XTF_GROUP, "pv64")
    except thirdparty.Unavailable as missing:
        return [], str(missing)
    universal = workdir / f"{built.name}.xl"
    patch_file(built, universal)
    return [
        DomuJob(universal, "xl-pvh", memory=XTF_MEMORY_MIB),
        DomuJob(built, "xl-pvshim", memory=XTF_MEMORY_MIB),
    ], ""


def _xtf_outcome(results: list) -> str:
    """SUCCESS when every round printed it, else how the first other round ended."""
    for result in results:
        if XTF_SUCCESS not in result.guest_lines:
            return f"{result.verdict}: {result.reason}"
    return "SUCCESS"


def _by_loader(jobs: list, results: list) -> dict[str, dict[str, float | None]]:
    """Each job's figures over the rounds (the results alternate job by job)."""
    return {job.loader: _domu_figures(results[i :: len(jobs)]) for i, job in enumerate(jobs)}


def _pair_rows(
    kernel: str, figures: dict, which: tuple, ratios: bool = True
) -> list[tuple[str, str]]:
    pvh, shim = figures["xl-pvh"], figures["xl-pvshim"]
    return [
        (
            f"{label}: patched {kernel} xl-pvh / unpatched xl-pvshim",
            f"{_figure(pvh[key], unit)} / {_figure(shim[key], unit)}"
            + (f" ({shim[key] / pvh[key]:.2f}x)" if ratios and pvh[key] and shim[key] else ""),
        )
        for label, key, unit in which
    ]


def _domu_figures(results: list) -> dict[str, float | None]:
    """Medians over the rounds, in seconds from `xl create`; None when never seen."""

    def median(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    return {
        "first": median([_since_create(r, "first_output") for r in results]),
        "shutdown": median([_since_create(r, "ended") for r in results]),
        "memory": median([r.domain_memory_mib for r in results]),
        "host_memory": median([r.host_memory_mib for r in results]),
        "kernel_memory": median([_kernel_mib(r) for r in results]),
        "overhead": median([_overhead_mib(r) for r in results]),
    }


def _shim_footprint(image: Path) -> str:
    """The shim segment (the last PT_LOAD patch adds): code, notes, tables, its pages."""
    from shimgen.read.image import read_image

    shim = read_image(image).loadable_segments[-1]
    return f"{shim.memsz / 1024:.1f} KiB ({shim.filesz / 1024:.1f} KiB in the file)"


def _kernel_mib(result) -> float | None:
    """The memory the kernel is given: start_info's nr_pages, as the sample reports it."""
    from shimgen.structs.xen_abi import PAGE_SIZE

    pages = result.report.get("nr_pages", "")
    return int(pages) * PAGE_SIZE / (1 << 20) if pages.isdigit() else None


def _overhead_mib(result) -> float | None:
    """What the domain's memory holds besides the kernel's pages: under pv-shim, Xen's
    shim itself; under the patched image, nothing the kernel could have used."""
    kernel = _kernel_mib(result)
    if kernel is None or result.domain_memory_mib is None:
        return None
    return result.domain_memory_mib - kernel


def _since_create(result, stage: str) -> float | None:
    when = result.timings.get(stage)
    return None if when is None else when - result.timings["created"]


def _figure(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f} {unit}" if unit == "MiB" else f"{value:.2f} {unit}"


def _can_time() -> bool:
    return shutil.which("objcopy") is not None and Path(GNU_TIME).exists()


# name on the command line -> (title, measure, whether this machine can run it)
SECTIONS: dict[str, tuple[str, Callable[[Path], list[tuple[str, str]]], Callable[[], bool]]] = {
    "shim": ("(b) shim paths", lambda workdir: shim_counts(workdir), lambda: True),
    "pvmem": ("(b) PV memory layout (PV ABI layer)", pv_memory_costs, lambda: True),
    "patch": ("(a) patch -o, 100 MB", patch_large, _can_time),
    "inplace": ("(a) patch --in-place", patch_in_place, _can_time),
    "small": ("(a) patch -o, a small image", patch_small, _can_time),
    "startup": ("(c) start-up", lambda workdir: inspect_startup(), lambda: True),
    "boot": ("(d) boot", boot_times, lambda: shutil.which("qemu-system-x86_64") is not None),
    "domu": (
        "(e) domU boots (xl)",
        domu_times,
        lambda: shutil.which("qemu-system-x86_64") is not None,
    ),
}


def main(argv: list[str] | None = None) -> int:
    """`python bench/bench.py [SECTION...]`: every section, or the ones named."""
    names = sys.argv[1:] if argv is None else argv
    unknown = [name for name in names if name not in SECTIONS]
    if unknown:
        print(f"bench/bench.py: no section {unknown[0]!r}: {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    require_shimgen()
    from rich.console import Console
    from rich.table import Table

    subprocess.run(["make", "-s", "-C", str(ROOT / "samples")], check=True)
    table = Table(
        title=f"shimgen bench on {platform.node()} ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()})"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        for name in names or SECTIONS:
            title, measure, possible = SECTIONS[name]
            table.add_row(f"[bold]{title}[/]", "" if possible() else "not measured here")
            before = os.getloadavg()[0]
            for label, value in measure(workdir) if possible() else []:
                table.add_row(f"  {label}", value)
            if possible():  # other jobs on the machine inflate wall times, CPU ones less
                table.add_row(
                    "  load average (1 min) before / after",
                    f"{before:.1f} / {os.getloadavg()[0]:.1f}",
                )
    # to a file or log at full width, as shimgen's own output (no figure cut)
    Console(width=None if sys.stdout.isatty() else 1 << 16).print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
