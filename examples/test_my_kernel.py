"""Regression tests for a unikernel patched by shimgen: copy into your tests/."""

import os
from pathlib import Path

import pytest

KERNEL = Path(os.environ.get("KERNEL", Path(__file__).parent / "kernel.elf"))  # your build


@pytest.fixture
def universal(shimgen):  # the kernel patched into the test's temporary folder
    return shimgen.patch(KERNEL).output


def test_patched_image_is_unchanged(universal, shim_snapshot):
    shim_snapshot(universal, source=KERNEL)  # __snapshots__/ beside this file


def test_bootable_as_pv_and_pvh(universal, shimgen):
    assert shimgen.check(universal, "both").ok


@pytest.mark.shimgen_boot(loader=["qemu-pvh", "xen-pv", "xen-pvh"])
def test_boots(universal, shimgen_boot):
    result = shimgen_boot(universal)
    assert result.ok, result.reason
