"""One cache folder: SHIMGEN_CACHE, else the XDG cache, for the CLI and make alike;
and a missing package says where it was looked for."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shimgen.cachedir import cache_dir
from shimgen.errors import ExitCode, MissingTool
from shimgen.verify import debcache

ROOT = Path(__file__).resolve().parents[2]


def test_cache_dir_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SHIMGEN_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "shimgen"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "shimgen"
    monkeypatch.setenv("SHIMGEN_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
@pytest.mark.parametrize("given", [None, "/somewhere/else"])
def test_make_uses_the_clis_cache(given: str | None) -> None:
    """The Makefile sets no cache of its own: its commands see SHIMGEN_CACHE as the
    user's environment has it (unset: the CLI's XDG default)."""
    env = {k: v for k, v in os.environ.items() if k != "SHIMGEN_CACHE"}
    if given is not None:
        env["SHIMGEN_CACHE"] = given
    probe = 'shimgen-probe:\n\t@echo "[$$SHIMGEN_CACHE]"\n'
    done = subprocess.run(
        ["make", "-s", "--no-print-directory", "-f", "Makefile", "-f", "-", "shimgen-probe"],
        cwd=ROOT,
        input=probe,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"[{given or ''}]"


def test_missing_package_says_where_it_looked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SHIMGEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no apt-get, no dpkg
    with pytest.raises(MissingTool) as caught:
        debcache.unpacked_package("xen-hypervisor-4.17-amd64")
    message = str(caught.value)
    assert str(tmp_path / "cache") in message and "SHIMGEN_CACHE" in message
    assert "xen-hypervisor-4.17-amd64" in message


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU not installed")
def test_boot_says_where_it_looks_for_xen(tmp_path: Path, samples_build: Path) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "qemu-system-x86_64").symlink_to(shutil.which("qemu-system-x86_64"))
    env = dict(os.environ, SHIMGEN_CACHE=str(tmp_path / "empty"), PATH=str(tools))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "shimgen",
            "boot",
            str(samples_build / "pv-hello"),
            "--loader",
            "xen-pv",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == ExitCode.MISSING_TOOL, done.stderr
    assert f"the shimgen cache {tmp_path / 'empty'} (from $SHIMGEN_CACHE)" in done.stderr
    assert "Traceback" not in done.stderr
