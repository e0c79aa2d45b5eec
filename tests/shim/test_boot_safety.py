"""Boot-time safety (issue 6): what the shim does with a hostile or broken loader.

Every case runs the patched samples' shim in Unicorn (shimgen.verify.emulate) and checks
that the kernel entry is never reached, or is reached with bounded data. The
emulator maps 128 MiB of RAM; past it, below 4 GiB, reads see open bus (0xff), as
on a PC; at or above 4 GiB nothing is mapped, so a shim that read there would
fault (outcome "fault: ..."), which every test here would catch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from memmaps import ram_pages
from shimgen.structs import HVM_MODLIST_ENTRY, MAX_GUEST_CMDLINE
from shimgen.structs import xen_abi as abi

from shimgen.read.image import read_image
from shimgen.read.shim_view import shim_view
from shimgen.shim.values import (
    BAD_MAGIC_MESSAGE,
    MEMMAP_MAX_ENTRIES,
    OUT_OF_RANGE_MESSAGE,
    WRONG_MODE_MESSAGE,
)
from shimgen.verify.emulate import RAM_SIZE, Machine, StartState, emulate
from shimgen.write.patch import patch_file

FOUR_GIB = 1 << 32
CMDLINE_KEPT = MAX_GUEST_CMDLINE - 1  # the shim keeps one byte for the NUL
# Instructions from the PVH entry to the first instruction of the command-line copy.
# Issue 6's target is under 200; they change only when the shim changes.
BEFORE_CMDLINE_COPY = {
    # (xen, another hypervisor's cpuid leaves first, hvm_start_info version)
    (True, False, 1): 94,
    (True, False, 0): 94,
    (True, True, 1): 104,  # Xen behind Viridian, at 0x40000100
    (False, False, 1): 80,  # no hypervisor
    (False, True, 1): 90,  # KVM or Hyper-V alone
}


@pytest.fixture(scope="module", params=["pv-hello", "pv-highhalf"])
def patched(request, samples_build: Path, tmp_path_factory) -> tuple[object, object]:
    out = tmp_path_factory.mktemp("safety") / f"{request.param}.universal"
    plan = patch_file(samples_build / request.param, out).plan
    return read_image(out), plan


def _run(patched, **kwargs):
    image, _plan = patched
    return emulate(image, StartState(**kwargs))


def _halted_with(result, message: bytes) -> None:
    assert not result.reached_kernel
    assert result.outcome == "halted", result.outcome
    assert result.debug_output == message


# --- absurd hvm_start_info -------------------------------------------------------------


def test_huge_memmap_entries_are_bounded(patched) -> None:
    normal = _run(patched, mode="pvh")
    capped = _run(patched, mode="pvh", hvm_fields={"memmap_entries": MEMMAP_MAX_ENTRIES})
    huge = _run(patched, mode="pvh", hvm_fields={"memmap_entries": 0xFFFFFFFF})
    assert huge.reached_kernel and capped.reached_kernel
    # the walk stops at MEMMAP_MAX_ENTRIES: the same work as that many entries (one
    # instruction more: the cap itself), far more than the three real ones
    assert huge.instructions == capped.instructions + 1
    assert huge.instructions > normal.instructions + MEMMAP_MAX_ENTRIES
    # the three real entries come first; what follows in RAM is no RAM entry
    assert huge.start_info["nr_pages"] == normal.start_info["nr_pages"]
    assert normal.start_info["nr_pages"] == ram_pages(Machine.pc_memory_map())


@pytest.mark.parametrize(
    "fields",
    [
        {"memmap_paddr": FOUR_GIB},
        {"memmap_paddr": FOUR_GIB - 0x10},  # the table runs past 4 GiB
        {"memmap_paddr": (1 << 64) - 0x10},  # and wraps around
        {"memmap_paddr": FOUR_GIB - 0x1000, "memmap_entries": 0xFFFFFFFF},
        {"cmdline_paddr": FOUR_GIB},
        {"cmdline_paddr": (1 << 64) - 1},
        {"modlist_paddr": FOUR_GIB + 0x1000},
        {"modlist_paddr": FOUR_GIB - 0x8},  # entry 0 crosses 4 GiB
    ],
    ids=lambda f: ",".join(f"{k}={v:#x}" for k, v in f.items()),
)
def test_pointers_outside_the_identity_map_halt(patched, fields: dict[str, int]) -> None:
    result = _run(patched, mode="pvh", hvm_fields=fields)
    _halted_with(result, OUT_OF_RANGE_MESSAGE)


def test_module_outside_the_identity_map_halts(patched) -> None:
    """The shim reads only module 0's entry, but the kernel would read the module
    through the shim's page tables, which map the first 4 GiB: refused."""
    modlist = RAM_SIZE - abi.PAGE_SIZE
    entry = {"paddr": FOUR_GIB + 0x200000, "size": 0x1000, "cmdline_paddr": 0, "reserved": 0}
    result = _run(
        patched,
        mode="pvh",
        hvm_fields={"modlist_paddr": modlist},
        memory={modlist: HVM_MODLIST_ENTRY.build(entry)},
    )
    _halted_with(result, OUT_OF_RANGE_MESSAGE)
    entry["paddr"] = FOUR_GIB - 0x1000  # the last page below 4 GiB: still mapped
    result = _run(
        patched,
        mode="pvh",
        hvm_fields={"modlist_paddr": modlist},
        memory={modlist: HVM_MODLIST_ENTRY.build(entry)},
    )
    assert result.reached_kernel
    assert result.start_info["mod_start"] == FOUR_GIB - 0x1000


