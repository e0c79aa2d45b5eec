"""Human output to a pipe (a file, a CI log) is printed at full width: no number or
digest is cut, however long the line. Run through the CLI with stdout to a pipe."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import imagegen

# A long path and huge sizes: every line of every table is wider than 80 columns.
LONG_NAME = "a-kernel-with-a-name-long-enough-to-push-every-column-out-" * 2
HUGE_BSS = 0x4DD_0000_0000


def shimgen(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run(
        [sys.executable, "-m", "shimgen", *args],
        capture_output=True,  # stdout is a pipe, not a terminal
        text=True,
        timeout=120,
        env=env,
    )


def _image(tmp_path: Path) -> Path:
    spec = dataclasses.replace(imagegen.case("pv64").spec, bss_size=HUGE_BSS)
    path = tmp_path / LONG_NAME
    path.write_bytes(imagegen.write_elf(spec))
    return path


def test_inspect_to_a_pipe_cuts_nothing(tmp_path: Path, samples_build: Path) -> None:
    image = _image(tmp_path)
    done = shimgen("inspect", str(image))
    assert done.returncode == 0, done.stderr
    assert "…" not in done.stdout
    assert hashlib.sha256(image.read_bytes()).hexdigest() in done.stdout
    assert str(image) in done.stdout
    memsz = max(int(m, 16) for m in re.findall(r"0x([0-9a-f]+)", done.stdout))
    assert memsz >= HUGE_BSS  # the size in full, not "0x4dd…"
    assert max(len(line) for line in done.stdout.splitlines()) > 80


def test_patched_inspect_and_patch_to_a_pipe_cut_nothing(
    tmp_path: Path, samples_build: Path
) -> None:
    out = tmp_path / LONG_NAME
    patched = shimgen("patch", str(samples_build / "pv-hello"), "-o", str(out))
    assert patched.returncode == 0, patched.stderr
    assert "…" not in patched.stdout and f"{out}: written" in patched.stdout
    done = shimgen("inspect", str(out))
    assert done.returncode == 0, done.stderr
    original = hashlib.sha256((samples_build / "pv-hello").read_bytes()).hexdigest()
    assert f"sha256 {original}," in done.stdout  # the shim panel's, whole
    assert hashlib.sha256(out.read_bytes()).hexdigest() in done.stdout
