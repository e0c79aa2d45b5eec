"""grant_table_op for a PV kernel under PVH (asm_templates/38_pv_grant.S; docs/pv-abi.md,
piece 6): setup_table's frames mapped (XENMEM_add_to_physmap, XENMAPSPACE_grant_table)
at gfns after the RAM before Xen answers, so the frame list a PV kernel maps names real
frames, as under PV. The emulated Xen answers setup_table as Xen answers an HVM guest
(a frame never mapped: an invalid gfn); what the test expects comes from the memory map
it passes and Xen's public constants.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from memmaps import MIB, RAM, RESERVED, Memmap, xl_pvh_memmap
from pvkernel import DATA_VIRT, MEMORY_MIB, assemble, hypercall, write_kernel
from shimgen.structs import xen_abi as abi

from shimgen import api
from shimgen.read.image import read_image
from shimgen.shim import pagetables as pt
from shimgen.verify import emulate as emu

SETUP = abi.GNTTAB_SETUP_TABLE
LISTS = (DATA_VIRT + 0x100, DATA_VIRT + 0x300, DATA_VIRT + 0x500)  # one a call
ASKED = (4, 6, abi.MAX_GRANT_FRAMES + 1)  # Mini-OS's 4, then more, then too many
RESULTS = ("r12", "r13", "r14")


def setup_table(frames: int, frame_list: int, result: str) -> str:
    """A PV kernel's GNTTABOP_setup_table for DOMID_SELF, argument at DATA_VIRT."""
    return f"""
    movabs ${DATA_VIRT:#x}, %rbx
    movw ${abi.DOMID_SELF:#x}, {SETUP.offset_of("dom"):#x}(%rbx)
    movl ${frames:#x}, {SETUP.offset_of("nr_frames"):#x}(%rbx)
    movw $0x7777, {SETUP.offset_of("status"):#x}(%rbx)
    movabs ${frame_list:#x}, %rax
    mov %rax, {SETUP.offset_of("frame_list"):#x}(%rbx)
    mov ${abi.GNTTABOP_SETUP_TABLE:#x}, %edi
    mov %rbx, %rsi
    mov $0x1, %edx
    {hypercall(abi.Hypercall.GRANT_TABLE_OP)}
    mov %rax, %{result}
"""


# three calls, then the M2P entry of the first frame's gfn (the kernel faults, and the
# run stops short of its hlt, if the M2P has no page there)
KERNEL = "".join(setup_table(*call) for call in zip(ASKED, LISTS, RESULTS, strict=True))
KERNEL += f"""
    movabs ${LISTS[0]:#x}, %rax
    mov (%rax), %rax
    movabs ${abi.MACH2PHYS_VIRT_START:#x}, %rcx
    mov (%rcx,%rax,8), %rbp
"""


def boot(tmp_path: Path, memmap: Memmap) -> tuple[emu.Machine, emu.Result]:
    kernel = write_kernel(tmp_path / "kernel.elf", assemble(KERNEL))
    out = tmp_path / "kernel.universal"
    api.patch(kernel, out, pv_abi=True)
    start = emu.StartState(mode="pvh", run_kernel=True, memmap=memmap, ram_size=MEMORY_MIB * MIB)
    machine, result = emu.run_machine(read_image(out), start)
    assert result.outcome == "kernel-halted", (result.outcome, result.traps)
    return machine, result


def signed(value: int) -> int:
    return value - (1 << 64) if value >> 63 else value


def frame_list(machine: emu.Machine, result: emu.Result, call: int) -> list[int]:
    at = LISTS[call]
    raw = machine.read(translate(machine, result, at), 8 * ASKED[call])
    return [int.from_bytes(raw[i : i + 8], "little") for i in range(0, len(raw), 8)]


def translate(machine: emu.Machine, result: emu.Result, vaddr: int) -> int:
    physical = pt.translate(machine.read, result.registers["cr3"], vaddr)
    assert physical is not None
    return physical


def status(machine: emu.Machine, result: emu.Result) -> int:
    at = translate(machine, result, DATA_VIRT + SETUP.offset_of("status"))
    return int.from_bytes(machine.read(at, 2), "little", signed=True)


def grant_maps(result: emu.Result) -> list[str]:
    prefix = f"MEMORY_OP({abi.XENMEM_ADD_TO_PHYSMAP:#x},"
    return [call for call in result.hypercalls if call.startswith(prefix)][1:]  # not shared_info


@pytest.fixture(scope="module")
def xl_domu(tmp_path_factory: pytest.TempPathFactory) -> tuple[emu.Machine, emu.Result]:
    return boot(tmp_path_factory.mktemp("grant"), xl_pvh_memmap(MEMORY_MIB))


def test_setup_table_gives_frames_mapped_right_after_the_ram(
    xl_domu: tuple[emu.Machine, emu.Result],
) -> None:
    machine, result = xl_domu
    # xl's map has nothing between the RAM's end and its ACPI tables: the frames
    # follow the RAM (32 MiB, a whole number of M2P pages), in index order
    first = MEMORY_MIB * MIB // abi.PAGE_SIZE
    assert signed(result.registers["r12"]) == 0
    assert frame_list(machine, result, 0) == [first + i for i in range(4)]
    assert signed(result.registers["r13"]) == 0
    assert frame_list(machine, result, 1) == [first + i for i in range(6)]
    # each frame mapped once: the second call maps the two it adds
    assert len(grant_maps(result)) == 6, result.hypercalls


def test_too_many_frames_is_refused_as_xens_pv_shim_does(
    xl_domu: tuple[emu.Machine, emu.Result],
) -> None:
    _machine, result = xl_domu
    assert signed(result.registers["r14"]) == -abi.EINVAL


def test_the_grant_frames_read_as_invalid_in_the_m2p(
    xl_domu: tuple[emu.Machine, emu.Result],
) -> None:
    """Xen leaves a grant frame out of a PV guest's M2P (share_xen_page_with_guest
    writes INVALID_M2P_ENTRY): reading it gives that, not a fault."""
    _machine, result = xl_domu
    assert result.registers["rbp"] == abi.INVALID_M2P_ENTRY


def test_with_no_free_frames_below_4_gib_xen_answers_unchanged(tmp_path: Path) -> None:
    """A map with no gap below the shim's direct map: nothing is mapped, and Xen's own
    answer (an invalid gfn for each frame) reaches the kernel, as without the layer."""
    ram = MEMORY_MIB * MIB
    memmap = ((0, ram, RAM), (ram, (1 << 32) - ram, RESERVED))
    machine, result = boot(tmp_path, memmap)
    assert signed(result.registers["r12"]) == 0
    assert status(machine, result) == abi.GNTST_GENERAL_ERROR  # the last call's: 65
    assert frame_list(machine, result, 0) == [abi.INVALID_M2P_ENTRY] * 4
    assert grant_maps(result) == []
