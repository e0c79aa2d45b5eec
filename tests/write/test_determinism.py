"""The same input and options give byte-identical output across fresh processes,
whatever the hash seed (dict/set order must never reach the output)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

CASES = [
    ("pv-hello", []),
    ("pv-highhalf", []),
    ("pv-hello", ["--single-entry"]),
    ("pvh-hello", ["--handoff", "pvh-passthrough"]),
    ("hvm64-hello", ["--handoff", "hvm-start-info", "--entry64", "_start"]),
]


def _patch_in_fresh_process(source: Path, out: Path, options: list[str], seed: str) -> str:
    env = dict(os.environ, PYTHONHASHSEED=seed)
    subprocess.run(
        [sys.executable, "-m", "shimgen", "patch", str(source), "-o", str(out), *options],
        check=True,
        capture_output=True,
        env=env,
    )
    return hashlib.sha256(out.read_bytes()).hexdigest()


@pytest.mark.parametrize(("sample", "options"), CASES)
def test_two_fresh_processes_write_the_same_bytes(
    samples_build: Path, tmp_path: Path, sample: str, options: list[str]
) -> None:
    source = samples_build / sample
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    first = _patch_in_fresh_process(source, tmp_path / "first", options, "1")
    second = _patch_in_fresh_process(source, tmp_path / "second", options, "2")
    assert first == second
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before  # input untouched


def test_repatching_in_a_fresh_process_writes_what_patching_the_original_did(
    samples_build: Path, tmp_path: Path
) -> None:
    """--force rebuilds the original from the patched file (mapped, its header restored
    in a private copy): the same bytes as patching the original itself."""
    source = samples_build / "hvm64-hello"
    options = ["--handoff", "hvm-start-info", "--entry64", "_start"]
    once = _patch_in_fresh_process(source, tmp_path / "once", options, "1")
    again = _patch_in_fresh_process(
        tmp_path / "once", tmp_path / "again", [*options, "--force"], "2"
    )
    assert again == once
