"""The pytest plugin as a user meets it: examples/test_my_kernel.py in a fresh project.

Each test builds a temporary project with pytester (the README's example test and a
sample kernel, nothing else) and runs pytest on it in a subprocess, where the
plugin comes from the installed shimgen's pytest11 entry point.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import shimgen
from shimgen.cachedir import cache_dir

pytest_plugins = ["pytester"]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "test_my_kernel.py"
SNAPSHOT = Path("__snapshots__") / "test_my_kernel" / "test_patched_image_is_unchanged.json"
NOT_BOOTS = ("-k", "not test_boots")
GUEST_OS = 6  # the Xen note type (structs' XenNote.GUEST_OS), here to find its bytes


# The cache this run uses, read before pytester points HOME at its own folder (the
# default cache, ~/.cache/shimgen, would move with it and lack Xen).
CACHE = cache_dir()


@pytest.fixture
def project(pytester: pytest.Pytester, samples_build: Path, monkeypatch) -> pytest.Pytester:
    """A fresh project: the example test and the pv-hello sample as its kernel."""
    monkeypatch.delenv("CI", raising=False)  # CI refuses to create snapshots
    monkeypatch.setenv("SHIMGEN_CACHE", str(CACHE))
    monkeypatch.delenv("KERNEL", raising=False)
    shutil.copy(EXAMPLE, pytester.path / EXAMPLE.name)
    shutil.copy(samples_build / "pv-hello", pytester.path / "kernel.elf")
    return pytester


def rename_guest_os(kernel: Path, new: bytes) -> None:
    """Rewrite the kernel's GUEST_OS note in place (same length: nothing else moves)."""
    note = next(n for n in shimgen.inspect(kernel).image.notes if n.type == GUEST_OS)
    old = note.desc.rstrip(b"\0")
    assert len(new) == len(old)
    data = bytearray(kernel.read_bytes())
    at = data.index(note.desc, note.offset)
    data[at : at + len(old)] = new
    kernel.write_bytes(bytes(data))


def test_snapshot_created_then_failing_then_updated(project: pytest.Pytester) -> None:
    first = project.runpytest_subprocess(*NOT_BOOTS)
    first.assert_outcomes(passed=2, deselected=3)
    stored = json.loads((project.path / SNAPSHOT).read_text())
    assert stored["_shimgen_snapshot"] == 1 and "path" not in stored and "sha256" not in stored
    assert stored["shim"]["metadata"]["handoff"] == "start-info"
    first.stdout.fnmatch_lines(["*shimgen snapshots*", f"created *{SNAPSHOT}"])

    project.runpytest_subprocess(*NOT_BOOTS).assert_outcomes(passed=2, deselected=3)

    rename_guest_os(project.path / "kernel.elf", b"shimgen-SAMPLE")
    failed = project.runpytest_subprocess(*NOT_BOOTS)
    failed.assert_outcomes(passed=1, failed=1, deselected=3)
    output = failed.stdout.str()
    failed.stdout.fnmatch_lines(
        [
            "*the input kernel's bytes changed too*",
            "Xen notes*",
            "*GUEST_OS*value*changed*'shimgen-sample'*'shimgen-SAMPLE'*",
            "snapshot and image: different: 1 xen notes",
            "*pytest --shimgen-update test_my_kernel.py::test_patched_image_is_unchanged",
        ]
    )
    assert '"segments"' not in output and '"disassembly"' not in output  # no JSON wall

    updated = project.runpytest_subprocess(*NOT_BOOTS, "--shimgen-update")
    updated.assert_outcomes(passed=2, deselected=3)
    updated.stdout.fnmatch_lines([f"updated *{SNAPSHOT}"])
    stored = json.loads((project.path / SNAPSHOT).read_text())
    guest_os = [n for n in stored["xen_notes"]["segments"] if n["name"] == "GUEST_OS"]
    assert guest_os[0]["value"] == "shimgen-SAMPLE"
    again = project.runpytest_subprocess(*NOT_BOOTS)
    again.assert_outcomes(passed=2, deselected=3)
    assert "shimgen snapshots" not in again.stdout.str()  # nothing written this time


