"""--single-entry: one polyglot entry for ENTRY, PHYS32_ENTRY and e_entry, decoded in
both modes, run in Unicorn in both modes, refused where the image does not allow it,
and booted for real by all three loaders."""

from __future__ import annotations

from pathlib import Path

import pytest
from shimgen.structs import XenNote
from shimgen.structs import xen_abi as abi

from shimgen.cli import main
from shimgen.errors import ExitCode
from shimgen.read.check import evaluate
from shimgen.read.image import read_image
from shimgen.read.shim_view import shim_meta
from shimgen.verify import xenparser
from shimgen.verify.boot import BootOptions, boot
from shimgen.verify.emulate import StartState, emulate
from shimgen.write.patch import patch_file

# The polyglot's extra instructions on top of the two-entry paths (test_emulate.py,
# test_handoffs.py). It jumps past the entries' own mode guards: in 64-bit mode its
# xor, test, jz replace the guard's xor, test, jnz; in 32-bit mode its xor, dec,
# test, jz, jmp replace the guard's xor, dec, test, jz.
EXTRA_PV = 0
EXTRA_PVH = 1
MODES = {
    "qemu-pvh": abi.BootMode.PVH_NO_XEN,
    "xen-pvh": abi.BootMode.XEN_PVH,
    "xen-pv": abi.BootMode.XEN_PV,
}


@pytest.fixture(scope="module")
def single(samples_build: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "pv-hello.single"
    patch_file(samples_build / "pv-hello", out, single_entry=True)
    return out


@pytest.fixture(scope="module")
def two_entries(samples_build: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "pv-hello.universal"
    patch_file(samples_build / "pv-hello", out)
    return out


@pytest.fixture(scope="module")
def hvm64_single(samples_build: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "hvm64-hello.single"
    patch_file(samples_build / "hvm64-hello", out, entry64="_start", single_entry=True)
    return out


def _polyglot(image_path: Path, samples_build: Path) -> tuple[bytes, int, dict[str, int]]:
    """(bytes at the entry, the entry address, shim labels as addresses)."""
    plan = patch_file(samples_build / "pv-hello", image_path, single_entry=True, dry_run=True).plan
    image = read_image(image_path)
    entry = image.entry
    segment = next(s for s in image.loadable_segments if s.vaddr <= entry < s.vaddr + s.filesz)
    at = segment.offset + entry - segment.vaddr
    labels = {name: plan.shim_vaddr + offset for name, offset in plan.shim.labels.items()}
    return image.data[at : at + 16], entry, labels


def test_one_address_for_every_entry(single: Path) -> None:
    image = read_image(single)
    meta = shim_meta(image)
    assert meta is not None and meta.options.get("single_entry") is True
    entries = {n.type: int(n.value) for n in image.segment_xen_notes if n.type in (1, 18)}
    assert entries[XenNote.ENTRY] == entries[XenNote.PHYS32_ENTRY] == image.entry
    assert meta.pv_entry == meta.pvh_entry == image.entry
    verdicts = evaluate(image)
    assert verdicts.pv.ok and verdicts.pvh.ok and verdicts.pvh.warnings == []


def test_polyglot_decodes_differently_in_each_mode(single: Path, samples_build: Path) -> None:
    from capstone import CS_ARCH_X86, CS_MODE_32, CS_MODE_64, Cs

    code, entry, labels = _polyglot(single, samples_build)
    assert entry == labels["single_entry"]
    decoded = {
        bits: [
            (i.mnemonic, i.op_str)
            for i in Cs(CS_ARCH_X86, mode).disasm(code, entry)
            if i.address < entry + 16
        ][:4]
        for bits, mode in ((32, CS_MODE_32), (64, CS_MODE_64))
    }
    assert code[:5] == bytes.fromhex("31c04885c0")  # as 80_single_entry.S documents
    assert decoded[64][:3] == [
        ("xor", "eax, eax"),
        ("test", "rax, rax"),
        ("je", hex(labels["pv_checked"])),
    ]
    assert decoded[32][:4] == [
        ("xor", "eax, eax"),
        ("dec", "eax"),
        ("test", "eax, eax"),
        ("je", hex(labels["pv_checked"])),
    ]
    jump = list(Cs(CS_ARCH_X86, CS_MODE_32).disasm(code, entry))[4]
    assert (jump.mnemonic, jump.op_str) == ("jmp", hex(labels["pvh_checked"]))


@pytest.mark.parametrize(
    ("mode", "xen"), [("pv", True), ("pvh", True), ("pvh", False)], ids=["pv", "xen-pvh", "pvh"]
)
def test_both_modes_in_emulation(single: Path, two_entries: Path, mode: str, xen: bool) -> None:
    state = StartState(mode=mode, xen=xen, cmdline=b"one entry")
    result = emulate(read_image(single), state)
    assert result.reached_kernel, result.outcome
    expected = {
        ("pv", True): abi.BootMode.XEN_PV,
        ("pvh", True): abi.BootMode.XEN_PVH,
        ("pvh", False): abi.BootMode.PVH_NO_XEN,
    }[(mode, xen)]
    assert result.registers["rdi"] == result.boot_mode_var == expected
    assert result.start_info["cmd_line"] == "one entry"
    # the same paths as with two entries, plus the polyglot's own instructions
    extra = EXTRA_PV if mode == "pv" else EXTRA_PVH
    assert result.instructions == emulate(read_image(two_entries), state).instructions + extra


@pytest.mark.parametrize("mode", ["pv", "pvh"])
def test_hvm_start_info_handoff_with_single_entry(hvm64_single: Path, mode: str) -> None:
    result = emulate(read_image(hvm64_single), StartState(mode=mode, cmdline=b"x"))
    assert result.reached_kernel, result.outcome
    assert result.hvm_start_info["cmdline"] == "x"
    for container in ("pv", "pvh"):
        assert xenparser.parse(hvm64_single, container).accepted_by_elf_loader


def test_refused_where_virtual_is_not_physical(samples_build: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    args = ["patch", str(samples_build / "pv-highhalf"), "-o", str(out), "--single-entry"]
    assert main(args) == ExitCode.REFUSED
    error = capsys.readouterr().err
    assert "virtual == physical" in error and "0xffffffff80000000" in error
    assert not out.exists()


def test_libxenguest_and_strict_check(single: Path, capsys) -> None:
    for container in ("pv", "pvh"):
        answer = xenparser.parse(single, container)
        assert answer.accepted_by_elf_loader, answer.error
    assert main(["check", "--strict", str(single)]) == 0, capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize(
    "loader",
    [
        pytest.param("qemu-pvh", marks=pytest.mark.qemu),
        pytest.param("xen-pvh", marks=pytest.mark.xen),
        pytest.param("xen-pv", marks=pytest.mark.xen),
    ],
)
def test_single_entry_boots(single: Path, loader: str) -> None:
    result = boot(single, BootOptions(loader=loader, cmdline="single entry", timeout=60))
    report = result.report
    assert result.ok, (result.reason, result.guest_lines[-10:], result.xen_errors)
    mode = MODES[loader]
    assert int(report["mode"]) == int(report["boot_mode_var"]) == int(report["entry_rdi"], 16)
    assert int(report["mode"]) == mode
    assert report["cmdline"] == "single entry" and report["result"] == "ok"
