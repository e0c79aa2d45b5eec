"""The shim in Unicorn: both entry paths, hvm_start_info v0/v1, with and without Xen."""

from __future__ import annotations

from pathlib import Path

import pytest
from memmaps import ram_pages
from shimgen.structs import MAX_GUEST_CMDLINE, START_INFO_MAGIC, E820Type, start_info
from shimgen.structs import xen_abi as abi

from shimgen.cli import main
from shimgen.read.image import read_image
from shimgen.verify.emulate import Machine, StartState, emulate
from shimgen.write.patch import patch_file

# Instructions from the entry to the kernel's entry, for the samples' shim. They
# change only when the shim changes: update them (and README/bench) on purpose.
EXPECTED_COUNTS = {
    # (mode, xen, hvm_version, cmdline length): instructions
    ("pv", True, 1, 0): 11,
    ("pvh", True, 1, 0): 286,
    ("pvh", True, 0, 0): 285,  # XENMEM_memory_map instead of walking hvm_start_info's
    ("pvh", False, 1, 0): 184,  # the cpuid search stops at the first unused base
    ("pvh", False, 0, 0): 128,
    ("pvh", True, 1, 1023): 6432,  # about 6 instructions per command-line byte
    ("pvh", True, 1, 5000): 6432,  # cut at 1023 bytes: same work
}


@pytest.fixture
def patched(universal_pv) -> object:
    return universal_pv


def _run(image, **kwargs):
    return emulate(image, StartState(**kwargs))


def test_pv_path_passes_through(patched) -> None:
    result = _run(patched, mode="pv", cmdline=b"pv args")
    assert result.reached_kernel
    assert result.registers["rdi"] == abi.BootMode.XEN_PV
    assert result.registers["rsi"] == result.loader["start_info"]
    assert result.registers["rsp"] == result.loader["rsp"]
    assert result.start_info["cmd_line"] == "pv args"
    assert result.instructions == EXPECTED_COUNTS[("pv", True, 1, 0)]


@pytest.mark.parametrize("xen", [True, False], ids=["xen", "no-xen"])
@pytest.mark.parametrize("version", [1, 0], ids=["v1", "v0"])
def test_pvh_path(patched, xen: bool, version: int) -> None:
    result = _run(patched, mode="pvh", xen=xen, hvm_version=version, flags=3)
    assert result.reached_kernel, result.outcome
    info = result.start_info
    mode = abi.BootMode.XEN_PVH if xen else abi.BootMode.PVH_NO_XEN
    assert result.registers["rdi"] == mode
    assert result.registers["rdx"] == result.loader["hvm_start_info"]
    assert result.registers["rsp"] % 16 == 0
    assert info["magic"] == START_INFO_MAGIC[64].decode()
    assert info["flags"] == 3
    assert info["mod_start"] == result.loader["module"]
    assert info["mod_len"] == result.loader["module_size"]
    assert info["nr_pt_frames"] > 0 and info["pt_base"] != 0
    # v1 carries a memory map; v0 asks Xen (XENMEM_memory_map); v0 without Xen: 0.
    # The pages of RAM in it, not its highest RAM address (the PC's holes are not RAM).
    expected_pages = ram_pages(Machine.pc_memory_map()) if (xen or version == 1) else 0
    assert info["nr_pages"] == expected_pages
    if xen:
        assert info["store_mfn"] and info["console"]["domU"]["evtchn"]
        assert info["shared_info"] >> abi.PAGE_SHIFT == result.loader["shared_info_gpfn"]
        assert any("hypercall page" in line for line in result.hypercalls)
    else:
        assert info["store_mfn"] == info["shared_info"] == 0
        assert result.hypercalls == []
    assert result.instructions == EXPECTED_COUNTS[("pvh", xen, version, 0)]
    print(f"pvh xen={xen} v{version}: {result.instructions} instructions")


