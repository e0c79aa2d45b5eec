"""shimgen's pytest plugin: regression tests for kernels patched by shimgen.

Installed with shimgen and registered through the ``pytest11`` entry point (name
``shimgen``; ``-p no:shimgen`` turns it off). It gives:

- ``shimgen``: the API of :mod:`shimgen.api` with the test's own temporary folder
  (``shimgen.patch(kernel)`` writes there);
- ``shim_snapshot(image)``: the stable part of the image's report (segments,
  sections, notes, findings, verdicts, shim metadata and disassembly; not the path,
  the digests or the shimgen note's raw bytes) against a JSON file beside the test
  in ``__snapshots__/<test module>/<test name>.json``, created on first run,
  rewritten with ``--shimgen-update``; a mismatch fails with the structural diff
  ``shimgen diff`` prints;
- ``assert_same_shim(a, b)`` and ``ShimImage``: two images compared as ``shimgen
  diff`` compares them, the difference rendered through ``pytest_assertrepr_compare``;
- ``@pytest.mark.shimgen_boot(loader=[...])`` with the ``shimgen_boot`` fixture: one
  test per loader, skipped with the reason when QEMU or the cached Xen is missing,
  failed instead with ``--shimgen-require-boot``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .api import BootResult, DiffReport, EmulateResult, PatchResult, Report, Verdicts

UPDATE_OPTION = "--shimgen-update"
REQUIRE_BOOT_OPTION = "--shimgen-require-boot"
SNAPSHOT_DIR = "__snapshots__"
SNAPSHOT_FORMAT = 1
# Keys of a snapshot file that record where it came from; never compared.
PROVENANCE_PREFIX = "_"
DIFF_WIDTH = 110  # columns of the rendered structural diff
MAX_FIELD_LINES = 40  # of the field-by-field fallback listing

_STASH_CHANGES: pytest.StashKey[list[str]] = pytest.StashKey()


# --- options, marker, report -----------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("shimgen", "shimgen regression tests")
    group.addoption(
        UPDATE_OPTION,
        action="store_true",
        help="write shim_snapshot files anew from the images the tests see",
    )
    group.addoption(
        REQUIRE_BOOT_OPTION,
        action="store_true",
        help="fail shimgen_boot tests whose tools (QEMU, the cached Xen) are missing, "
        "instead of skipping them (for CI)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "shimgen_boot(loader=[...]): run the test once per loader with the shimgen_boot "
        "fixture (default: every loader); skipped when the loader's tools are missing",
    )
    config.stash[_STASH_CHANGES] = []


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    changes = config.stash.get(_STASH_CHANGES, [])
    if changes:
        terminalreporter.section("shimgen snapshots")
        for line in changes:
            terminalreporter.write_line(line)


# --- the API with a temporary folder -----------------------------------------------------


@dataclass
class ShimgenAPI:
    """shimgen.api bound to one test's temporary folder (the ``shimgen`` fixture)."""

    tmp_path: Path

    def patch(self, path: str | Path, out: str | Path | None = None, **options: Any) -> PatchResult:
        """shimgen.api.patch; out defaults to <tmp_path>/<name>.universal."""
        from . import api

        target = self.tmp_path / f"{Path(path).name}.universal" if out is None else out
        return api.patch(path, target, **options)

    def inspect(self, path: str | Path, **options: Any) -> Report:
        from . import api

        return api.inspect(path, **options)

    def check(self, path: str | Path, mode: str = "both", **options: Any) -> Verdicts:
        from . import api

        return api.check(path, mode, **options)

    def diff(self, a: str | Path, b: str | Path) -> DiffReport:
        from . import api

        return api.diff(a, b)

    def boot(self, path: str | Path, loader: str, **options: Any) -> BootResult:
        """shimgen.api.boot; the raw console log goes to <tmp_path>/<loader>.log."""
        from . import api

        options.setdefault("log", self.tmp_path / f"{loader}.log")
        return api.boot(path, loader, **options)

    def emulate(self, path: str | Path, mode: str, **options: Any) -> EmulateResult:
        from . import api

        return api.emulate(path, mode, **options)


@pytest.fixture
def shimgen(tmp_path: Path) -> ShimgenAPI:
    """shimgen's API, writing into the test's temporary folder."""
    return ShimgenAPI(tmp_path)


