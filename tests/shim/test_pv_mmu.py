"""The page-table hypercalls of the PV ABI layer (asm_templates/37_pv_mmu.S) and the
guest-memory checks they are built on (pv_abi_walk, pv_abi_addr_ok and
pv_abi_guest_ok in 34_pv_abi.S), run in the emulated PVH boot past the kernel's
entry.

The test kernels are tests/pvkernel.py's: code at TEXT_VIRT (0xffffffff80100000,
physical 0x100000), two free pages at DATA_VIRT. Each test kernel finds its own
page directory through the shim's direct map (CR3 -> PML4[511] -> PDPT[510]), and
gives the 2 MiB window at WINDOW an L1 table of its own (the first data page), so
what the handlers change is what the test set up, not the shim's layout.
"""

from __future__ import annotations

from pathlib import Path

import imagegen
import pytest
from pvkernel import DATA_VIRT, assemble, hypercall, patched, run
from shimgen.structs import xen_abi as abi
from xenprobe import xen_values

from shimgen import api

UVM = abi.Hypercall.UPDATE_VA_MAPPING
DIRECT_MAP = abi.SHIM_DIRECTMAP_VIRT
ADDR_MASK = abi.PTE_ADDR_MASK
P, W = abi.PTE_PRESENT, abi.PTE_WRITE

L1_VIRT = DATA_VIRT  # the first data page: the window's L1 table
PAGE_VIRT = DATA_VIRT + abi.PAGE_SIZE  # the second: a page to map into the window
L1_PHYS = L1_VIRT - imagegen.PV64_VIRT_BASE
PAGE_PHYS = PAGE_VIRT - imagegen.PV64_VIRT_BASE
WINDOW = 0xFFFFFFFF80400000  # page-directory entry 2 of the kernel's last GiB
LARGE = WINDOW + abi.LARGE_PAGE_SIZE  # entry 3: a 2 MiB page the kernel makes
FAR_TABLE = LARGE + abi.LARGE_PAGE_SIZE  # entry 4: a "table" at 4 GiB, past the direct map
UNMAPPED = FAR_TABLE + abi.LARGE_PAGE_SIZE  # entry 5: not present
MARK = 0x5EED0000CAFE
ACCESSED_DIRTY = 0x60  # bits 5 and 6: the CPU sets them in an entry it uses


def index(va: int, level: int) -> int:
    return va >> (abi.PAGE_SHIFT + 9 * (level - 1)) & (abi.ENTRIES_PER_TABLE - 1)


def page_directory_entry(va: int) -> str:
    """Assembly: r9 = the direct map, r10 = the direct-map address of the
    page-directory entry for va (its PML4 and PDPT entries present)."""
    return f"""
        mov %cr3, %r10
        and $-0x1000, %r10
        movabs ${DIRECT_MAP:#x}, %r9
        movabs ${ADDR_MASK:#x}, %r11
        mov {8 * index(va, 4):#x}(%r9,%r10), %r10
        and %r11, %r10
        mov {8 * index(va, 3):#x}(%r9,%r10), %r10
        and %r11, %r10
        lea {8 * index(va, 2):#x}(%r9,%r10), %r10
    """


def set_up() -> str:
    """The window's L1 table, a large page after it, a far table after that."""
    large = abi.LARGE_PAGE_SIZE | P | W | abi.PTE_LARGE
    return (
        page_directory_entry(WINDOW)
        + f"""
        movq ${L1_PHYS | P | W:#x}, (%r10)
        movq ${large:#x}, 0x8(%r10)
        movabs ${(1 << 32) | P | W:#x}, %rax
        mov %rax, 0x10(%r10)
        movabs ${MARK:#x}, %rax
        mov %rax, {PAGE_VIRT + 0x10:#x}
    """
    )


def call(number: int, keep: str, **args: int) -> str:
    loads = "".join(f"movabs ${value & (1 << 64) - 1:#x}, %{reg}\n" for reg, value in args.items())
    return f"{loads}{hypercall(number)}\nmov %rax, %{keep}\n"


def uvm(keep: str, va: int, val: int, flags: int = abi.UVMF_INVLPG) -> str:
    return call(UVM, keep, rdi=va, rsi=val, rdx=flags)