@pytest.mark.parametrize("length", [0, MAX_GUEST_CMDLINE - 1, 5000])
def test_cmdline_bounded(patched, length: int) -> None:
    cmdline = bytes(0x41 + i % 26 for i in range(length))
    result = _run(patched, mode="pvh", cmdline=cmdline)
    assert result.reached_kernel
    kept = min(length, MAX_GUEST_CMDLINE - 1)
    assert result.start_info["cmd_line"] == cmdline[:kept].decode()
    raw = result.start_info_raw
    cmd_at = start_info(64).offset_of("cmd_line")
    assert raw[cmd_at + kept] == 0
    if length:
        assert result.instructions == EXPECTED_COUNTS[("pvh", True, 1, length)]
    print(f"cmdline {length}: {result.instructions} instructions")


@pytest.mark.parametrize("mode", ["pvh", "pv"])
def test_bad_magic_never_reaches_kernel(patched, mode: str) -> None:
    result = _run(patched, mode=mode, bad_magic=True)
    assert not result.reached_kernel
    assert b"bad boot magic" in result.debug_output
    assert result.outcome == "halted"
    if mode == "pv":  # console_io, SCHEDOP_shutdown(crash), then a spin loop
        assert any("SCHED_OP" in line for line in result.hypercalls)


def test_deterministic_counts(patched) -> None:
    counts = {_run(patched, mode="pvh").instructions for _ in range(2)}
    assert len(counts) == 1


