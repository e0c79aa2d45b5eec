"""`check` against libxenguest on mutated images: the same verdict, or a listed reason.

Seeds: every sample kernel (samples/build) and GRUB's three Xen images. Each is
mutated structure-aware (tests/fuzz/mutate.py: header fields set to boundary
values, truncation, splices, gzip...), a fixed number of times with a fixed seed,
and every mutant is judged by shimgen's `check` rules (shimgen.read.check) and by
libxenguest (the C helper, the parser `xl create` runs), in a PV and in an HVM
(PVH) container, for the same hypervisor capabilities (Debian's Xen 4.17).

PVH-capable on Xen's side means accepted through the Xen notes: libxenguest's
firmware loader also takes any ELF32 in which it finds no PVH entry (hvmloader's
path), which is not the PVH boot protocol (see tests/read/test_xen_oracle.py).

Every difference must match an entry of KNOWN_DIFFERENCES, which says why shimgen
answers otherwise; an unexplained one fails the test and names the mutant.
"""

from __future__ import annotations

import collections
import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from fuzz import oracle, seeds
from fuzz.mutate import Mutant, mutants
from hypothesis import HealthCheck, given, settings

from shimgen.errors import BadInput
from shimgen.read.check import Verdicts, evaluate
from shimgen.read.image import Image, image_from_bytes
from shimgen.verify import xenparser

MUTANTS = int(300 * float(os.environ.get("SHIMGEN_FUZZ_SCALE", "1")))
CONTAINERS = ("pv", "pvh")


@dataclass(frozen=True)
class Judged:
    mutant: Mutant
    path: Path
    image: Image | None  # None: shimgen could not read it (exit 3)
    unreadable: str | None
    verdicts: Verdicts | None
    xen: dict[str, xenparser.XenParse]

    def shimgen_ok(self, mode: str) -> bool:
        return self.verdicts is not None and getattr(self.verdicts, mode).ok

    def xen_ok(self, mode: str) -> bool:
        return self.xen[mode].accepted_by_elf_loader

    def describe(self, mode: str) -> str:
        ours = (
            f"unreadable: {self.unreadable}"
            if self.verdicts is None
            else "; ".join(getattr(self.verdicts, mode).reasons) or "ok"
        )
        theirs = self.xen[mode]
        xen = "ok" if theirs.accepted_by_elf_loader else (theirs.error or "rejected")
        return f"{self.mutant!r} {mode}: shimgen says {ours!r}, libxenguest says {xen!r}"


# A difference explained: (why, predicate on the judged mutant and the mode).
Explanation = tuple[str, Callable[[Judged, str], bool]]


def _invalid_class(judged: Judged, mode: str) -> bool:
    return judged.unreadable is not None and "unknown ELF class" in judged.unreadable


KNOWN_DIFFERENCES: list[Explanation] = [
    (
        "Xen would boot this; shimgen refuses because EI_CLASS is neither ELFCLASS32 nor "
        "ELFCLASS64: Xen's libelf reads every class but ELFCLASS64 as ELF32, QEMU, "
        "linux-loader and readelf refuse the file (shimgen's error says so)",
        _invalid_class,
    ),
]


def explain(judged: Judged, mode: str) -> str | None:
    for why, applies in KNOWN_DIFFERENCES:
        if applies(judged, mode):
            return why
    return None


def _keep(item: Judged) -> Path:
    """Save a mutant that differs without a reason (to study, then fix or list)."""
    oracle.CRASH_DIR.mkdir(parents=True, exist_ok=True)
    path = oracle.CRASH_DIR / f"xen-differs-{item.mutant.sha256[:16]}.bin"
    path.write_bytes(item.mutant.data)
    return path.resolve()


@pytest.fixture(scope="module")
def helper() -> Path:
    if not xenparser.available():
        pytest.skip("libxenguest helper unavailable (gcc, libxen-dev)")
    return xenparser.helper_binary()


@pytest.fixture(scope="module")
def corpus(samples_build: Path) -> dict[str, bytes]:
    kernels = {
        f"sample:{path.name}": path.read_bytes()
        for path in sorted(samples_build.iterdir())
        if path.is_file() and path.read_bytes()[:4] == b"\x7fELF"
    }
    assert {f"sample:{name}" for name in seeds.SAMPLES} <= set(kernels)
    return kernels | seeds.grub()


def collect_mutants(corpus: dict[str, bytes], count: int) -> list[Mutant]:
    found: dict[str, Mutant] = {}

    @settings(
        derandomize=True,
        database=None,
        deadline=None,
        max_examples=count,
        suppress_health_check=list(HealthCheck),
    )
    @given(mutants(corpus))
    def collect(mutant: Mutant) -> None:
        found.setdefault(mutant.sha256, mutant)

    collect()
    return list(found.values())


def judge(mutant: Mutant, directory: Path) -> Judged:
    path = directory / f"{hashlib.sha256(mutant.data).hexdigest()[:16]}.elf"
    path.write_bytes(mutant.data)
    xen = {container: xenparser.parse(path, container) for container in CONTAINERS}
    try:
        image = image_from_bytes(mutant.data, path.name)
    except BadInput as error:
        return Judged(mutant, path, None, str(error), None, xen)
    return Judged(mutant, path, image, None, evaluate(image), xen)


@pytest.fixture(scope="module")
def judged(
    helper: Path, corpus: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory
) -> list[Judged]:
    directory = tmp_path_factory.mktemp("mutants")
    found = collect_mutants(corpus, MUTANTS)
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda mutant: judge(mutant, directory), found))


def test_mutants_cover_both_answers(judged: list[Judged]) -> None:
    """A run whose mutants all bounce off the ELF magic compares nothing."""
    counts = collections.Counter((mode, j.xen_ok(mode)) for j in judged for mode in CONTAINERS)
    print(f"{len(judged)} mutants; libxenguest verdicts: {dict(counts)}")
    assert len(judged) >= MUTANTS // 2
    for mode in CONTAINERS:
        assert counts[(mode, True)] >= 10 and counts[(mode, False)] >= 10, counts


def test_check_agrees_with_libxenguest(judged: list[Judged]) -> None:
    unexplained, explained = [], collections.Counter()
    for item in judged:
        for mode in CONTAINERS:
            if item.shimgen_ok(mode) == item.xen_ok(mode):
                continue
            why = explain(item, mode)
            if why is None:
                unexplained.append(f"{item.describe(mode)}, saved as {_keep(item)}")
            else:
                explained[why] += 1
    print(f"explained differences: {dict(explained)}")
    assert not unexplained, "\n".join(unexplained)


def test_listed_difference_holds(helper: Path, samples_build: Path, tmp_path: Path) -> None:
    """The invalid-class difference, on a fixed image: Xen boots what shimgen refuses."""
    data = bytearray((samples_build / "pvh-hello.elf32").read_bytes())
    data[4] = 8  # EI_CLASS
    mutant = Mutant("sample:pvh-hello.elf32", bytes(data), ("EI_CLASS=8",))
    item = judge(mutant, tmp_path)
    assert item.xen_ok("pvh") and not item.shimgen_ok("pvh")
    assert explain(item, "pvh") is not None and "Xen would read it" in item.unreadable
