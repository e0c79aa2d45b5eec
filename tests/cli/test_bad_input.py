"""Malformed input: one clear line on stderr, the documented exit status, no traceback."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pytest
from shimgen.structs import ELF_NOTE_HEADER

from shimgen.errors import ExitCode
from shimgen.read.image import read_image
from shimgen.verify.debcache import unpacked_package

GRUB = "usr/lib/grub-xen"


@pytest.fixture(scope="module")
def grub64() -> bytes:
    return (unpacked_package("grub-xen-host") / GRUB / "grub-x86_64-xen.bin").read_bytes()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shimgen", *args], capture_output=True, text=True, timeout=60
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: ExitCode, text: str):
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("shimgen: error: ")
    assert text in lines[0]
    assert "Traceback" not in result.stderr


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("command", ["inspect", "check"])
@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("empty", lambda elf: b"", "empty"),
        ("text", lambda elf: b"#!/bin/sh\necho not a kernel\n", "not an ELF file"),
        ("ident-only", lambda elf: elf[:20], "truncated"),
        ("big-endian", lambda elf: elf[:5] + b"\x02" + elf[6:], "big-endian"),
        ("class-9", lambda elf: elf[:4] + b"\x09" + elf[5:], "unknown ELF class"),
        ("gzip-corrupt", lambda elf: gzip.compress(elf)[:200], "gzip data is corrupt"),
    ],
)
def test_unreadable_images_fail_cleanly(tmp_path, grub64, command, name, make, message):
    path = write(tmp_path, name, make(grub64))
    assert_one_line_error(run_cli(command, str(path)), ExitCode.BAD_INPUT, message)


def test_foreign_machine_is_read_and_judged_as_xen_would(tmp_path, grub64):
    """Xen's PV loader refuses an e_machine it does not know (libxenguest's
    xc_dom_guest_type), so check says so in Xen's words instead of refusing to read."""
    path = write(tmp_path, "aarch64", grub64[:18] + (183).to_bytes(2, "little") + grub64[20:])
    result = run_cli("check", "--mode", "pv", str(path))
    assert result.returncode == ExitCode.FAILED, result.stderr
    assert "pv: xc_dom_guest_type: unknown image type 183" in result.stdout
    assert run_cli("inspect", str(path)).returncode == ExitCode.OK
    assert_one_line_error(run_cli("patch", str(path), "-o", str(tmp_path / "o")), 6, "e_machine")


def test_missing_file_and_directory(tmp_path):
    assert_one_line_error(
        run_cli("inspect", str(tmp_path / "nope")), ExitCode.BAD_INPUT, "cannot read"
    )
    assert_one_line_error(run_cli("check", str(tmp_path)), ExitCode.BAD_INPUT, "directory")


def _first_xen_note_offset(image_bytes: bytes, tmp_path: Path) -> int:
    image = read_image(write(tmp_path, "probe", image_bytes))
    return image.segment_xen_notes[0].offset


def test_garbage_note_sizes_are_reported_not_crashed(tmp_path, grub64):
    offset = _first_xen_note_offset(grub64, tmp_path)
    header = ELF_NOTE_HEADER.build({"namesz": 4, "descsz": 0xFFFFFFF0, "type": 6})
    broken = grub64[:offset] + header + grub64[offset + len(header) :]
    path = write(tmp_path, "garbage-notes", broken)
    image = read_image(path)
    assert any("end of the file" in f.message for f in image.findings)
    result = run_cli("check", "--mode", "pv", str(path))
    # The walk stops at the broken note: no LOADER/XEN_VERSION reach libelf.
    assert result.returncode == ExitCode.FAILED
    assert "generic loader" in result.stdout
    assert "Traceback" not in result.stderr
    # inspect shows every finding, then exits 3 with one line, as readelf exits non-zero
    for extra in ((), ("--json",)):
        inspected = run_cli("inspect", *extra, str(path))
        assert_one_line_error(inspected, ExitCode.BAD_INPUT, "malformed: ")
        assert "end of the file" in inspected.stderr
        assert "end of" in inspected.stdout


def test_truncated_inside_segments_is_still_read(tmp_path, grub64):
    """A file cut after its headers: the note walk reports it and nothing crashes."""
    offset = _first_xen_note_offset(grub64, tmp_path)
    path = write(tmp_path, "cut", grub64[: offset + 6])
    result = run_cli("inspect", "--json", str(path))
    assert_one_line_error(result, ExitCode.BAD_INPUT, "end of the file")
    assert "cut by the end of the file" in result.stdout  # the findings, all of them


def test_a_whole_image_inspects_with_status_0(tmp_path, grub64):
    result = run_cli("inspect", str(write(tmp_path, "whole", grub64)))
    assert result.returncode == ExitCode.OK and result.stderr == ""


def test_gzip_image_reads_like_the_plain_one(tmp_path, grub64):
    plain = read_image(write(tmp_path, "plain", grub64))
    packed = read_image(write(tmp_path, "packed.gz", gzip.compress(grub64)))
    assert packed.compressed and not plain.compressed
    assert [(n.name, n.value) for n in packed.xen_notes] == [
        (n.name, n.value) for n in plain.xen_notes
    ]


def test_help_explains_every_status_an_error_can_end_with():
    """`shimgen --help` lists the statuses from ExitCode itself: the status of each
    error class shimgen.errors defines and the answers 0 and 1, in ExitCode's words."""
    from shimgen import errors as module

    result = run_cli("--help")
    assert result.returncode == ExitCode.OK, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps the epilog
    classes = [c for c in vars(module).values() if isinstance(c, type)]
    bases = (module.ShimgenError,)
    errors = {c.exit_code for c in classes if issubclass(c, bases) and c not in bases}
    assert errors >= {ExitCode.BAD_INPUT, ExitCode.REFUSED, ExitCode.USAGE}
    for code in sorted(errors | {ExitCode.OK, ExitCode.FAILED}):
        assert code.summary, f"{code!r} has no words for --help"
        assert f"{int(code)} {code.summary}" in text, code
