"""Patched PV-only samples boot for real: QEMU's PVH loader, Xen PVH and Xen PV.

Each kernel reports what it received (samples/lib/report.c); the mode and the
start_info must match what the loader passed. The unpatched image must still fail
under xen-pvh, so the shim is what makes it boot.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from shimgen.structs import START_INFO_MAGIC
from shimgen.structs import xen_abi as abi

from shimgen.verify.boot import BootOptions, boot
from shimgen.write.patch import patch_file

CMDLINE = "universal, shim [ok] k=v"
EXPECTED_MODE = {
    "qemu-pvh": abi.BootMode.PVH_NO_XEN,
    "xen-pvh": abi.BootMode.XEN_PVH,
    "xen-pv": abi.BootMode.XEN_PV,
}
# Where the report went: a dom0 may use console_io, QEMU's PVH loader has only the
# debug port (a domU would print through its console ring: samples/README.md).
EXPECTED_CONSOLE = {"qemu-pvh": "debugcon", "xen-pvh": "console_io", "xen-pv": "console_io"}
pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module", params=["pv-hello", "pv-highhalf"])
def universal(request, samples_build: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("universal") / f"{request.param}.universal"
    patch_file(samples_build / request.param, out)
    return out


@pytest.mark.parametrize(
    "loader",
    [
        pytest.param("qemu-pvh", marks=pytest.mark.qemu),
        pytest.param("xen-pvh", marks=pytest.mark.xen),
        pytest.param("xen-pv", marks=pytest.mark.xen),
    ],
)
def test_patched_image_boots(universal: Path, loader: str, boot_module) -> None:
    module, module_fnv = boot_module
    options = BootOptions(loader=loader, cmdline=CMDLINE, timeout=60, initrd=module)
    result = boot(universal, options)
    report = result.report
    assert result.ok, (result.reason, result.guest_lines[-10:], result.xen_errors)
    mode = EXPECTED_MODE[loader]
    assert int(report["mode"]) == mode
    assert int(report["boot_mode_var"]) == mode
    assert int(report["entry_rdi"], 16) == mode
    assert report["magic"] == START_INFO_MAGIC[64].decode()
    assert report["cmdline"] == CMDLINE
    assert report["console"] == EXPECTED_CONSOLE[loader]
    assert "xenstore_name" not in report  # a dom0 has no xenstore ring to read
    # the loader's module reaches the kernel whole: Xen's initrd for dom0 (PV: a
    # virtual address Xen mapped; PVH: module 0, which the shim hands on physical)
    assert int(report["mod_len"]) == module.stat().st_size
    assert int(report["module_fnv"], 16) == module_fnv
    assert int(report["nr_pages"]) > 0
    assert report["result"] == "ok"
    if mode == abi.BootMode.XEN_PVH:
        # under Xen the shim maps shared_info into its reserved frame
        assert int(report["shared_info"], 16) != 0
    if mode == abi.BootMode.PVH_NO_XEN:
        assert int(report["shared_info"], 16) == 0
        # QEMU -m 128: the highest RAM address is just under 128 MiB
        assert 0 < int(report["nr_pages"]) <= (128 << 20) >> abi.PAGE_SHIFT


@pytest.mark.xen
@pytest.mark.parametrize("sample", ["pv-hello", "pv-highhalf"])
def test_unpatched_fails_under_xen_pvh(samples_build: Path, sample: str) -> None:
    result = boot(samples_build / sample, BootOptions(loader="xen-pvh", timeout=60))
    assert not result.ok
    assert "mode" not in result.report
