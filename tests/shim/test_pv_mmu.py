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


def set_up(window: bool = True) -> str:
    """The window's L1 table (unless window is False), a large page after it, a
    far table after that; MARK in the second data page."""
    large = abi.LARGE_PAGE_SIZE | P | W | abi.PTE_LARGE
    install = f"movq ${L1_PHYS | P | W:#x}, (%r10)\n" if window else ""
    return (
        page_directory_entry(WINDOW)
        + install
        + f"""
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


def kernel_run(
    tmp_path: Path, source: str, window: bool = True, output: bytes = b""
) -> api.EmulateResult:
    result = run(patched(tmp_path, assemble(set_up(window) + source), pv_abi=True))
    assert result.debug_output == output  # the shim answered every call
    return result


def signed(value: int) -> int:
    return value - (1 << 64) if value >> 63 else value


def kept(result: api.EmulateResult, *names: str) -> list[int]:
    return [signed(result.registers[name]) for name in names]


MMU_NUMBERS = ("UVMF_NONE", "UVMF_TLB_FLUSH", "UVMF_INVLPG", "UVMF_FLUSHTYPE_MASK")
MMU_NUMBERS += ("UVMF_LOCAL", "UVMF_ALL", "DOMID_SELF")
MMU_NUMBERS += ("MMU_NORMAL_PT_UPDATE", "MMU_MACHPHYS_UPDATE", "MMU_PT_UPDATE_PRESERVE_AD")
MMU_NUMBERS += ("MMU_PT_UPDATE_NO_TRANSLATE",)
RECORDS = {
    "mmu_update": abi.MMU_UPDATE,
    "mmuext_op": abi.MMUEXT_OP,
    "multicall_entry": abi.MULTICALL_ENTRY,
}
ARRAYS = {"arg0": "args[0]", "arg5": "args[5]"}  # multicall_entry's args[6]


def layout_expressions() -> dict[str, str]:
    """sizeof and offsetof of each record's members, as C expressions (mmuext_op's
    arg1 and arg2 are unions: their offsets)."""
    found = {f"sizeof_{name}": f"sizeof(struct {name})" for name in RECORDS}
    for name, record in RECORDS.items():
        for leaf in record.layout():
            member = leaf.path
            if name == "multicall_entry" and member.startswith("arg"):
                if member not in ARRAYS:
                    continue  # args[1..4] lie between args[0] and args[5]
                member = ARRAYS[member]
            found[f"{name}.{leaf.path}"] = f"offsetof(struct {name}, {member})"
    return found


def test_mmu_numbers_and_layouts_match_xen_headers(tmp_path: Path) -> None:
    commands = {f"MMUEXT_{command.name}": command.value for command in abi.Mmuext}
    expressions = {name: name for name in MMU_NUMBERS + tuple(commands)}
    expressions |= {"EOPNOTSUPP": "XEN_EOPNOTSUPP"} | layout_expressions()
    got = xen_values(tmp_path, expressions, ("xen/xen.h", "xen/errno.h"))
    expected = {name: getattr(abi, name) for name in MMU_NUMBERS} | commands
    expected["EOPNOTSUPP"] = abi.EOPNOTSUPP
    for name, record in RECORDS.items():
        expected[f"sizeof_{name}"] = record.size
        for leaf in record.layout():
            if f"{name}.{leaf.path}" in expressions:
                expected[f"{name}.{leaf.path}"] = record.offset_of(leaf.path)
    assert got == expected


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


@pytest.mark.parametrize("flush", [abi.UVMF_NONE, abi.UVMF_FLUSHTYPE_MASK])
def test_update_va_mapping_reads_no_bitmap_without_a_flush(tmp_path: Path, flush: int) -> None:
    source = uvm("rbx", WINDOW, PAGE_PHYS | P, flush | 0x7000000000)
    result = kernel_run(tmp_path, source + f"movabs {WINDOW + 0x10:#x}, %rax\nmov %rax, %rbp\n")
    assert kept(result, "rbx", "rbp") == [0, MARK]


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
UVM_MAPPED = 157
UVM_REFUSED = 31


def test_update_va_mapping_instruction_counts(tmp_path: Path) -> None:
    base = kernel_run(tmp_path / "base", "")
    mapped = kernel_run(tmp_path / "mapped", uvm("rbx", WINDOW, PAGE_PHYS | P))
    refused = kernel_run(tmp_path / "refused", uvm("rbx", 0x0000800000000000, 0))
    per_call = len(("movabs",) * 3 + ("call", "mov"))  # the kernel's own part
    assert mapped.kernel_instructions - base.kernel_instructions - per_call == UVM_MAPPED
    assert refused.kernel_instructions - base.kernel_instructions - per_call == UVM_REFUSED


# --- mmu_update ----------------------------------------------------------------------

MMU = abi.Hypercall.MMU_UPDATE
REQS = PAGE_VIRT + 0x800  # request arrays the kernels write, in the second data page
DONE = PAGE_VIRT + 0xF00  # where they ask for the count done
UNTOUCHED = 0x77  # DONE's value before a call


def store(address: int, *words: int) -> str:
    """Assembly: the 64-bit words at address, in order (rax clobbered)."""
    return "".join(
        f"movabs ${word & (1 << 64) - 1:#x}, %rax\nmov %rax, {address + 8 * n:#x}\n"
        for n, word in enumerate(words)
    )


def batch(
    number: int,
    keep: str,
    reqs: int,
    count: int,
    foreigndom: int = abi.DOMID_SELF,
    done: int = DONE,
) -> str:
    return f"movq ${UNTOUCHED:#x}, {DONE:#x}\n" + call(
        number, keep, rdi=reqs, rsi=count, rdx=done, r10=foreigndom
    )


def done_in(keep: str) -> str:
    return f"mov {DONE:#x}, %eax\nmov %rax, %{keep}\n"


PDE_PHYS = "r12"  # the window's page-directory entry, physical (mmu_update's ptr)


def pde_phys() -> str:
    """Assembly: r12 = the physical address of the window's directory entry (r9 and
    r10 as page_directory_entry leaves them)."""
    return "mov %r10, %r12\nsub %r9, %r12\n"


def test_mmu_update_installs_a_table_and_entries_through_machine_addresses(
    tmp_path: Path,
) -> None:
    # the window's L1 table goes in through mmu_update (ptr = the PDE's address),
    # then its entry 0; entry 1 keeps its accessed and dirty bits (PRESERVE_AD)
    source = (
        pde_phys()
        + f"movq ${ACCESSED_DIRTY:#x}, {L1_VIRT + 8:#x}\n"
        + f"mov %r12, {REQS:#x}\n"
        + store(REQS + 8, L1_PHYS | P | W, L1_PHYS, PAGE_PHYS | P | W)
        + store(REQS + 0x20, (L1_PHYS + 8) | abi.MMU_PT_UPDATE_PRESERVE_AD, PAGE_PHYS | P)
        + batch(MMU, "rbx", REQS, 3)
        + done_in("rbp")
        + f"movabs {WINDOW + 0x10:#x}, %rax\nmov %rax, %r13\n"
        + f"movabs {WINDOW + 0x1010:#x}, %rax\nmov %rax, %r14\n"
        + f"mov {L1_VIRT + 8:#x}, %r15\n"
    )
    result = kernel_run(tmp_path, source, window=False)
    assert kept(result, "rbx", "rbp", "r13", "r14") == [0, 3, MARK, MARK]
    assert result.registers["r15"] == PAGE_PHYS | P | ACCESSED_DIRTY


def test_mmu_update_machphys_update_writes_the_m2p_entry_through_its_mapping(
    tmp_path: Path,
) -> None:
    # the kernel maps its second data page at MACH2PHYS_VIRT_START (self_map), so
    # the M2P entry of frame 5 is that page's word 5; frame 0x200's is not mapped
    source = (
        self_map(abi.MACH2PHYS_VIRT_START)
        + "mov %cr3, %rax\nmov %rax, %cr3\n"
        + store(REQS, (5 << abi.PAGE_SHIFT) | abi.MMU_MACHPHYS_UPDATE, 0x1234)
        + store(REQS + 0x10, (0x200 << abi.PAGE_SHIFT) | abi.MMU_MACHPHYS_UPDATE, 0x5678)
        + batch(MMU, "rbx", REQS, 2)
        + done_in("rbp")
        + f"mov {PAGE_VIRT + 5 * 8:#x}, %r12\n"
    )
    result = kernel_run(tmp_path, source)
    assert kept(result, "rbx", "rbp", "r12") == [-abi.EINVAL, 1, 0x1234]


FAR = 1 << 32  # past the direct map: a frame the shim refuses as not the guest's
HOLE = 0x80000000  # in the direct map, past the emulated RAM: no M2P entry


@pytest.mark.parametrize(
    ("ptr", "val", "expected"),
    [
        (FAR, PAGE_PHYS | P, -abi.EINVAL),  # the entry's frame past the direct map
        ((1 << 63) | L1_PHYS, PAGE_PHYS | P, -abi.EINVAL),
        (L1_PHYS, FAR | P, -abi.EINVAL),  # the new entry's frame past it
        (L1_PHYS, PAGE_PHYS | P | (1 << abi.PTE_GNTTAB_BIT), -abi.EINVAL),
        (L1_PHYS | 4, PAGE_PHYS | P, -abi.ENOSYS),  # no such command
        (L1_PHYS | 7, PAGE_PHYS | P, -abi.ENOSYS),
        (FAR | abi.MMU_MACHPHYS_UPDATE, 1, -abi.EINVAL),
        (HOLE, PAGE_PHYS | P, -abi.EINVAL),  # no RAM there: not the guest's frame
        (HOLE | abi.MMU_MACHPHYS_UPDATE, 1, -abi.EINVAL),
        (L1_PHYS | abi.MMU_PT_UPDATE_NO_TRANSLATE, FAR | 0xFFE, 0),  # not present: any
    ],
)
def test_mmu_update_refuses_what_xen_refuses(
    tmp_path: Path, ptr: int, val: int, expected: int
) -> None:
    source = (
        store(REQS, ptr, val)
        + batch(MMU, "rbx", REQS, 1)
        + done_in("rbp")
        + f"mov {L1_VIRT:#x}, %r12\n"
    )
    result = kernel_run(tmp_path, source)
    written = val if expected == 0 else 0
    assert kept(result, "rbx", "rbp", "r12") == [expected, int(expected == 0), written]


@pytest.mark.parametrize(
    ("reqs", "count", "foreigndom", "expected", "done"),
    [
        (0x0000800000000000, 1, abi.DOMID_SELF, -abi.EFAULT, UNTOUCHED),  # __addr_ok
        (abi.HYPERVISOR_VIRT_START, 1, abi.DOMID_SELF, -abi.EFAULT, UNTOUCHED),
        (0x7000000000, 1, abi.DOMID_SELF, -abi.EFAULT, 0),  # canonical, unmapped
        (REQS, 0, abi.DOMID_SELF, 0, 0),
        (REQS, 1, 0, -abi.ESRCH, UNTOUCHED),  # domain 0, named as a foreign one
        (REQS, 1, abi.DOMID_SELF | 1 << 16, -abi.ESRCH, UNTOUCHED),  # foreign tables
        (REQS, 0x401, abi.DOMID_SELF, -abi.E2BIG, UNTOUCHED),
        (REQS, 0xFFFFFFFF, abi.DOMID_SELF, -abi.E2BIG, UNTOUCHED),
    ],
)
def test_mmu_update_checks_its_array_count_and_domain_first(
    tmp_path: Path, reqs: int, count: int, foreigndom: int, expected: int, done: int
) -> None:
    source = store(REQS, L1_PHYS, PAGE_PHYS | P) + batch(MMU, "rbx", reqs, count, foreigndom)
    result = kernel_run(tmp_path, source + done_in("rbp") + f"mov {L1_VIRT:#x}, %r12\n")
    assert kept(result, "rbx", "rbp", "r12") == [expected, done, 0]


def test_mmu_update_reads_requests_in_the_lower_half(tmp_path: Path) -> None:
    requests = LOW + 0x800
    source = (
        self_map(LOW)
        + store(PAGE_VIRT + 0x800, L1_PHYS, PAGE_PHYS | P)
        + batch(MMU, "rbx", requests, 1)
        + done_in("rbp")
        + f"movabs {WINDOW + 0x10:#x}, %rax\nmov %rax, %r12\n"
    )
    result = kernel_run(tmp_path, source)
    assert kept(result, "rbx", "rbp", "r12") == [0, 1, MARK]


def test_mmu_update_stops_at_the_first_request_it_cannot_read(tmp_path: Path) -> None:
    # requests at the end of the window's one mapped page: the second is past it
    source = (
        uvm("rbx", WINDOW, PAGE_PHYS | P | W)
        + store(WINDOW + 0xFF0, L1_PHYS + 0x10, L1_PHYS | P)
        + batch(MMU, "rbp", WINDOW + 0xFF0, 0x400)
        + done_in("r12")
        + f"mov {L1_VIRT + 0x10:#x}, %r13\n"
    )
    result = kernel_run(tmp_path, source)
    assert kept(result, "rbx", "rbp", "r12", "r13") == [0, -abi.EFAULT, 1, L1_PHYS | P]


# --- mmuext_op -----------------------------------------------------------------------

MMUEXT = abi.Hypercall.MMUEXT_OP
OPS = REQS
X = abi.Mmuext


def ops(*entries: tuple[int, int, int]) -> str:
    """Assembly: struct mmuext_op entries (cmd, arg1, arg2) at OPS."""
    size = abi.MMUEXT_OP.size
    return "".join(
        f"movl ${cmd & 0xFFFFFFFF:#x}, {OPS + n * size + abi.MMUEXT_OP.offset_of('cmd'):#x}\n"
        + store(OPS + n * size + abi.MMUEXT_OP.offset_of("arg1"), arg1, arg2)
        for n, (cmd, arg1, arg2) in enumerate(entries)
    )


def mmuext(keep: str, *entries: tuple[int, int, int]) -> str:
    return ops(*entries) + batch(MMUEXT, keep, OPS, len(entries))


PAGE_FRAME = PAGE_PHYS >> abi.PAGE_SHIFT
FAR_FRAME = FAR >> abi.PAGE_SHIFT


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        ((X.PIN_L1_TABLE, PAGE_FRAME, 0), 0),
        ((X.PIN_L4_TABLE, PAGE_FRAME, 0), 0),
        ((X.UNPIN_TABLE, PAGE_FRAME, 0), 0),
        ((X.PIN_L2_TABLE, FAR_FRAME, 0), -abi.EINVAL),
        ((X.UNPIN_TABLE, FAR_FRAME, 0), -abi.EINVAL),
        ((X.NEW_BASEPTR, FAR_FRAME, 0), -abi.EINVAL),
        ((X.NEW_USER_BASEPTR, PAGE_FRAME, 0), 0),
        ((X.NEW_USER_BASEPTR, 0, 0), 0),
        ((X.NEW_USER_BASEPTR, FAR_FRAME, 0), -abi.EINVAL),
        ((X.TLB_FLUSH_LOCAL, 0, 0), 0),
        ((X.TLB_FLUSH_ALL, 0, 0), 0),
        ((X.INVLPG_LOCAL, WINDOW, 0), 0),
        ((X.INVLPG_ALL, 0x0000800000000000, 0), 0),  # not canonical: ignored, as Xen
        ((X.TLB_FLUSH_MULTI, 0, PAGE_VIRT), 0),
        ((X.INVLPG_MULTI, WINDOW, PAGE_VIRT), 0),
        ((X.TLB_FLUSH_MULTI, 0, 0x7000000000), -abi.EINVAL),  # the bitmap unreadable
        ((X.SET_LDT, 0, 0), 0),
        ((X.SET_LDT, 0x10000, abi.LDT_MAX_ENTRIES + 1), -abi.EINVAL),
        ((X.SET_LDT, 0x10008, 1), -abi.EINVAL),  # not page aligned
        ((X.SET_LDT, 0x0000800000000000, 1), -abi.EINVAL),
        ((X.SET_LDT, 0x10000, 1), -abi.ENOSYS),  # a real LDT: the shim builds none
        ((X.FLUSH_CACHE, 0, 0), -abi.EACCES),
        ((X.FLUSH_CACHE_GLOBAL, 0, 0), -abi.EACCES),
        ((X.MARK_SUPER, PAGE_FRAME, 0), -abi.EOPNOTSUPP),
        ((X.UNMARK_SUPER, PAGE_FRAME, 0), -abi.EOPNOTSUPP),
        ((14, 0, 0), -abi.ENOSYS),
        ((21, 0, 0), -abi.ENOSYS),
        ((0xFFFFFFFF, 0, 0), -abi.ENOSYS),
        ((X.CLEAR_PAGE, FAR_FRAME, 0), -abi.EINVAL),
        ((X.CLEAR_PAGE, HOLE >> abi.PAGE_SHIFT, 0), -abi.EINVAL),
        ((X.PIN_L1_TABLE, HOLE >> abi.PAGE_SHIFT, 0), -abi.EINVAL),
        ((X.NEW_BASEPTR, HOLE >> abi.PAGE_SHIFT, 0), -abi.EINVAL),
        ((X.COPY_PAGE, PAGE_FRAME, FAR_FRAME), -abi.EINVAL),
    ],
)
def test_mmuext_op_answers_each_command_as_xen(
    tmp_path: Path, op: tuple[int, int, int], expected: int
) -> None:
    result = kernel_run(tmp_path, mmuext("rbx", op) + done_in("rbp"))
    assert kept(result, "rbx", "rbp") == [expected, int(expected == 0)]


def test_mmuext_op_stops_at_the_first_failure_and_counts_what_it_did(tmp_path: Path) -> None:
    source = mmuext(
        "rbx", (X.TLB_FLUSH_LOCAL, 0, 0), (X.PIN_L1_TABLE, FAR_FRAME, 0), (X.TLB_FLUSH_ALL, 0, 0)
    )
    result = kernel_run(tmp_path, source + done_in("rbp"))
    assert kept(result, "rbx", "rbp") == [-abi.EINVAL, 1]


def test_mmuext_op_clears_and_copies_pages(tmp_path: Path) -> None:
    # the window's page 0 is the marked page; COPY_PAGE copies it into the L1's
    # neighbour... the L1 table itself (its entry 2 becomes MARK, a not-present
    # entry), then CLEAR_PAGE clears the marked page
    source = (
        mmuext("rbx", (X.COPY_PAGE, L1_PHYS >> abi.PAGE_SHIFT, PAGE_FRAME))
        + f"mov {L1_VIRT + 0x10:#x}, %rbp\n"
        + mmuext("r12", (X.CLEAR_PAGE, PAGE_FRAME, 0))
        + f"mov {PAGE_VIRT + 0x10:#x}, %r13\n"
    )
    result = kernel_run(tmp_path, source)
    assert kept(result, "rbx", "rbp", "r12", "r13") == [0, MARK, 0, 0]


def test_mmuext_op_invlpg_drops_a_translation_the_kernel_changed(tmp_path: Path) -> None:
    # the kernel rewrites the window's entry itself (as a PV kernel may with
    # writable page tables), then asks for INVLPG_LOCAL
    source = (
        f"movq ${L1_PHYS | P:#x}, {L1_VIRT:#x}\n"
        + f"movabs {WINDOW + 0x10:#x}, %rax\nmov %rax, %r12\n"
        + f"movq ${PAGE_PHYS | P:#x}, {L1_VIRT:#x}\n"
        + mmuext("rbx", (X.INVLPG_LOCAL, WINDOW, 0))
        + f"movabs {WINDOW + 0x10:#x}, %rax\nmov %rax, %r13\n"
    )
    result = kernel_run(tmp_path, source)
    assert kept(result, "rbx", "r12", "r13") == [0, 0, MARK]


def test_new_baseptr_copies_xen_slots_and_loads_cr3(tmp_path: Path) -> None:
    # the new PML4 (the second data page) is a copy of the current one with Xen's
    # slots 256-271 cleared; NEW_BASEPTR brings them back (the direct map at 262)
    first, end = index(abi.HYPERVISOR_VIRT_START, 4), index(abi.HYPERVISOR_VIRT_END, 4)
    source = (
        f"""
        mov %cr3, %rsi
        and $-0x1000, %rsi
        add %r9, %rsi
        mov ${PAGE_VIRT:#x}, %rdi
        mov ${abi.ENTRIES_PER_TABLE:#x}, %ecx
        rep movsq
        mov ${PAGE_VIRT + 8 * first:#x}, %rdi
        xor %eax, %eax
        mov ${end - first:#x}, %ecx
        rep stosq
        mov {PAGE_VIRT + 8 * index(DIRECT_MAP, 4):#x}, %r14
        mov {PAGE_VIRT + 0xFF8:#x}, %r15
    """
        + mmuext("rbx", (X.NEW_BASEPTR, PAGE_FRAME, 0))
        + f"""
        mov %cr3, %rbp
        mov {PAGE_VIRT + 8 * index(DIRECT_MAP, 4):#x}, %r12
        movabs ${DIRECT_MAP + PAGE_PHYS + 0xFF8:#x}, %rax
        mov (%rax), %r13
    """
    )
    result = kernel_run(tmp_path, source)
    # CR3 is the new table, whose slot 262 (empty before) now holds the direct
    # map, through which the kernel reads the table's last slot (its own mapping)
    assert kept(result, "rbx", "rbp", "r14") == [0, PAGE_PHYS, 0]
    assert result.registers["r12"] & abi.PTE_ADDR_MASK
    assert result.registers["r13"] == result.registers["r15"] != 0


def test_mmuext_op_checks_its_array_and_domain(tmp_path: Path) -> None:
    source = (
        batch(MMUEXT, "rbx", 0x0000800000000000, 1)
        + batch(MMUEXT, "rbp", 0x7000000000, 1)
        + done_in("r12")
        + batch(MMUEXT, "r13", OPS, 1, foreigndom=0)
        + batch(MMUEXT, "r14", OPS, 0x401)
        + done_in("r15")
    )
    result = kernel_run(tmp_path, source)
    expected = [-abi.EFAULT, -abi.EFAULT, 0, -abi.ESRCH, -abi.E2BIG, UNTOUCHED]
    assert kept(result, "rbx", "rbp", "r12", "r13", "r14", "r15") == expected


# --- multicall -----------------------------------------------------------------------

MULTICALL = abi.Hypercall.MULTICALL
CALLS = PAGE_VIRT + 0x400
ENTRY = abi.MULTICALL_ENTRY
GREETING = b"hi!\n"


def entries(*calls: tuple[int, ...], at: int = CALLS) -> str:
    """Assembly: struct multicall_entry (op, args...) at at, results 0x99."""
    return "".join(
        store(at + n * ENTRY.size, op, 0x99, *args) for n, (op, *args) in enumerate(calls)
    )


def result_of(n: int, keep: str, at: int = CALLS) -> str:
    return f"mov {at + n * ENTRY.size + ENTRY.offset_of('result'):#x}, %{keep}\n"


def test_multicall_runs_pv_calls_through_the_shim_and_the_rest_through_xen(
    tmp_path: Path,
) -> None:
    text = PAGE_VIRT + 0x300
    source = (
        store(text, int.from_bytes(GREETING, "little"))
        + entries(
            (UVM, WINDOW, PAGE_PHYS | P, abi.UVMF_INVLPG),
            (abi.Hypercall.CONSOLE_IO, abi.CONSOLEIO_WRITE, len(GREETING), text),
            (0x80, 0),  # past the page's slots
            (MULTICALL, CALLS, 1),  # a multicall inside: Xen refuses the reentry
            (MMUEXT, OPS, 1, 0, abi.DOMID_SELF),
        )
        + ops((X.TLB_FLUSH_LOCAL, 0, 0))
        + call(MULTICALL, "rbx", rdi=CALLS, rsi=5)
        + result_of(0, "rbp")
        + result_of(1, "r12")
        + result_of(2, "r13")
        + result_of(3, "r14")
        + result_of(4, "r15")
        + f"movabs {WINDOW + 0x10:#x}, %rax\nmov %rax, %rcx\n"
    )
    result = kernel_run(tmp_path, source, output=GREETING)  # console_io: Xen's stub
    assert kept(result, "rbx", "rbp", "r12", "r13", "r14", "r15", "rcx") == [
        0,
        0,
        0,
        -abi.ENOSYS,
        -abi.EINVAL,
        0,
        MARK,
    ]


def test_multicall_refuses_what_it_cannot_read_or_write(tmp_path: Path) -> None:
    # entries in the window's page mapped read-only: Xen could not store a result
    readonly = (
        uvm("rbx", WINDOW, PAGE_PHYS | P)
        + call(MULTICALL, "rbp", rdi=WINDOW + 0x400, rsi=1)
        + call(MULTICALL, "r12", rdi=0x0000800000000000, rsi=1)
        + call(MULTICALL, "r13", rdi=0x7000000000, rsi=1)
        + call(MULTICALL, "r14", rdi=CALLS, rsi=0x101)
        + call(MULTICALL, "rcx", rdi=CALLS, rsi=(1 << 64) // ENTRY.size)
        + call(MULTICALL, "r15", rdi=CALLS, rsi=0)
    )
    result = kernel_run(tmp_path, readonly)
    efault = -abi.EFAULT
    assert kept(result, "rbx", "rbp", "r12", "r13", "r14", "r15", "rcx") == [
        0,
        efault,
        efault,
        efault,
        -abi.E2BIG,
        0,
        efault,  # more entries than the address space holds: Xen's array_access_ok
    ]


# --- set_timer_op: Xen's own ---------------------------------------------------------


def test_set_timer_op_keeps_xen_stub(tmp_path: Path) -> None:
    """Xen serves set_timer_op to HVM/PVH guests as to PV ones (the hvm64 column of
    xen/include/hypercall-defs.c): the slot is not taken over, the call reaches Xen."""
    timer = abi.Hypercall.SET_TIMER_OP
    source = call(timer, "rbx", rdi=0x123456789) + call(timer, "rbp", rdi=0)
    result = kernel_run(tmp_path, source)
    assert kept(result, "rbx", "rbp") == [0, 0]
    went = [line.split(",")[0] for line in result.hypercalls if line.startswith("SET_TIMER_OP")]
    assert went == ["SET_TIMER_OP(0x123456789", "SET_TIMER_OP(0x0"]


# Deterministic counts (Unicorn), the kernel's own instructions taken out: one
# mmu_update request, one mmuext_op TLB flush, a multicall of one update_va_mapping.
# Every guest pointer lies in the window (the second data page seen through the
# kernel's own L1 table), so the walks do not depend on how the shim maps the kernel.
MMU_ONE = 359
MMUEXT_ONE = 367
MULTICALL_ONE = 376


def test_batched_calls_instruction_counts(tmp_path: Path) -> None:
    def seen(virt: int) -> int:  # the window's view of the second data page
        return virt - PAGE_VIRT + WINDOW

    setup = f"movq ${PAGE_PHYS | P | W:#x}, {L1_VIRT:#x}\n"
    setup += store(REQS, L1_PHYS + 8, PAGE_PHYS | P) + ops((X.TLB_FLUSH_LOCAL, 0, 0))
    setup += entries((UVM, WINDOW + 0x1000, PAGE_PHYS | P, abi.UVMF_INVLPG))
    base = kernel_run(tmp_path / "base", setup).kernel_instructions
    kernel_part = len(("movq", "movabs", "movabs", "movabs", "movabs", "call", "mov"))
    done = seen(DONE)
    counts = [
        kernel_run(tmp_path / name, setup + code).kernel_instructions - base - own
        for name, code, own in (
            ("mmu", batch(MMU, "rbx", seen(REQS), 1, done=done), kernel_part),
            ("mmuext", batch(MMUEXT, "rbx", seen(OPS), 1, done=done), kernel_part),
            ("multicall", call(MULTICALL, "rbx", rdi=seen(CALLS), rsi=1), kernel_part - 3),
        )
    ]
    assert counts == [MMU_ONE, MMUEXT_ONE, MULTICALL_ONE]
