"""Every input shape the field ships, patched into a well-formed ELF64 that Xen's own
parser (libxenguest, both containers), QEMU's and linux-loader's rules (check
--strict) accept: notes only in sections, only __xen_guest, ELF32 containers of
x86-64 code (XTF-style), gzip, an 8-byte aligned GNU property PT_NOTE.

The imagegen images have no real code (their entries are hlt loops), so they are
checked structurally; the real kernels among the variants also run.
"""

from __future__ import annotations

import gzip
import shutil
import struct
import subprocess
from pathlib import Path

import imagegen
import pytest
from shimgen.structs import XenNote
from shimgen.structs.elf import SegmentType, section_header

from shimgen.cli import main
from shimgen.errors import ExitCode
from shimgen.read.check import evaluate
from shimgen.read.image import read_image
from shimgen.read.shim_view import shim_meta
from shimgen.verify import xenparser
from shimgen.verify.boot import BootOptions, boot
from shimgen.verify.emulate import StartState, emulate
from shimgen.write.patch import original_bytes, patch_bytes, patch_file

# imagegen case -> what makes it a variant
VARIANTS = {
    "notes_in_sections_only": "sections",
    "xen_guest_only": "legacy",
    "elf32_em_x86_64": "elf32",
    "pv64_gzip": "gzip",
    "gnu_property_after_xen": "gnu-property",
    "gnu_property_first": "gnu-property",
    "pv_and_pvh": "phys32-present",
}
# Patch options per variant: a kernel with both entries is refused by auto (it needs
# no shim); here it checks that a replaced PHYS32_ENTRY's PT_NOTE is left out.
VARIANT_OPTIONS = {"pv_and_pvh": {"handoff": "start-info", "replace_pvh_entry": True}}
SHT_REL = 9
# What PV decides with, per libelf: unchanged by the patch but for the entry.
PV_FACTS = ("virt_base", "elf_paddr_offset", "virt_kstart", "virt_hypercall")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("breadth")


@pytest.fixture(scope="module")
def variants(work: Path) -> dict[str, tuple[Path, Path]]:
    """case -> (input, patched output)."""
    result = {}
    for name in VARIANTS:
        source = imagegen.build(name, work)
        out = work / f"{name}.universal"
        patch_file(source, out, **VARIANT_OPTIONS.get(name, {}))
        result[name] = (source, out)
    return result


@pytest.fixture(scope="module")
def xtf_style(samples_build: Path, work: Path) -> Path:
    """hvm64-hello in an ELF32 container, e_machine EM_X86_64, as XTF ships its tests."""
    if shutil.which("objcopy") is None:
        pytest.fail("objcopy missing: apt-get install binutils")
    out = work / "hvm64-hello.elf32-x86-64"
    subprocess.run(
        ["objcopy", "-I", "elf64-x86-64", "-O", "elf32-x86-64", samples_build / "hvm64-hello", out],
        check=True,
    )
    return out


def _is_plain_elf64(path: Path) -> bool:
    data = path.read_bytes()
    return data[:4] == b"\x7fELF" and data[4] == 2


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("container", ["pv", "pvh"])
def test_libxenguest_accepts_every_variant(
    variants: dict[str, tuple[Path, Path]], name: str, container: str
) -> None:
    source, out = variants[name]
    assert _is_plain_elf64(out)
    answer = xenparser.parse(out, container)
    assert answer.accepted_by_elf_loader, answer.error
    assert answer.guest_type == ("xen-3.0-x86_64" if container == "pv" else "hvm-3.0-x86_32")
    if container == "pvh" and name != "pv_and_pvh":
        assert not xenparser.parse(source, "pvh").accepted_by_elf_loader  # the patch did it


@pytest.mark.parametrize("name", list(VARIANTS))
def test_strict_check_and_recovery(
    variants: dict[str, tuple[Path, Path]], name: str, capsys
) -> None:
    source, out = variants[name]
    assert main(["check", "--strict", "--mode", "both", str(out)]) == 0, capsys.readouterr().out
    before, after = read_image(source), read_image(out)
    meta = shim_meta(after)
    assert meta is not None
    assert original_bytes(after.data, meta) == before.data  # the input, decompressed
    pv_before, pv_after = evaluate(before).pv.details, evaluate(after).pv.details
    for fact in PV_FACTS:
        assert pv_after[fact] == pv_before[fact], fact
    # every PT_NOTE holding Xen notes is 4-aligned and the last one has PHYS32_ENTRY
    for segment in after.note_segments():
        if any(n.source == f"PT_NOTE[{segment.index}]" for n in after.segment_xen_notes):
            assert segment.align == 4
    phys = [n for n in after.segment_xen_notes if n.type == XenNote.PHYS32_ENTRY]
    assert [n.value for n in phys] == [meta.pvh_entry]


def test_variant_records(variants: dict[str, tuple[Path, Path]]) -> None:
    forms = {
        name: shim_meta(read_image(out)).options.get("input") for name, (_, out) in variants.items()
    }
    assert forms["pv64_gzip"] == "gzip"
    assert forms["elf32_em_x86_64"] == "elf32"
    assert forms["notes_in_sections_only"] is None


@pytest.mark.parametrize("name", ["gnu_property_after_xen", "gnu_property_first", "pv_and_pvh"])
def test_confusing_note_segment_is_left_out(
    variants: dict[str, tuple[Path, Path]], name: str
) -> None:
    source, out = variants[name]
    before, after = read_image(source), read_image(out)
    assert len(after.note_segments()) == len(before.note_segments())  # one out, one in
    copied = {n.type for n in after.segment_xen_notes} - {XenNote.ENTRY, XenNote.PHYS32_ENTRY}
    assert copied == {n.type for n in before.xen_notes} - {XenNote.ENTRY, XenNote.PHYS32_ENTRY}