# --- snapshots -------------------------------------------------------------------------


def stable_report(image: str | Path | Report) -> dict[str, Any]:
    """What a snapshot holds: Report.stable_json(), as JSON would give it back."""
    from .api import Report, inspect

    report = image if isinstance(image, Report) else inspect(image)
    return json.loads(json.dumps(report.stable_json()))


def _file_name(text: str) -> str:
    """A test name as a file name: parameters kept, path separators and oddities not."""
    return re.sub(r"[^\w.\[\]=,+-]", "_", text)


@dataclass
class ShimSnapshot:
    """The ``shim_snapshot`` fixture: ``shim_snapshot(image)`` in a test."""

    directory: Path  # __snapshots__/<test module> beside the test
    test_name: str
    nodeid: str
    update: bool
    changes: list[str]
    used: list[Path] = field(default_factory=list)

    def path_for(self, name: str | None = None) -> Path:
        """The snapshot file of the next call (name: a suffix for several per test)."""
        stem = self.test_name if name is None else f"{self.test_name}.{name}"
        if name is None and self.used:
            stem = f"{stem}.{len(self.used) + 1}"
        return self.directory / f"{_file_name(stem)}.json"

    def __call__(
        self,
        image: str | Path | Report,
        *,
        name: str | None = None,
        source: str | Path | None = None,
    ) -> None:
        """Compare the image (a path or a shimgen Report) with its snapshot.

        source: the unpatched kernel; its sha256 is recorded (never compared) so that
        a mismatch says whether the input changed too.
        """
        __tracebackhide__ = True
        path = self.path_for(name)
        self.used.append(path)
        actual = stable_report(image)
        digest = None if source is None else _sha256(Path(source))
        if not path.exists() or self.update:
            self._write(path, actual, digest)
            return
        stored = json.loads(path.read_text())
        expected = {k: v for k, v in stored.items() if not k.startswith(PROVENANCE_PREFIX)}
        if expected != actual:
            pytest.fail(self._mismatch(path, expected, actual, stored, digest), pytrace=False)

    def _write(self, path: Path, report: dict[str, Any], digest: str | None) -> None:
        __tracebackhide__ = True
        if not path.exists() and not self.update and os.environ.get("CI"):
            pytest.fail(
                f"{path}: no snapshot, and CI must not create one: run the test where you "
                "can review the result and commit the file",
                pytrace=False,
            )
        existed = path.exists()
        provenance: dict[str, Any] = {"_shimgen_snapshot": SNAPSHOT_FORMAT}
        if digest is not None:
            provenance["_source_sha256"] = digest
        text = json.dumps(provenance | report, indent=2) + "\n"
        if existed and path.read_text() == text:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self.changes.append(f"{'updated' if existed else 'created'} {path}")

    def _mismatch(
        self,
        path: Path,
        expected: dict[str, Any],
        actual: dict[str, Any],
        stored: dict[str, Any],
        digest: str | None,
    ) -> str:
        from .verify.diff import diff_reports

        report = diff_reports(expected, actual, "snapshot", "image")
        recorded = stored.get("_source_sha256")
        lines = [f"shimgen snapshot {path} differs from the image:"]
        if digest is not None and recorded is not None:
            lines.append(
                "the input kernel is unchanged: this is a change in shimgen's output"
                if recorded == digest
                else "the input kernel's bytes changed too: the difference may come from it"
            )
        lines.append(report.to_text(DIFF_WIDTH).rstrip())
        if report.equal:  # a fact the structural comparison does not look at
            lines += ["facts that differ:", *_changed_fields(expected, actual)]
        lines.append(f"Review, then update the snapshot with: pytest {UPDATE_OPTION} {self.nodeid}")
        return "\n".join(lines)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _changed_fields(a: Any, b: Any, where: str = "") -> list[str]:
    """ "path: A -> B" for each leaf that differs, at most MAX_FIELD_LINES."""
    lines: list[str] = []
    for line in _walk_changes(a, b, where or "report"):
        if len(lines) == MAX_FIELD_LINES:
            lines.append("  …")
            break
        lines.append(line)
    return lines


