"""A plain (non-editable) build ships structs/, asm_templates/ and the C helper inside."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("shimgen-*.whl")
    return zipfile.ZipFile(built)


def test_wheel_ships_every_source_file(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    expected = {f"shimgen/structs/{p.name}" for p in (ROOT / "structs").glob("*.py")}
    expected |= {f"shimgen/asm_templates/{p.name}" for p in (ROOT / "asm_templates").glob("*.S")}
    expected |= {f"shimgen/native/{p.name}" for p in (ROOT / "shimgen/native").glob("*.c")}
    expected |= {
        f"shimgen/{p.relative_to(ROOT / 'shimgen')}" for p in (ROOT / "shimgen").rglob("*.py")
    }
    assert len(expected) > 10
    assert expected <= names, sorted(expected - names)


def test_wheel_declares_the_console_command(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    assert "shimgen = shimgen.cli:main" in wheel.read(entry_points).decode()


def test_wheel_registers_the_pytest_plugin(wheel: zipfile.ZipFile) -> None:
    """pytest finds the plugin through this entry point wherever shimgen is installed."""
    import configparser

    (entry_points,) = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(entry_points).decode())
    assert dict(parser["pytest11"]) == {"shimgen": "shimgen.pytest_plugin"}
    assert "shimgen/pytest_plugin.py" in wheel.namelist()