def test_cli_json_and_exit_status(samples_build: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "u.elf"
    assert main(["patch", str(samples_build / "pv-hello"), "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["emulate", str(out), "--mode", "pvh", "--cmdline", "x y", "--json"]) == 0
    import json

    data = json.loads(capsys.readouterr().out)
    assert data["outcome"] == "kernel-entry"
    assert data["start_info"]["cmd_line"] == "x y"
    assert main(["emulate", str(out), "--mode", "pvh", "--bad-magic"]) == 1
    assert main(["emulate", str(out), "--mode", "pv", "--trace"]) == 0
    assert "0x" in capsys.readouterr().out


def test_memory_sizes_the_guests_ram(samples_build: Path, tmp_path: Path, capsys) -> None:
    """--memory MIB: the RAM the emulated loader's memory map and the PVH shim's
    start_info report; out of range is a usage error."""
    import json

    out = tmp_path / "u.elf"
    assert main(["patch", str(samples_build / "pv-hello"), "-o", str(out)]) == 0
    capsys.readouterr()
    for mib in (8, 200):
        assert main(["emulate", str(out), "--mode", "pvh", "--memory", str(mib), "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["loader"]["nr_pages"] == mib << 20 >> abi.PAGE_SHIFT
    for mib in ("1", "5000"):
        assert main(["emulate", str(out), "--mode", "pvh", "--memory", mib]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and "--memory must be 4 to 3072 MiB" in error


def test_unpatched_is_refused(samples_build: Path, capsys) -> None:
    assert main(["emulate", str(samples_build / "pv-hello"), "--mode", "pv"]) == 6


def test_kernel_linked_at_zero_reaches_its_entry(tmp_path: Path) -> None:
    """Mini-OS and Unikraft link their PV entry at virtual address 0."""
    import imagegen

    notes = imagegen._in_pt_note(
        imagegen.xen_string(imagegen.XEN_GUEST_OS, "zero"),
        imagegen.xen_string(imagegen.XEN_XEN_VERSION, "xen-3.0"),
        imagegen.xen_string(imagegen.XEN_LOADER, "generic"),
        imagegen.xen_number(imagegen.XEN_VIRT_BASE, 0),
        imagegen.xen_number(imagegen.XEN_PADDR_OFFSET, 0),
        imagegen.xen_number(imagegen.XEN_ENTRY, 0),
        imagegen.xen_number(imagegen.XEN_HYPERCALL_PAGE, 0x1000),
    )
    spec = imagegen.Spec(vaddr=0, paddr=0, entry=0, note_segments=notes)
    source = tmp_path / "zero.elf"
    source.write_bytes(imagegen.write_elf(spec))
    patch_file(source, tmp_path / "zero.universal")
    image = read_image(tmp_path / "zero.universal")
    for mode in ("pv", "pvh"):
        result = _run(image, mode=mode)
        assert result.reached_kernel, (mode, result.outcome)
        assert result.registers["rip"] == 0


# --- CPU state at the kernel's entry ---------------------------------------------------

SSE_ON = abi.CR4_OSFXSR | abi.CR4_OSXMMEXCPT


@pytest.mark.parametrize("xen", [True, False], ids=["xen", "no-xen"])
def test_pvh_enters_the_kernel_with_sse_enabled(patched, xen: bool) -> None:
    """Xen runs a PV guest with SSE on; gcc-built PV kernels (Mini-OS) execute
    ldmxcsr early and took #UD under PVH when the shim left CR4.OSFXSR clear."""
    result = _run(patched, mode="pvh", xen=xen)
    assert result.reached_kernel, result.outcome
    regs = result.registers
    assert regs["cr4"] & SSE_ON == SSE_ON
    assert regs["cr4"] & abi.CR4_PAE
    assert regs["cr0"] & abi.CR0_MP
    assert not regs["cr0"] & (abi.CR0_EM | abi.CR0_TS)


def test_hvm_start_info_handoff_enters_with_sse_enabled_too(samples_build, tmp_path) -> None:
    out = tmp_path / "hvm64-hello.universal"
    patch_file(samples_build / "hvm64-hello", out, entry64="_start")
    result = _run(read_image(out), mode="pvh")
    assert result.reached_kernel, result.outcome
    regs = result.registers
    assert regs["cr4"] & SSE_ON == SSE_ON
    assert regs["cr0"] & abi.CR0_MP and not regs["cr0"] & abi.CR0_EM


def test_the_emulated_console_backend_uses_xens_ring_layout(tmp_path: Path) -> None:
    """The ring the emulated xenconsoled drains (io/console.h) and the event channel
    call that asks it to, as gcc compiles Xen's headers."""
    from xenprobe import xen_values

    ring = abi.XENCONS_INTERFACE
    members = ("out", "in_cons", "out_cons", "out_prod")
    expressions = {m: f"offsetof(struct xencons_interface, {m})" for m in members}
    expressions |= {"size": "sizeof(struct xencons_interface)", "send": "EVTCHNOP_send"}
    headers = ("xen/xen.h", "xen/io/console.h", "xen/event_channel.h")
    got = xen_values(tmp_path, expressions, headers)
    assert {m: ring.offset_of(m) for m in members} == {m: got[m] for m in members}
    assert (ring.size, abi.EVTCHNOP_SEND) == (got["size"], got["send"])


def test_high_ram_is_a_second_block_at_4_gib_and_past_it_still_faults(patched) -> None:
    """StartState.high_ram_size: RAM from 4 GiB on, as libxl gives a guest bigger than
    the RAM below its hole, listed in the default map; unbacked memory at or above
    4 GiB past it stays unmapped (a read there faults, no open bus)."""
    from unicorn import UcError

    high = 2 << 20
    machine = Machine(patched, StartState(mode="pvh", high_ram_size=high))
    assert machine.memory_map()[-1] == (1 << 32, high, E820Type.RAM)
    assert (
        ram_pages(tuple(machine.memory_map()))
        == ram_pages(tuple(Machine.pc_memory_map())) + high // abi.PAGE_SIZE
    )
    machine.uc.mem_write((1 << 32) + high - 8, b"highram!")
    assert machine.read((1 << 32) + high - 8, 8) == b"highram!"
    with pytest.raises(UcError):
        machine.read((1 << 32) + high, 8)
    assert machine._map_past_ram((1 << 32) + high, 8) is None
    plain = Machine(patched, StartState(mode="pvh"))
    assert plain.memory_map() == Machine.pc_memory_map()
    with pytest.raises(UcError):
        plain.read(1 << 32, 8)