def _walk_changes(a: Any, b: Any, where: str) -> Iterator[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in dict.fromkeys([*a, *b]):
            yield from _walk_changes(a.get(key), b.get(key), f"{where}.{key}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _walk_changes(x, y, f"{where}[{index}]")
    elif a != b:
        yield f"  {where}: {a!r} -> {b!r}"


@pytest.fixture
def shim_snapshot(request: pytest.FixtureRequest) -> ShimSnapshot:
    """Compare a patched image with its snapshot beside the test (see ShimSnapshot)."""
    test_file = Path(request.node.path)
    return ShimSnapshot(
        directory=test_file.parent / SNAPSHOT_DIR / test_file.stem,
        test_name=request.node.name,
        nodeid=request.node.nodeid,
        update=request.config.getoption(UPDATE_OPTION),
        changes=request.config.stash[_STASH_CHANGES],
    )


# --- comparing two images ----------------------------------------------------------------


class ShimImage:
    """An image compared as ``shimgen diff`` compares: ``ShimImage(a) == ShimImage(b)``
    holds when the diff finds no difference (layout-only changes are ignored)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def diff(self, other: ShimImage) -> DiffReport:
        from .api import diff

        return diff(self.path, other.path)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ShimImage):
            return NotImplemented
        return self.diff(other).equal

    __hash__ = None  # type: ignore[assignment]  # equality is a comparison of contents

    def __repr__(self) -> str:
        return f"ShimImage({str(self.path)!r})"


def pytest_assertrepr_compare(config: pytest.Config, op: str, left: Any, right: Any) -> Any:
    if op == "==" and isinstance(left, ShimImage) and isinstance(right, ShimImage):
        return compare_lines(left, right)
    return None


def compare_lines(left: ShimImage, right: ShimImage) -> list[str]:
    """The comparison, its summary (pytest shows the first lines without -vv), then the
    structural diff `shimgen diff` prints."""
    report = left.diff(right)
    return [
        f"{left!r} == {right!r}",
        f"the images differ as `shimgen diff` sees them: {report.summary()}",
        *report.to_text(DIFF_WIDTH).rstrip().splitlines(),
    ]


def assert_same_shim(a: str | Path, b: str | Path) -> None:
    """Fail unless `shimgen diff a b` finds no difference, showing that diff."""
    __tracebackhide__ = True
    left, right = ShimImage(a), ShimImage(b)
    if left != right:
        raise AssertionError("\n".join(compare_lines(left, right)))


# --- real boots ----------------------------------------------------------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "shimgen_boot" not in metafunc.fixturenames:
        return
    from .api import LOADERS

    marker = metafunc.definition.get_closest_marker("shimgen_boot")
    loaders = LOADERS if marker is None else marker.kwargs.get("loader", LOADERS)
    if isinstance(loaders, str):
        loaders = [loaders]
    unknown = [loader for loader in loaders if loader not in LOADERS]
    if unknown:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid}: shimgen_boot: unknown loader(s) "
            f"{', '.join(unknown)} (known: {', '.join(LOADERS)})"
        )
    metafunc.parametrize("shimgen_boot", list(loaders), indirect=True, ids=list(loaders))


@dataclass
class Booter:
    """The ``shimgen_boot`` fixture: ``shimgen_boot(image, **options)`` boots with this
    test's loader (shimgen.api.boot's options) and returns the BootResult."""

    loader: str
    api: ShimgenAPI

    def __call__(self, image: str | Path, **options: Any) -> BootResult:
        return self.api.boot(image, self.loader, **options)


@pytest.fixture
def shimgen_boot(request: pytest.FixtureRequest, shimgen: ShimgenAPI) -> Booter:
    """A real boot with one loader, from the shimgen_boot marker's list."""
    from .verify.boot import missing_tool

    loader = getattr(request, "param", None)
    if loader is None:  # requested from another fixture: no parametrisation reached it
        raise pytest.UsageError("shimgen_boot must be requested by the test itself")
    reason = missing_tool(loader)
    if reason is not None:
        message = f"{loader}: {reason}"
        if request.config.getoption(REQUIRE_BOOT_OPTION):
            pytest.fail(f"{message} ({REQUIRE_BOOT_OPTION} was given)", pytrace=False)
        pytest.skip(message)
    return Booter(loader, shimgen)
