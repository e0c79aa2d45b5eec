"""Patched samples satisfy `shimgen check --mode both --strict` and Xen's own parser
(libxenguest) in both container types; the unpatched PV samples do not boot as PVH."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shimgen.verify import xenparser

SAMPLES = ("pv-hello", "pv-highhalf")


@pytest.fixture(scope="module")
def universal(samples_build: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("universal")
    images = {}
    for name in SAMPLES:
        images[name] = out / f"{name}.universal"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "shimgen",
                "patch",
                str(samples_build / name),
                "-o",
                str(images[name]),
            ],
            check=True,
            capture_output=True,
        )
    return images


@pytest.mark.parametrize("name", SAMPLES)
def test_check_both_modes_strict(universal: dict[str, Path], name: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "shimgen",
            "check",
            "--mode",
            "both",
            "--strict",
            "--xen-parser",
            str(universal[name]),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pv: ok (xen-3.0-x86_64" in result.stdout
    assert "pvh: ok (hvm-3.0-x86_32" in result.stdout
    assert result.stdout.count("libxenguest: ok") == 2


@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize("container", ["pv", "pvh"])
def test_libxenguest_accepts_the_patched_image(
    universal: dict[str, Path], name: str, container: str
) -> None:
    answer = xenparser.parse(universal[name], container)
    assert answer.accepted_by_elf_loader, answer.error
    expected = "xen-3.0-x86_64" if container == "pv" else "hvm-3.0-x86_32"
    assert answer.guest_type == expected


@pytest.mark.parametrize("name", SAMPLES)
def test_libxenguest_refuses_the_unpatched_image_as_pvh(samples_build: Path, name: str) -> None:
    assert not xenparser.parse(samples_build / name, "pvh").accepted_by_elf_loader
    assert xenparser.parse(samples_build / name, "pv").accepted_by_elf_loader