def test_hvm_start_info_cut_by_4_gib_halts(patched) -> None:
    # magic and version readable just below 4 GiB, the rest of the struct beyond
    result = _run(patched, mode="pvh", info_at=FOUR_GIB - 0x10)
    _halted_with(result, OUT_OF_RANGE_MESSAGE)


@pytest.mark.parametrize("field", ["cmdline_paddr", "memmap_paddr"])
def test_pointers_past_ram_read_bounded_open_bus(patched, field: str) -> None:
    """Past RAM but below 4 GiB the identity map reaches: a PC reads 0xff there.
    The shim copies at most CMDLINE_KEPT bytes and walks at most the given count."""
    result = _run(patched, mode="pvh", hvm_fields={field: RAM_SIZE + 0x3000})
    assert result.reached_kernel and result.open_bus
    info = result.start_info
    if field == "cmdline_paddr":
        assert len(info["cmd_line"]) == CMDLINE_KEPT
        assert set(info["cmd_line"]) == {"\xff"}
        raw = result.start_info_raw
        assert raw[info_offset("cmd_line") + CMDLINE_KEPT] == 0
    else:  # three entries of 0xff bytes: none is RAM
        assert info["nr_pages"] == 0


def info_offset(name: str) -> int:
    from shimgen.structs import start_info

    return start_info(64).offset_of(name)


def test_cmdline_without_nul_is_bounded(patched) -> None:
    text = b"console=hvc0 no-nul-here"
    result = _run(patched, mode="pvh", cmdline=text, cmdline_unterminated=True)
    assert result.reached_kernel
    kept = result.start_info["cmd_line"].encode("latin-1")
    assert kept.startswith(text) and len(kept) == CMDLINE_KEPT  # then open bus
    assert result.start_info_raw[info_offset("cmd_line") + CMDLINE_KEPT] == 0


# --- wrong magic, wrong mode ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["pv", "pvh"])
def test_bad_magic_halts_with_its_message(patched, mode: str) -> None:
    result = _run(patched, mode=mode, bad_magic=True)
    assert not result.reached_kernel and result.outcome == "halted"
    assert result.debug_output == BAD_MAGIC_MESSAGE


@pytest.mark.parametrize("mode", ["pv", "pvh"])
def test_entry_in_the_wrong_cpu_mode_halts(patched, mode: str) -> None:
    """PV entry jumped to in 32-bit protected mode, PVH entry jumped to in long mode."""
    result = _run(patched, mode=mode, wrong_mode=True)
    _halted_with(result, WRONG_MODE_MESSAGE)
    assert result.instructions < 20 + 5 * len(WRONG_MODE_MESSAGE)  # straight to the report


@pytest.fixture(scope="module")
def hvm64(samples_build: Path, tmp_path_factory) -> object:
    out = tmp_path_factory.mktemp("safety") / "hvm64-hello.universal"
    patch_file(samples_build / "hvm64-hello", out, entry64="_start")
    return read_image(out)


@pytest.mark.parametrize("mode", ["pv", "pvh"])
def test_hvm_start_info_handoff_guards_its_entries_too(hvm64, mode: str) -> None:
    result = emulate(hvm64, StartState(mode=mode, wrong_mode=True))
    _halted_with(result, WRONG_MODE_MESSAGE)
    assert emulate(hvm64, StartState(mode=mode)).reached_kernel


# --- the cpuid search -------------------------------------------------------------------


@pytest.mark.parametrize(("xen", "other", "version"), sorted(BEFORE_CMDLINE_COPY))
def test_pvh_path_before_the_cmdline_copy(patched, xen: bool, other: bool, version: int) -> None:
    image, plan = patched
    watch = {"copy_cmdline": plan.shim_vaddr + plan.shim.labels["copy_cmdline"]}
    result = emulate(
        image,
        StartState(mode="pvh", xen=xen, other_hypervisor=other, hvm_version=version, watch=watch),
    )
    assert result.reached_kernel
    mode = abi.BootMode.XEN_PVH if xen else abi.BootMode.PVH_NO_XEN
    assert result.registers["rdi"] == mode
    if xen:  # found where it is, and used: the hypercall page and the params
        assert result.start_info["store_mfn"] and result.start_info["shared_info"]
    before = result.reached["copy_cmdline"]
    assert before == BEFORE_CMDLINE_COPY[(xen, other, version)]
    assert before < 200
    print(f"xen={xen} other={other} v{version}: {before} before the cmdline copy")


# --- any hvm_start_info at all ----------------------------------------------------------

