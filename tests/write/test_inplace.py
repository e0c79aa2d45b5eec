"""patch --in-place: the same bytes as `patch -o`, and a crash after any write, or in
the middle of one, leaves a file that reads as the original (its original range
byte for byte) or as the patched image. Also --no-digest, in place and not."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shimgen.errors import ExitCode, OutputError, Refused
from shimgen.read.image import image_from_bytes
from shimgen.write.inplace import Write, apply_writes, in_place_writes, patch_in_place
from shimgen.write.patch import layout_output, patch_bytes, patch_file, shim_meta

CASES = [
    ("pv-hello", {}),
    ("pv-highhalf", {}),
    ("pvh-hello", {"handoff": "pvh-passthrough"}),
    ("hvm64-hello", {"handoff": "hvm-start-info", "entry64": "_start"}),
]


def _copy(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes())
    return target


@pytest.mark.parametrize(("sample", "options"), CASES)
def test_in_place_gives_the_bytes_of_patch_o(samples_build, tmp_path, sample, options):
    reference = patch_bytes((samples_build / sample).read_bytes(), sample, **options).data
    target = _copy(samples_build / sample, tmp_path / sample)
    result = patch_in_place(target, **options)
    assert target.read_bytes() == reference
    assert result.size == len(reference) and not result.repatched


def test_repatch_in_place_restores_then_patches(samples_build, tmp_path):
    """--force --in-place on a patched file, with other options: the same bytes as a
    patch of the original with those options, and not a byte more."""
    original = (samples_build / "pv-hello").read_bytes()
    target = _copy(samples_build / "pv-hello", tmp_path / "k")
    patch_in_place(target)
    result = patch_in_place(target, force=True, single_entry=True)
    assert result.repatched
    assert target.read_bytes() == patch_bytes(original, "k", single_entry=True).data
    with pytest.raises(Refused, match="already patched"):
        patch_in_place(target)


def _crash_states(before: bytes, target: Path, writes: list[Write]) -> list[bytes]:
    """The file a crash leaves after each prefix of the writes, and in the middle of
    each write longer than the header (its first half written, no fdatasync). A write
    of the 64-byte header at offset 0 lies in one disk sector: it is not torn."""
    states = []
    for count in range(len(writes) + 1):
        steps = list(writes[:count])
        if count < len(writes) and writes[count].offset != 0:
            step = writes[count]
            steps.append(
                Write(step.what, step.offset, step.data[: len(step.data) // 2], step.truncate)
            )
        target.write_bytes(before)
        fd = os.open(target, os.O_RDWR)
        try:
            apply_writes(fd, steps, target)
        finally:
            os.close(fd)
        states.append(target.read_bytes())
    return states


def _reads_as_original(data: bytes, original: bytes) -> bool:
    """The original range byte for byte, read as the original (no shimgen note, the
    same segments), whatever follows it."""
    if data[: len(original)] != original:
        return False
    image, pristine = image_from_bytes(data, "crashed"), image_from_bytes(original, "original")
    return shim_meta(image) is None and image.segments == pristine.segments


@pytest.mark.parametrize("repatch", [False, True], ids=["first-patch", "repatch"])
def test_a_crash_at_any_write_leaves_original_or_patched(samples_build, tmp_path, repatch):
    pristine = (samples_build / "pv-hello").read_bytes()
    before = patch_bytes(pristine, "k").data if repatch else pristine
    # a re-patch with another option, so that the patched bytes really change
    wanted = patch_bytes(pristine, "k", single_entry=repatch)
    meta = shim_meta(image_from_bytes(before, "k"))
    writes = in_place_writes(layout_output(wanted.plan), meta, before[:64])
    assert len(writes) == (3 if repatch else 2)
    states = _crash_states(before, tmp_path / "k", writes)
    assert states[-1] == wanted.data
    for state in states[:-1]:
        assert state == before or _reads_as_original(state, pristine), len(state)
    assert any(state != before for state in states[:-1])  # the crashes were not all no-ops


def test_a_crashed_attempt_can_be_patched_again(samples_build, tmp_path):
    """A file left with the tail written but the header not switched still reads as
    the original, and patching it again works (its unused bytes become part of it)."""
    pristine = (samples_build / "pv-hello").read_bytes()
    target = _copy(samples_build / "pv-hello", tmp_path / "k")
    plan = patch_bytes(pristine, "k").plan
    writes = in_place_writes(layout_output(plan), None, pristine[:64])
    fd = os.open(target, os.O_RDWR)
    try:
        apply_writes(fd, writes[:1], target)
    finally:
        os.close(fd)
    patch_in_place(target)
    recovered = patch_file(target, tmp_path / "again", force=True)
    assert recovered.repatched
    assert shim_meta(image_from_bytes(target.read_bytes(), "k")) is not None


def test_no_digest_is_recorded_and_recovery_still_works(samples_build, tmp_path):
    pristine = (samples_build / "pv-hello").read_bytes()
    target = _copy(samples_build / "pv-hello", tmp_path / "k")
    result = patch_in_place(target, digest=False)
    meta = shim_meta(image_from_bytes(target.read_bytes(), "k"))
    assert meta is not None and not meta.has_digest
    assert meta.original_sha256 == bytes(32) and meta.options["digest"] == "none"
    assert result.plan.to_json()["options"]["digest"] == "none"
    # recovery: the original comes back unchecked, and a digest patch of it matches -o
    out = tmp_path / "out"
    patch_file(target, out, force=True)
    assert out.read_bytes() == patch_bytes(pristine, "k").data
    # and the same without a digest through patch -o
    patch_file(samples_build / "pv-hello", out, digest=False)
    assert out.read_bytes() == target.read_bytes()


def test_in_place_refuses_what_it_cannot_write_over(samples_build, tmp_path):
    packed = tmp_path / "k.gz"
    packed.write_bytes(gzip.compress((samples_build / "pv-hello").read_bytes()))
    with pytest.raises(Refused, match="gzip"):
        patch_in_place(packed)
    assert gzip.decompress(packed.read_bytes()) == (samples_build / "pv-hello").read_bytes()
    readonly = _copy(samples_build / "pv-hello", tmp_path / "ro")
    readonly.chmod(0o444)
    if os.geteuid() != 0:  # root writes whatever the mode says
        with pytest.raises(OutputError, match="cannot write"):
            patch_in_place(readonly)


def test_dry_run_in_place_writes_nothing(samples_build, tmp_path):
    target = _copy(samples_build / "pv-hello", tmp_path / "k")
    before = target.stat()
    result = patch_in_place(target, dry_run=True)
    assert result.size > before.st_size
    assert target.read_bytes() == (samples_build / "pv-hello").read_bytes()
    assert target.stat().st_mtime_ns == before.st_mtime_ns


def test_cli_in_place(samples_build, tmp_path):
    target = _copy(samples_build / "pv-hello", tmp_path / "k")
    run = [sys.executable, "-m", "shimgen", "patch"]
    done = subprocess.run(
        [*run, str(target), "--in-place", "--no-digest", "--json"],
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == ExitCode.OK, done.stderr
    assert '"digest": "none"' in done.stdout
    both = subprocess.run(
        [*run, str(target), "--in-place", "-o", str(tmp_path / "o")],
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert both.returncode == ExitCode.USAGE
