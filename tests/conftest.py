"""Fixtures shared by the test modules: the repository layout and the built samples."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLES_DIR = REPO_ROOT / "samples"


@pytest.fixture(scope="session")
def samples_build() -> Path:
    """samples/build after `make -C samples` (run once per session; make skips what is
    up to date). The samples are part of the project, so a failed build fails."""
    make = shutil.which("make")
    if make is None:
        pytest.fail("make not found: install it with 'apt-get install make gcc binutils'")
    proc = subprocess.run(
        [make, "-s", "-C", str(SAMPLES_DIR)], capture_output=True, text=True, timeout=300
    )
    if proc.returncode != 0:
        pytest.fail(f"make -C samples failed:\n{proc.stdout}{proc.stderr}")
    return SAMPLES_DIR / "build"


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