POINTER = st.one_of(
    st.sampled_from([0, RAM_SIZE - 1, RAM_SIZE, FOUR_GIB - 1, FOUR_GIB, (1 << 64) - 1]),
    st.integers(0, FOUR_GIB + 0x10000),
    st.integers(0, (1 << 64) - 1),
)
COUNT = st.one_of(
    st.sampled_from([0, 1, 3, MEMMAP_MAX_ENTRIES, 0xFFFFFFFF]), st.integers(0, 0xFFFFFFFF)
)


@pytest.fixture(scope="module")
def pv_hello(samples_build: Path, tmp_path_factory) -> object:
    out = tmp_path_factory.mktemp("safety-any") / "pv-hello.universal"
    patch_file(samples_build / "pv-hello", out)
    return read_image(out)


@settings(max_examples=60, deadline=None)
@given(
    version=st.sampled_from([0, 1, 2, 0xFFFFFFFF]),
    nr_modules=COUNT,
    modlist=POINTER,
    cmdline=POINTER,
    memmap=POINTER,
    entries=COUNT,
)
def test_any_hvm_start_info_is_entered_bounded_or_reported(
    pv_hello, version, nr_modules, modlist, cmdline, memmap, entries
) -> None:
    fields = {
        "version": version,
        "nr_modules": nr_modules,
        "modlist_paddr": modlist,
        "cmdline_paddr": cmdline,
        "memmap_paddr": memmap,
        "memmap_entries": entries,
    }
    result = emulate(pv_hello, StartState(mode="pvh", hvm_fields=fields))
    if result.reached_kernel:
        raw = result.start_info_raw
        cmd = raw[info_offset("cmd_line") : info_offset("cmd_line") + MAX_GUEST_CMDLINE]
        assert 0 in cmd  # NUL-terminated within the field
        return
    _halted_with(result, OUT_OF_RANGE_MESSAGE)


# --- the shared report loop -------------------------------------------------------------


def test_report_loop_decodes_the_same_in_both_modes(patched) -> None:
    """64-bit error paths jump into report_and_halt, assembled as 32-bit code: its
    bytes must mean the same instructions in long mode (21_pvh_bad_magic.S)."""
    from capstone import CS_ARCH_X86, CS_MODE_32, CS_MODE_64, Cs

    image, _plan = patched
    info = shim_view(image, disassemble=False)
    start = info.labels["report_and_halt"] - info.code_vaddr
    end = info.labels["pvh_halt"] - info.code_vaddr + 4  # cli, hlt, jmp back
    code = info.code[start:end]
    decoded = {
        bits: [
            (i.mnemonic, i.op_str.replace("rsi", "esi"))
            for i in Cs(CS_ARCH_X86, mode).disasm(code, 0)
        ]
        for bits, mode in ((32, CS_MODE_32), (64, CS_MODE_64))
    }
    assert decoded[32] == decoded[64]
    assert [m for m, _ in decoded[32]] == [
        "cld",
        "mov",
        "lodsb",
        "test",
        "je",
        "out",
        "jmp",
        "cli",
        "hlt",
        "jmp",
    ]


# --- the same through the command line ----------------------------------------------------


def test_cli_hostile_options(samples_build: Path, tmp_path: Path, capsys) -> None:
    import json

    from shimgen.cli import main

    out = tmp_path / "u.elf"
    assert main(["patch", str(samples_build / "pv-hello"), "-o", str(out)]) == 0
    capsys.readouterr()
    far = ["--set", f"cmdline_paddr={FOUR_GIB:#x}"]
    assert main(["emulate", str(out), "--mode", "pvh", *far, "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["outcome"] == "halted"
    assert data["debug_output"].encode("latin-1") == OUT_OF_RANGE_MESSAGE
    assert main(["emulate", str(out), "--mode", "pv", "--wrong-mode", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["debug_output"].encode("latin-1") == WRONG_MODE_MESSAGE
    args = ["--other-hypervisor", "--cmdline", "a b", "--cmdline-unterminated", "--json"]
    assert main(["emulate", str(out), "--mode", "pvh", *args]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["start_info"]["cmd_line"].startswith("a b\xff")
    assert data["open_bus"] == [RAM_SIZE]


@pytest.mark.parametrize(
    "setting", ["nope=1", "version=0x100000000", "memmap_paddr", "cmdline_paddr=xyz"]
)
def test_cli_rejects_bad_field_settings(
    samples_build: Path, tmp_path: Path, capsys, setting
) -> None:
    from shimgen.cli import main

    out = tmp_path / "u.elf"
    assert main(["patch", str(samples_build / "pv-hello"), "-o", str(out)]) == 0
    capsys.readouterr()
    try:
        status = main(["emulate", str(out), "--mode", "pvh", "--set", setting])
    except SystemExit as exit_:  # argparse rejects what it can parse itself
        status = exit_.code
    assert status == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    # argparse prints its usage first; the error is the one last line
    assert "error:" in err.strip().splitlines()[-1] and setting.split("=")[0] in err
