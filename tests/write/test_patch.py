"""`shimgen patch`: a universal image, written atomically, deterministic, never stacked."""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from shimgen.structs import XenNote
from shimgen.structs.elf import SegmentType

from shimgen.cli import main
from shimgen.errors import ExitCode
from shimgen.read.check import evaluate
from shimgen.read.image import read_image
from shimgen.read.shim_view import shim_meta
from shimgen.write.patch import original_bytes, patch_bytes, patch_file

SAMPLES = ["pv-hello", "pv-highhalf"]

# A PV kernel whose Xen notes live only in a section (as Unikraft's do): no PT_NOTE.
SECTION_NOTES_KERNEL = r"""
    .section .text, "ax"
    .globl _start
_start:
    jmp _start
    .balign 0x1000
hypercall_page:
    .fill 0x1000, 1, 0xcc
    .section .data, "aw"
    .globl shimgen_boot_mode
shimgen_boot_mode: .long 0
    .section .note.Xen, "", @note
    .long 4, 8, 5
    .asciz "Xen"
    .asciz "xen-3.0"
    .long 4, 8, 8
    .asciz "Xen"
    .asciz "generic"
    .long 4, 8, 1
    .asciz "Xen"
    .quad _start
    .long 4, 8, 2
    .asciz "Xen"
    .quad hypercall_page
"""
LINKER = "SECTIONS { . = 0x200000; .text : { *(.text) } .data : { *(.data) } }"


@pytest.fixture(scope="module")
def section_kernel(tmp_path_factory) -> Path:
    if shutil.which("as") is None or shutil.which("ld") is None:
        pytest.fail("GNU as/ld missing: apt-get install binutils")
    work = tmp_path_factory.mktemp("kernel")
    (work / "k.S").write_text(SECTION_NOTES_KERNEL)
    subprocess.run(["as", "--64", "-o", str(work / "k.o"), str(work / "k.S")], check=True)
    # .note.Xen is not allocated ("" flags): it stays a section, never a PT_NOTE
    (work / "k.ld").write_text(LINKER)
    subprocess.run(
        [
            "ld",
            "-nostdlib",
            "-z",
            "noexecstack",
            "-z",
            "max-page-size=0x1000",
            "-T",
            str(work / "k.ld"),
            "-o",
            str(work / "k"),
            str(work / "k.o"),
        ],
        check=True,
    )
    return work / "k"


@pytest.mark.parametrize("sample", SAMPLES)
def test_patched_sample_is_bootable_both_ways_for_libelf(
    samples_build: Path, tmp_path: Path, sample: str
) -> None:
    source = samples_build / sample
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    out = tmp_path / "u.elf"
    result = patch_file(source, out)
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before  # input untouched
    image = read_image(out)
    verdicts = evaluate(image)
    assert verdicts.pv.ok and verdicts.pvh.ok, (verdicts.pv.reasons, verdicts.pvh.reasons)
    assert verdicts.pvh.warnings == []
    assert verdicts.pv.details["virt_entry"] == result.plan.pv_entry
    assert verdicts.pvh.details["phys_entry"] == result.plan.pvh_entry
    print(
        f"{sample}: shim code {len(result.plan.shim.code)} bytes, "
        f"memsz {result.plan.memsz:#x}, {result.plan.tables.frames} table frames"
    )


