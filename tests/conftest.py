"""Fixtures shared by the test modules: the repository layout and the built samples."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import thirdparty

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLES_DIR = REPO_ROOT / "samples"


@pytest.fixture(scope="session")
def samples_build() -> Path:
    """samples/build after `make -C samples` (run once per session; make skips what is
    up to date). The samples are part of the project, so a failed build fails."""
    make = shutil.which("make")
    if make is None:
        pytest.fail("make not found: install it with 'apt-get install make gcc binutils'")
    # The samples' header comes from `shimgen layout --format c`: the shimgen under test.
    shimgen = f"SHIMGEN={sys.executable} -m shimgen"
    proc = subprocess.run(
        [make, "-s", "-C", str(SAMPLES_DIR), shimgen], capture_output=True, text=True, timeout=300
    )
    if proc.returncode != 0:
        pytest.fail(f"make -C samples failed:\n{proc.stdout}{proc.stderr}")
    return SAMPLES_DIR / "build"


def _built(build: Callable[..., Path], *arguments: str) -> Path:
    try:
        return build(*arguments)
    except thirdparty.Unavailable as missing:
        thirdparty.require(missing)
        raise  # require() skips or fails: never reached


@pytest.fixture(scope="session")
def xtf() -> Callable[[str, str], Path]:
    """XTF test kernels, built once into the cache: xtf("example", "hvm32") is the
    path of test-hvm32-example. Skips without ../shared/thirdparty (fails in CI)."""
    return lambda group, environment: _built(thirdparty.xtf_test, group, environment)


@pytest.fixture(scope="session")
def mini_os() -> Callable[[str], Path]:
    """Mini-OS built into the cache: mini_os("pv") or mini_os("pvh") is its ELF."""
    return lambda config="pv": _built(thirdparty.mini_os, config)


@pytest.fixture(scope="module", params=["pv-hello", "pv-highhalf"])
def universal_pv(request: pytest.FixtureRequest, samples_build: Path, tmp_path_factory) -> object:
    """A PV sample made universal with the default handoff (start-info), read back."""
    from shimgen.read.image import read_image
    from shimgen.write.patch import patch_file

    out = tmp_path_factory.mktemp("universal-pv") / f"{request.param}.universal"
    patch_file(samples_build / request.param, out)
    return read_image(out)


MODULE_SIZE = 5000  # not a multiple of a page: the length must survive as it is


def fnv1a(data: bytes) -> int:
    """32-bit FNV-1a, as the samples report a module's bytes (samples/lib/util.c)."""
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


@pytest.fixture(scope="session")
def boot_module(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A module (initrd) for real boots, and the FNV-1a the sample must report for it."""
    import hashlib

    data = b"".join(hashlib.sha256(bytes([n])).digest() for n in range(256))[:MODULE_SIZE]
    path = tmp_path_factory.mktemp("module") / "module.bin"
    path.write_bytes(data)
    return path, fnv1a(data)


def pytest_configure(config: pytest.Config) -> None:
    """The goldens are snapshots of shimgen's own pytest plugin, which pytest finds
    through the installed package's entry point: a venv made before the plugin
    existed does not have it."""
    manager = config.pluginmanager
    if not manager.hasplugin("shimgen") and not manager.is_blocked("shimgen"):
        raise pytest.UsageError(
            "shimgen's pytest plugin is not registered: reinstall with "
            "'.venv/bin/pip install -e .[dev]' (its pytest11 entry point is new)"
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """In CI every tool the suite needs is installed by `make test`: a test that
    skips there (missing QEMU, Xen, gcc, libxen-dev...) hides a broken set-up, so it
    fails instead."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where nothing may be missing: {report.longrepr}"