def test_ci_does_not_create_snapshots(project: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.setenv("CI", "1")
    result = project.runpytest_subprocess(*NOT_BOOTS)
    result.assert_outcomes(passed=1, failed=1, deselected=3)
    result.stdout.fnmatch_lines(["*no snapshot, and CI must not create one*"])
    assert not (project.path / SNAPSHOT).exists()


def test_disabled_with_p_no_shimgen(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess("-p", "no:shimgen", *NOT_BOOTS)
    result.stdout.fnmatch_lines(["*fixture 'shimgen' not found*"])
    assert result.ret != 0
    assert not (project.path / SNAPSHOT).exists()


SAME_SHIM_TEST = """
import pytest
from shimgen.pytest_plugin import ShimImage, assert_same_shim

def test_same(shimgen):
    a = shimgen.patch("kernel.elf", shimgen.tmp_path / "a").output
    b = shimgen.patch("kernel.elf", shimgen.tmp_path / "b").output
    assert_same_shim(a, b)
    assert ShimImage(a) == ShimImage(b)

def test_other_kernel(shimgen):
    a = shimgen.patch("kernel.elf").output
    b = shimgen.patch("other.elf").output
    assert_same_shim(a, b)

def test_other_kernel_by_assert(shimgen):
    a = shimgen.patch("kernel.elf").output
    b = shimgen.patch("other.elf").output
    assert ShimImage(a) == ShimImage(b)
"""


def test_assert_same_shim(pytester: pytest.Pytester, samples_build: Path) -> None:
    shutil.copy(samples_build / "pv-hello", pytester.path / "kernel.elf")
    shutil.copy(samples_build / "pv-highhalf", pytester.path / "other.elf")
    pytester.makepyfile(test_same=SAME_SHIM_TEST)
    result = pytester.runpytest_subprocess("-vv")  # pytest cuts a long assertrepr without it
    result.assert_outcomes(passed=1, failed=2)
    # both ways of asking render the structural diff, not two reprs
    result.stdout.fnmatch_lines(
        [
            "*test_other_kernel *",
            "*ShimImage(*kernel.elf.universal*) == ShimImage(*other.elf.universal*)",
            "*the images differ as `shimgen diff` sees them:*different:*xen notes*shim code*",
            "*ELF header*",
            "*test_other_kernel_by_assert*",
            "*ShimImage(*kernel.elf.universal*) == ShimImage(*other.elf.universal*)",
            "*the images differ as `shimgen diff` sees them:*different:*xen notes*shim code*",
            "*ELF header*",
        ]
    )


BOOT_MATRIX_TEST = """
import pytest

@pytest.mark.shimgen_boot(loader=["qemu-pvh", "xen-pv"])
def test_matrix(shimgen_boot):
    assert shimgen_boot.loader in ("qemu-pvh", "xen-pv")
"""


@pytest.fixture
def boot_matrix(pytester: pytest.Pytester, monkeypatch) -> pytest.Pytester:
    """A project whose one test runs per loader, in a machine with no Xen cached."""
    monkeypatch.setenv("SHIMGEN_CACHE", str(pytester.path / "empty-cache"))
    pytester.makepyfile(test_matrix=BOOT_MATRIX_TEST)
    return pytester


def test_boot_skips_without_cached_xen(boot_matrix: pytest.Pytester) -> None:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 not installed: apt-get install qemu-system-x86")
    result = boot_matrix.runpytest_subprocess("-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*xen-pv: Debian's Xen*is not in the shimgen cache*"])
    required = boot_matrix.runpytest_subprocess("--shimgen-require-boot")
    required.assert_outcomes(passed=1, errors=1)
    required.stdout.fnmatch_lines(["*xen-pv: Debian's Xen*(--shimgen-require-boot was given)"])


def test_boot_skips_without_qemu(boot_matrix: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(boot_matrix.path / "no-tools"))  # pytest runs by full path
    result = boot_matrix.runpytest_subprocess("-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["SKIPPED*qemu-pvh: qemu-system-x86_64 not found*"])
    boot_matrix.runpytest_subprocess("--shimgen-require-boot").assert_outcomes(errors=2)


def test_unknown_loader_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.shimgen_boot(loader=["bochs"])
        def test_it(shimgen_boot):
            pass
        """
    )
    result = pytester.runpytest_subprocess()
    result.stdout.fnmatch_lines(["*shimgen_boot: unknown loader(s) bochs*"])
    assert result.ret != 0


@pytest.mark.qemu
@pytest.mark.xen
@pytest.mark.slow
def test_example_boot_matrix(project: pytest.Pytester) -> None:
    """The example's boot test, as CI runs it: every loader must be there and boot."""
    result = project.runpytest_subprocess("-k", "test_boots", "--shimgen-require-boot", "-v")
    result.assert_outcomes(passed=3, deselected=2)
    result.stdout.fnmatch_lines(
        ["*test_boots?qemu-pvh? PASSED*", "*test_boots?xen-pv? PASSED*", "*test_boots?xen-pvh?*"]
    )


def test_readme_shows_the_example_as_it_is() -> None:
    readme = (EXAMPLE.parent.parent / "README.md").read_text()
    section = readme[readme.index("## Regression tests for your kernel") :]
    assert f"```python\n{EXAMPLE.read_text()}```" in section
