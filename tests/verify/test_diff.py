"""`shimgen diff`: each kind of change is reported precisely, layout noise is not."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
from shimgen.structs import ELF_NOTE_HEADER, XenNote

from shimgen.cli import main
from shimgen.errors import ExitCode
from shimgen.read.image import read_image
from shimgen.verify.diff import changed_ranges
from shimgen.write.patch import ELF64_EHDR, ELF64_PHDR, ehdr_fields, patch_bytes, patch_file

GUEST_OS = b"shimgen-sample"  # samples/lib: the GUEST_OS note of every sample
GUEST_OS_EDITED = b"shimgen-sampXe"  # same length: only the value changes


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("diff")


@pytest.fixture(scope="module")
def pv_hello(samples_build) -> Path:
    return samples_build / "pv-hello"


@pytest.fixture(scope="module")
def patched(work, pv_hello) -> Path:
    return _patch(pv_hello, work / "patched")


def _patch(source: Path, output: Path, entry: str | None = None) -> Path:
    patch_file(source, output, entry=entry)
    return output


def run_json(capsys, a: Path, b: Path) -> tuple[int, dict]:
    status = main(["diff", str(a), str(b), "--json"])
    return status, json.loads(capsys.readouterr().out)


def edited_copy(source: Path, target: Path, offset: int, new: bytes) -> Path:
    data = bytearray(source.read_bytes())
    data[offset : offset + len(new)] = new
    target.write_bytes(data)
    return target


def phdr_field_offset(data: bytes, index: int, name: str) -> int:
    return ehdr_fields(data)["e_phoff"] + index * ELF64_PHDR.size + ELF64_PHDR.offset_of(name)


# --- equal --------------------------------------------------------------------------


def test_same_file_twice_is_equal(capsys, patched):
    status, report = run_json(capsys, patched, patched)
    assert status == ExitCode.OK
    assert report["equal"] is True
    assert report["differences"] == {}
    assert report["ignored"] == []


def test_two_patches_of_the_same_input_are_equal(capsys, work, pv_hello, patched):
    again = _patch(pv_hello, work / "patched-again")
    status, report = run_json(capsys, patched, again)
    assert status == ExitCode.OK, report
    assert report["equal"] is True
    assert report["differences"] == {}


def test_gzip_container_is_a_header_difference_only(capsys, work, patched):
    # Xen decompresses gzip kernels, QEMU's PVH loader does not: not layout noise.
    packed = work / "patched.gz"
    packed.write_bytes(gzip.compress(patched.read_bytes(), mtime=0))
    status, report = run_json(capsys, patched, packed)
    assert status == ExitCode.FAILED
    assert report["differences"] == {
        "header": [{"change": "changed", "field": "compressed", "a": False, "b": True}]
    }


# --- shim options -----------------------------------------------------------------------


def _meta_desc_size(path) -> int:
    from shimgen.structs.shim_meta import SHIM_META_NOTE_TYPE

    image = read_image(path)
    return next(len(n.desc) for n in image.notes if n.type == SHIM_META_NOTE_TYPE)


def _note_growth(a: Path, b: Path) -> list[dict]:
    """The segment changes a longer metadata note makes: the shim's PT_NOTE (the last
    one, NOTE[4] for pv-hello) grows by the 4-byte padded difference, when there is one."""
    size_a, size_b = (-(-_meta_desc_size(p) // 4) * 4 for p in (a, b))
    note = next(s for s in read_image(a).segments if s.type_name == "NOTE" and s.index == 4)
    return [
        {
            "change": "changed",
            "segment": "NOTE[4]",
            "field": field,
            "a": note.filesz,
            "b": note.filesz + size_b - size_a,
        }
        for field in ("filesz", "memsz")
        if size_a != size_b
    ]


def test_other_kernel_entry_changes_shim_code_and_metadata(capsys, work, pv_hello, patched):
    """--entry pv_main (instead of the ENTRY note's _start) changes the address the shim
    jumps to: the metadata and the one shim constant that holds it, nothing a loader
    reads (the ENTRY and PHYS32_ENTRY notes point at the shim, which does not move)."""
    other = _patch(pv_hello, work / "patched-pv-main", entry="pv_main")
    symbols = read_image(pv_hello).symbols
    status, report = run_json(capsys, patched, other)
    differences = report["differences"]
    assert status == ExitCode.FAILED
    assert differences["shim_metadata"] == [
        {
            "change": "changed",
            "field": "original_pv_entry",
            "a": symbols["_start"],
            "b": symbols["pv_main"],
        },
        {"change": "changed", "field": "options.entry", "a": None, "b": "pv_main"},
    ]
    # the options JSON in the metadata note grew by 9 bytes ("pv_main" vs null): the
    # PT_NOTE that holds it grows by the 4-byte padded difference, nothing else moves
    assert _meta_desc_size(other) - _meta_desc_size(patched) == len('"pv_main"') - len("null")
    assert differences["segments"] == _note_growth(patched, other)
    assert set(differences) == {"segments", "shim_metadata", "shim_code", "bytes"}

    plan = patch_bytes(pv_hello.read_bytes(), "pv-hello", entry="pv_main").plan
    pointer = plan.shim.labels["kernel_entry_ptr"]
    (code,) = differences["shim_code"]
    removed = [line for line in code["diff"][2:] if line.startswith("-")]
    added = [line for line in code["diff"][2:] if line.startswith("+")]
    assert len(removed) == len(added) == 1, code["diff"]

    # the one data row (bits 0) that holds the pointer's low bytes: _start -> pv_main
    # (rows start at shim_data, 8 bytes each, so the pointer may sit inside one)
    def pointer_bytes(line: str) -> bytes:
        offset, bits, *rest = line[1:].split()
        assert bits == "0", line
        row = bytes.fromhex("".join(t for t in rest if len(t) == 2)[:16])
        at = pointer - int(offset, 16)
        assert 0 <= at < len(row), line
        return row[at:]

    for line, symbol in ((removed[0], "_start"), (added[0], "pv_main")):
        stored = pointer_bytes(line)
        assert stored == symbols[symbol].to_bytes(8, "little")[: len(stored)]

    (segment_bytes,) = differences["bytes"]
    assert segment_bytes["segment"] == "LOAD[2]"  # the shim's PT_LOAD only
    first = segment_bytes["ranges"][0]
    assert (first["offset"], first["changed"], first["in"]) == (pointer, 2, "shim code")


def test_entry_by_symbol_or_by_address_differs_only_in_recorded_option(capsys, work, pv_hello):
    by_symbol = _patch(pv_hello, work / "entry-symbol", entry="_start")
    by_address = _patch(pv_hello, work / "entry-address", entry="0x100000")
    status, report = run_json(capsys, by_symbol, by_address)
    assert status == ExitCode.FAILED
    differences = report["differences"]
    assert differences["shim_metadata"] == [
        {"change": "changed", "field": "options.entry", "a": "_start", "b": "0x100000"}
    ]
    assert "shim_code" not in differences  # same code: the same entry in effect
    assert differences.get("segments", []) == _note_growth(by_symbol, by_address)
    assert set(differences) - {"segments"} == {"shim_metadata", "bytes"}


# --- notes, segments, bytes -------------------------------------------------------------


def guest_os_desc_offset(path: Path) -> int:
    image = read_image(path)
    note = next(
        n
        for n in image.notes
        if n.is_xen and n.type == XenNote.GUEST_OS and n.source.startswith("PT_NOTE")
    )
    offset = note.offset + ELF_NOTE_HEADER.size + (-(-note.namesz // 4) * 4)
    assert image.data[offset : offset + len(GUEST_OS)] == GUEST_OS
    return offset


def test_changed_note_is_reported_with_old_and_new_value(capsys, work, patched):
    offset = guest_os_desc_offset(patched)
    edited = edited_copy(patched, work / "guest-os", offset, GUEST_OS_EDITED)
    status, report = run_json(capsys, patched, edited)
    assert status == ExitCode.FAILED
    differences = report["differences"]
    # the sample's .note.Xen section and its PT_NOTE cover the same bytes: one note
    assert differences["xen_notes"] == [
        {
            "note": "GUEST_OS",
            "source": "segments",
            "change": "changed",
            "field": "value",
            "a": GUEST_OS.decode(),
            "b": GUEST_OS_EDITED.decode(),
            "used": True,
            "where": ["PT_NOTE[3]", "section .note.Xen"],
        }
    ]
    load = read_image(patched).segments[0]
    (changed,) = differences["bytes"]
    assert changed["segment"] == "LOAD[0]"
    assert changed["ranges"] == [
        {
            "offset": offset + 12 - load.offset,
            "length": 1,
            "changed": 1,
            "vaddr": load.vaddr + offset + 12 - load.offset,
            "in": ".note.Xen, PT_NOTE[3]",
        }
    ]
    assert set(differences) == {"xen_notes", "bytes"}


@pytest.mark.parametrize(
    ("name", "field", "change"),
    [("p_memsz", "memsz", lambda v: v + 0x10), ("p_flags", "flags", lambda v: v & ~2)],
)
def test_changed_segment_field_is_reported(capsys, work, patched, name, field, change):
    data = patched.read_bytes()
    at = phdr_field_offset(data, 1, name)
    size = ELF64_PHDR.size_of(name)
    old = int.from_bytes(data[at : at + size], "little")
    new = change(old)
    edited = edited_copy(patched, work / f"segment-{field}", at, new.to_bytes(size, "little"))
    status, report = run_json(capsys, patched, edited)
    assert status == ExitCode.FAILED
    assert report["differences"] == {
        "segments": [
            {"segment": "LOAD[1]", "change": "changed", "field": field, "a": old, "b": new}
        ]
    }


def test_changed_code_bytes_are_one_range(capsys, work, patched):
    image = read_image(patched)
    text = image.segments[0]
    at = text.offset + 0x40  # inside out_char in .text
    flipped = bytes(b ^ 0xFF for b in image.data[at : at + 4])
    edited = edited_copy(patched, work / "code", at, flipped)
    status, report = run_json(capsys, patched, edited)
    assert status == ExitCode.FAILED
    assert report["differences"] == {
        "bytes": [
            {
                "segment": "LOAD[0]",
                "ranges": [
                    {
                        "offset": 0x40,
                        "length": 4,
                        "changed": 4,
                        "vaddr": text.vaddr + 0x40,
                        "in": ".text",
                    }
                ],
                "range_count": 1,
                "bytes_changed": 4,
            }
        ]
    }


def test_changed_ranges_merge_close_runs_and_count_changed_bytes():
    a = bytes(64)
    b = bytearray(a)
    b[2] = b[10] = 1  # 7 equal bytes between: one range
    b[40] = 1  # 29 equal bytes before it: a range of its own
    assert changed_ranges(a, bytes(b)) == [(2, 9, 2), (40, 1, 1)]
    assert changed_ranges(a, a + b"xy") == [(64, 2, 2)]


# --- layout noise ----------------------------------------------------------------------


def test_moved_section_header_table_is_ignored_and_said(capsys, work, patched):
    data = bytearray(patched.read_bytes())
    header = ehdr_fields(data)
    table = data[header["e_shoff"] : header["e_shoff"] + header["e_shnum"] * 64]
    data += b"\0" * (-len(data) % 8)
    moved_to = len(data)
    data += table
    at, size = ELF64_EHDR.offset_of("e_shoff"), ELF64_EHDR.size_of("e_shoff")
    data[at : at + size] = moved_to.to_bytes(size, "little")
    moved = work / "shdr-moved"
    moved.write_bytes(data)
    assert read_image(moved).sections == read_image(patched).sections  # really only moved

    status, report = run_json(capsys, patched, moved)
    assert status == ExitCode.OK, report["differences"]
    assert report["equal"] is True
    assert report["differences"] == {}
    assert (
        f"section header table moved: e_shoff {header['e_shoff']:#x} -> {moved_to:#x}"
        in report["ignored"]
    )


# --- errors and human output -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["missing", "not-elf", "directory"])
def test_unreadable_input_exits_3_with_one_line(work, patched, kind):
    bad = {
        "missing": work / "does-not-exist",
        "not-elf": work / "text-file",
        "directory": work,
    }[kind]
    if kind == "not-elf":
        bad.write_text("not a kernel\n")
    result = subprocess.run(
        [sys.executable, "-m", "shimgen", "diff", str(patched), str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == ExitCode.BAD_INPUT, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shimgen: error: "), result.stderr
    assert str(bad) in lines[0]
    assert result.stdout == ""


def test_human_output_shows_only_changed_categories(capsys, work, patched):
    edited = edited_copy(
        patched, work / "guest-os-human", guest_os_desc_offset(patched), GUEST_OS_EDITED
    )
    status = main(["diff", str(patched), str(edited)])
    out = capsys.readouterr().out
    assert status == ExitCode.FAILED
    assert "Xen notes" in out and "GUEST_OS" in out
    assert repr(GUEST_OS_EDITED.decode()) in out
    assert "Changed bytes in segments" in out
    for absent in ("Segments", "ELF header", "Shim metadata", "Shim code", "verdicts"):
        assert absent not in out
    assert out.strip().splitlines()[-1].endswith("different: 1 xen notes, 1 bytes")

    assert main(["diff", str(patched), str(patched)]) == ExitCode.OK
    assert capsys.readouterr().out.strip().endswith(": equal")


def test_segment_contents_at_another_file_offset_are_ignored_and_said(capsys, work, patched):
    data = bytearray(patched.read_bytes())
    text = read_image(patched).segments[0]
    data += b"\0" * (-len(data) % text.align)  # keep p_offset = p_vaddr mod p_align
    moved_to = len(data)
    data += data[text.offset : text.offset + text.filesz]
    at = phdr_field_offset(data, 0, "p_offset")
    data[at : at + 8] = moved_to.to_bytes(8, "little")
    moved = work / "load-moved"
    moved.write_bytes(data)

    status, report = run_json(capsys, patched, moved)
    assert status == ExitCode.OK, report["differences"]
    assert report["differences"] == {}
    assert (
        f"LOAD[0]: p_offset {text.offset:#x} -> {moved_to:#x} (same contents)" in report["ignored"]
    )