def test_elf32_container_keeps_every_loaded_byte(variants: dict[str, tuple[Path, Path]]) -> None:
    source, out = variants["elf32_em_x86_64"]
    before, after = read_image(source), read_image(out)
    assert (before.elf_class, after.elf_class) == (32, 64)
    assert after.machine == before.machine
    for old in before.loadable_segments:
        new = next(s for s in after.loadable_segments if s.vaddr == old.vaddr)
        assert (new.paddr, new.filesz, new.memsz, new.flags) == (
            old.paddr,
            old.filesz,
            old.memsz,
            old.flags,
        )
        assert new.offset % 0x1000 == new.vaddr % 0x1000
        loaded = before.data[old.offset : old.offset + old.filesz]
        assert after.data[new.offset : new.offset + new.filesz] == loaded


def test_xtf_style_container_runs(xtf_style: Path, samples_build: Path, work: Path) -> None:
    out = work / "xtf.universal"
    plan = patch_file(xtf_style, out, entry64="_start").plan
    image = read_image(out)
    assert image.elf_class == 64 and plan.options["input"] == "elf32"
    # symbols survive the conversion (Elf32_Sym -> Elf64_Sym)
    elf64 = read_image(samples_build / "hvm64-hello").symbols
    assert {k: image.symbols[k] for k in elf64} == elf64
    for container in ("pv", "pvh"):
        assert xenparser.parse(out, container).accepted_by_elf_loader
    for mode in ("pv", "pvh"):
        result = emulate(image, StartState(mode=mode, cmdline=b"xtf"))
        assert result.reached_kernel and result.hvm_start_info["cmdline"] == "xtf"
    if shutil.which("readelf"):
        proc = subprocess.run(["readelf", "-aW", out], capture_output=True, text=True)
        assert proc.returncode == 0 and "warning" not in proc.stderr.lower(), proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "loader",
    [
        pytest.param("qemu-pvh", marks=pytest.mark.qemu),
        pytest.param("xen-pv", marks=pytest.mark.xen),
    ],
)
def test_xtf_style_container_boots(xtf_style: Path, work: Path, loader: str) -> None:
    out = work / f"xtf-{loader}.universal"
    patch_file(xtf_style, out, entry64="_start")
    result = boot(out, BootOptions(loader=loader, cmdline="xtf style", timeout=60))
    assert result.ok, (result.reason, result.guest_lines[-10:], result.xen_errors)
    assert result.report["cmdline"] == "xtf style" and result.report["result"] == "ok"


def test_gzip_input_gives_the_same_image(samples_build: Path, work: Path) -> None:
    plain = (samples_build / "pv-hello").read_bytes()
    packed = patch_bytes(gzip.compress(plain, mtime=0), "pv-hello.gz").data
    unpacked = patch_bytes(plain, "pv-hello").data
    assert packed[:4] == b"\x7fELF"
    a, b = read_image_bytes(packed, work / "a"), read_image_bytes(unpacked, work / "b")
    assert [s.vaddr for s in a.segments] == [s.vaddr for s in b.segments]
    assert shim_meta(a).options == shim_meta(b).options | {"input": "gzip"}
    assert a.data[: len(plain)] == b.data[: len(plain)]


@pytest.mark.parametrize("name", ["pv64_gzip", "elf32_em_x86_64"])
def test_force_repatch_is_identical(variants: dict[str, tuple[Path, Path]], name: str) -> None:
    _, out = variants[name]
    again = patch_bytes(out.read_bytes(), str(out), force=True)
    assert again.repatched and again.data == out.read_bytes()


def test_elf32_i386_takes_only_pvh_passthrough(samples_build: Path, tmp_path: Path, capsys) -> None:
    elf32 = str(samples_build / "pvh-hello.elf32")
    out = str(tmp_path / "o")
    assert main(["patch", elf32, "-o", out, "--handoff", "start-info"]) == ExitCode.REFUSED
    assert "--handoff pvh-passthrough" in capsys.readouterr().err
    assert main(["patch", elf32, "-o", out, "--json"]) == ExitCode.OK
    assert '"handoff": "pvh-passthrough"' in capsys.readouterr().out


def test_elf32_container_with_relocations_is_refused(
    xtf_style: Path, tmp_path: Path, capsys
) -> None:
    data = bytearray(xtf_style.read_bytes())
    shoff, shentsize = struct.unpack_from("<I", data, 32)[0], struct.unpack_from("<H", data, 46)[0]
    type_at = shoff + shentsize + section_header(32).offset_of("sh_type")  # section 1
    struct.pack_into("<I", data, type_at, SHT_REL)
    bad = tmp_path / "rel"
    bad.write_bytes(bytes(data))
    assert main(["patch", str(bad), "-o", str(tmp_path / "o"), "--entry64", "_start"]) == 6
    assert "SHT_REL" in capsys.readouterr().err


def read_image_bytes(data: bytes, path: Path):
    path.write_bytes(data)
    return read_image(path)


def test_segments_stay_sorted(variants: dict[str, tuple[Path, Path]]) -> None:
    for _, out in variants.values():
        loads = [s for s in read_image(out).segments if s.type == SegmentType.LOAD]
        assert [s.vaddr for s in loads] == sorted(s.vaddr for s in loads)