def kernel_run(tmp_path: Path, source: str) -> api.EmulateResult:
    result = run(patched(tmp_path, assemble(set_up() + source), pv_abi=True))
    assert result.debug_output == b""  # the shim answered every call
    return result


def signed(value: int) -> int:
    return value - (1 << 64) if value >> 63 else value


def kept(result: api.EmulateResult, *names: str) -> list[int]:
    return [signed(result.registers[name]) for name in names]


MMU_NUMBERS = ("UVMF_NONE", "UVMF_TLB_FLUSH", "UVMF_INVLPG", "UVMF_FLUSHTYPE_MASK")
MMU_NUMBERS += ("UVMF_LOCAL", "UVMF_ALL")


def test_mmu_numbers_match_xen_headers(tmp_path: Path) -> None:
    got = xen_values(tmp_path, {name: name for name in MMU_NUMBERS})
    assert got == {name: getattr(abi, name) for name in MMU_NUMBERS}


# --- update_va_mapping --------------------------------------------------------------


@pytest.mark.parametrize(
    "flags",
    [
        abi.UVMF_INVLPG,
        abi.UVMF_TLB_FLUSH,
        abi.UVMF_INVLPG | abi.UVMF_ALL,
        abi.UVMF_TLB_FLUSH | abi.UVMF_ALL,
        abi.UVMF_NONE,
    ],
)
def test_update_va_mapping_maps_a_page_the_kernel_then_reads(tmp_path: Path, flags: int) -> None:
    source = (
        uvm("rbx", WINDOW, PAGE_PHYS | P | W, flags)
        + f"""
        movabs {WINDOW + 0x10:#x}, %rax
        mov %rax, %rbp
        mov {L1_VIRT:#x}, %r12
    """
    )
    result = kernel_run(tmp_path, source)
    assert kept(result, "rbx", "rbp") == [0, MARK]
    assert result.registers["r12"] & ~ACCESSED_DIRTY == PAGE_PHYS | P | W


def test_update_va_mapping_remaps_and_invlpg_drops_the_old_translation(tmp_path: Path) -> None:
    # the window's page first maps the L1 table itself, then the marked page: a
    # stale TLB entry would read the table's first entry again
    source = (
        uvm("rbx", WINDOW, L1_PHYS | P, abi.UVMF_INVLPG)
        + f"movabs {WINDOW + 0x10:#x}, %rax\nmov %rax, %r12\n"
        + uvm("rbp", WINDOW, PAGE_PHYS | P, abi.UVMF_INVLPG)
        + f"movabs {WINDOW + 0x10:#x}, %rax\nmov %rax, %r13\n"
    )
    result = kernel_run(tmp_path, source)
    assert kept(result, "rbx", "rbp", "r12", "r13") == [0, 0, 0, MARK]


def test_update_va_mapping_keeps_every_register_but_rax(tmp_path: Path) -> None:
    markers = {"rcx": 0x6666, "r8": 0x5555, "r10": 0x4444, "r11": 0x7777}
    loads = "".join(f"movabs ${v:#x}, %{r}\n" for r, v in markers.items())
    result = kernel_run(tmp_path, loads + uvm("rbx", WINDOW, PAGE_PHYS | P, abi.UVMF_TLB_FLUSH))
    args = {"rdi": WINDOW, "rsi": PAGE_PHYS | P, "rdx": abi.UVMF_TLB_FLUSH}
    assert kept(result, "rbx") == [0]
    for name, value in (markers | args).items():
        assert result.registers[name] == value, name


NOT_PRESENT = 0xDEAD0000  # a not-present entry: Xen takes any value


