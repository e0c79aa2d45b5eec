"""A plain (non-editable) build ships structs/, asm_templates/ and the C helper inside."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


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


def _site_packages() -> str:
    import sysconfig

    return sysconfig.get_paths()["purelib"]


def test_python_m_shimgen_from_the_checkout_with_a_plain_install(
    wheel: zipfile.ZipFile, tmp_path: Path
) -> None:
    """A non-editable install, and `python -m shimgen` run in the repository's root:
    the checkout's shimgen/ comes first on sys.path and has no structs/ inside. It
    must still run (from the checkout), and the install must run from elsewhere.
    -S keeps this venv's editable-install hook out; its packages come by PYTHONPATH."""
    target = tmp_path / "installed"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            wheel.filename,
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(target), _site_packages()))}
    for where in (ROOT, tmp_path):
        done = subprocess.run(
            [sys.executable, "-S", "-m", "shimgen", "layout", "hvm_start_info", "--format", "c"],
            cwd=where,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, (where, done.stderr)
        assert "hvm_start_info.reserved" in done.stdout


def test_bench_without_shimgen_says_what_to_run() -> None:
    done = subprocess.run(
        [sys.executable, "-S", str(ROOT / "bench" / "bench.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 4
    assert "Traceback" not in done.stderr
    assert "run " in done.stderr and "bench.py" in done.stderr