@pytest.mark.parametrize("sample", SAMPLES)
def test_segments_and_notes_layout(samples_build: Path, tmp_path: Path, sample: str) -> None:
    out = tmp_path / "u.elf"
    plan = patch_file(samples_build / sample, out).plan
    image = read_image(out)
    loads = [s for s in image.segments if s.type == SegmentType.LOAD]
    assert [s.vaddr for s in loads] == sorted(s.vaddr for s in loads)
    for first, second in itertools.pairwise(loads):
        assert first.vaddr + first.memsz <= second.vaddr
        assert first.paddr + first.memsz <= second.paddr
    shim = loads[-1]
    assert shim.vaddr - shim.paddr == plan.delta == loads[0].vaddr - loads[0].paddr
    assert shim.offset % 0x1000 == shim.vaddr % 0x1000
    notes = image.note_segments()
    last = notes[-1]
    assert image.segments[-1] == last and last.align == 4
    assert shim.offset <= last.offset and last.offset + last.filesz <= shim.offset + shim.filesz
    in_last = [n for n in image.notes if n.source == f"PT_NOTE[{last.index}]"]
    assert [n.type for n in in_last if n.owner == "Xen"] == [XenNote.ENTRY, XenNote.PHYS32_ENTRY]
    assert in_last[-1].owner == "shimgen"
    assert image.entry == plan.pv_entry


def test_force_repatches_from_the_original(samples_build: Path, tmp_path: Path) -> None:
    """Refusing a patched input without --force is tests/write/test_output_safety.py's;
    byte-identical output across runs is tests/write/test_determinism.py's."""
    once, again = tmp_path / "once", tmp_path / "again"
    assert main(["patch", str(samples_build / "pv-hello"), "-o", str(once)]) == 0
    assert main(["patch", str(once), "-o", str(again), "--force"]) == 0
    assert again.read_bytes() == once.read_bytes()  # re-patched from the original, not stacked
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "once"]  # no temp files


def test_original_is_recoverable(samples_build: Path, tmp_path: Path) -> None:
    source = samples_build / "pv-highhalf"
    out = tmp_path / "u"
    patch_file(source, out)
    data = out.read_bytes()
    meta = shim_meta(read_image(out))
    assert meta is not None and meta.handoff == "start-info"
    assert original_bytes(data, meta) == source.read_bytes()


def test_dry_run_shows_the_plan_and_its_size_and_writes_nothing(
    samples_build: Path, tmp_path: Path, capsys
) -> None:
    source = samples_build / "pv-hello"
    out = tmp_path / "never"
    result = patch_file(source, out, dry_run=True)
    assert result.size == len(patch_bytes(source.read_bytes(), str(source)).data)
    assert main(["patch", str(source), "-o", str(out), "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert {n["name"] for n in plan["notes"]} >= {"ENTRY", "PHYS32_ENTRY", "shimgen"}
    assert main(["patch", str(source), "-o", str(out), "--dry-run"]) == 0
    assert "PHYS32_ENTRY" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_section_only_notes_are_carried_over(section_kernel: Path, tmp_path: Path) -> None:
    before = evaluate(read_image(section_kernel))
    assert before.pv.ok and not before.pvh.ok
    out = tmp_path / "u"
    plan = patch_file(section_kernel, out).plan
    image = read_image(out)
    verdicts = evaluate(image)
    assert verdicts.pv.ok and verdicts.pvh.ok
    assert image.note_origin == "segments"
    copied = {n.label for n in plan.notes if n.action == "copied"}
    assert {"XEN_VERSION", "LOADER", "HYPERCALL_PAGE"} <= copied
    assert plan.boot_mode_symbol == image.symbols["shimgen_boot_mode"]


def test_entry_option_and_errors(samples_build: Path, tmp_path: Path, capsys) -> None:
    src = str(samples_build / "pv-hello")
    out = str(tmp_path / "o")
    assert main(["patch", src, "-o", out, "--entry", "_start", "--json"]) == 0
    capsys.readouterr()
    assert main(["patch", src, "-o", out, "--entry", "no_such_symbol"]) == ExitCode.REFUSED
    assert main(["patch", src, "-o", src]) == ExitCode.OUTPUT
    elf32 = samples_build / "pvh-hello.elf32"  # EM_386: PVH passthrough only
    assert main(["patch", str(elf32), "-o", out, "--handoff", "start-info"]) == ExitCode.REFUSED
    assert "EM_386" in capsys.readouterr().err
    assert main(["patch", str(tmp_path / "missing"), "-o", out]) == ExitCode.BAD_INPUT