@pytest.mark.parametrize(
    ("va", "val", "expected"),
    [
        (WINDOW, NOT_PRESENT, 0),
        (WINDOW + 0x1000, PAGE_PHYS | P | (1 << 63), 0),  # NX is the guest's
        (0x0000800000000000, PAGE_PHYS | P, -abi.EINVAL),  # not canonical
        (DIRECT_MAP, PAGE_PHYS | P, -abi.EINVAL),  # Xen's own range
        (abi.HYPERVISOR_VIRT_START, PAGE_PHYS | P, -abi.EINVAL),
        (LARGE, PAGE_PHYS | P, -abi.EINVAL),  # no L1: a 2 MiB page
        (UNMAPPED, PAGE_PHYS | P, -abi.EINVAL),  # no L1: the PDE not present
        (FAR_TABLE, PAGE_PHYS | P, -abi.EINVAL),  # the L1 past the direct map
        (WINDOW, (1 << 32) | P, -abi.EINVAL),  # a frame past the direct map
        (WINDOW, ADDR_MASK | P, -abi.EINVAL),
        (WINDOW, PAGE_PHYS | P | (1 << abi.PTE_GNTTAB_BIT), -abi.EINVAL),
    ],
)
def test_update_va_mapping_refuses_what_xen_refuses(
    tmp_path: Path, va: int, val: int, expected: int
) -> None:
    source = uvm("rbx", va, val) + f"mov {L1_VIRT + index(va, 1) * 8:#x}, %r12\n"
    result = kernel_run(tmp_path, source)
    written = val if expected == 0 and va >> 21 == WINDOW >> 21 else 0
    assert kept(result, "rbx", "r12") == [expected, signed(written)]


LOW = 0x8000000000  # PML4 slot 1, in the lower half


def self_map(va: int) -> str:
    """Assembly: the second data page mapped at va (a 512 GiB-aligned address whose
    PML4 slot is free), the page serving as PDPT, directory and table at once: its
    entry 0 names itself (r9 = the direct map, as set_up leaves it)."""
    return f"""
        mov %cr3, %rax
        and $-0x1000, %rax
        movq ${PAGE_PHYS | P | W:#x}, {8 * index(va, 4):#x}(%r9,%rax)
        movq ${PAGE_PHYS | P | W:#x}, {PAGE_VIRT:#x}
    """


def test_update_va_mapping_reads_a_vcpu_bitmap_or_answers_efault(tmp_path: Path) -> None:
    # a bitmap in the kernel's data (vCPU 0's bit) is fine, in either half; an
    # unmapped one and a non-canonical one are -EFAULT, with the entry written and
    # flushed, as Xen
    bitmap = 0x100
    source = (
        self_map(LOW)
        + f"movq $0x1, {PAGE_VIRT + bitmap:#x}\n"
        + uvm("rbx", WINDOW, PAGE_PHYS | P, abi.UVMF_INVLPG | PAGE_VIRT + bitmap)
        + uvm("rbp", WINDOW + 0x1000, PAGE_PHYS | P, abi.UVMF_TLB_FLUSH | 0x7000000000)
        + uvm("r12", WINDOW, PAGE_PHYS | P, abi.UVMF_INVLPG | 0x0000800000000000)
        + uvm("r13", WINDOW, PAGE_PHYS | P, abi.UVMF_INVLPG | (UNMAPPED - 0x10))
        + f"movabs {WINDOW + 0x1010:#x}, %rax\nmov %rax, %r14\n"
        + uvm("r15", WINDOW, PAGE_PHYS | P, abi.UVMF_INVLPG | LOW + bitmap)
    )
    result = kernel_run(tmp_path, source)
    efault = -abi.EFAULT
    registers = ("rbx", "rbp", "r12", "r13", "r14", "r15")
    assert kept(result, *registers) == [0, efault, efault, efault, MARK, 0]


# Deterministic counts (Unicorn): a mapped page with its invlpg; a refused va.
UVM_MAPPED = 149
UVM_REFUSED = 31


def test_update_va_mapping_instruction_counts(tmp_path: Path) -> None:
    base = kernel_run(tmp_path / "base", "")
    mapped = kernel_run(tmp_path / "mapped", uvm("rbx", WINDOW, PAGE_PHYS | P))
    refused = kernel_run(tmp_path / "refused", uvm("rbx", 0x0000800000000000, 0))
    per_call = len(("movabs",) * 3 + ("call", "mov"))  # the kernel's own part
    assert mapped.kernel_instructions - base.kernel_instructions - per_call == UVM_MAPPED
    assert refused.kernel_instructions - base.kernel_instructions - per_call == UVM_REFUSED
