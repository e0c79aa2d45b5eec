"""Memory as a PV kernel sees it under PVH (docs/pv-abi.md, pieces 2 and 3): the
start_info fields a PV kernel reads (mfn_list, nr_pages, pt_base, nr_pt_frames, the
rings' frames), the read-only M2P at MACH2PHYS_VIRT_START, and the tables the kernel
runs on. A test kernel reads through its own tables what Xen would give a PV guest,
and the test looks at the machine the emulated boot leaves. The expected values come
from the test: the emulated Xen's ring frames, the memory map it passes, Xen's
public constants.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imagegen
import pytest
from memmaps import ACPI_TABLES, RAM, RESERVED, SPECIAL_PAGES, xl_pvh_memmap
from pvkernel import DATA_VIRT, UNHANDLED_TRAP, assemble, hypercall, write_kernel
from shimgen.structs import HVM_MODLIST_ENTRY, start_info
from shimgen.structs import xen_abi as abi

from shimgen import api
from shimgen.read.image import read_image
from shimgen.shim import pagetables as pt
from shimgen.verify import emulate as emu

PAGE = abi.PAGE_SIZE
SI = start_info(64)
VIRT_BASE = imagegen.PV64_VIRT_BASE  # the test kernel's pfn 0 (vaddr - paddr)
CONSOLE_GFN = emu.FAKE_PARAMS[abi.HvmParam.CONSOLE_PFN]
STORE_GFN = emu.FAKE_PARAMS[abi.HvmParam.STORE_PFN]
CONSOLE_BYTES = b"console ring"  # what the emulated toolstack left in each ring
STORE_BYTES = b"xenstore ring"
RAM_GFN = 0x200  # a RAM frame below the kernel (pfn == gfn there)
RINGS = {CONSOLE_GFN * PAGE: CONSOLE_BYTES, STORE_GFN * PAGE: STORE_BYTES}


def field(name: str) -> str:
    return f"{SI.offset_of(name):#x}"


# A PV kernel's first memory reads, as Mini-OS and XTF make them: rsi = start_info.
# mfn_to_virt(mfn) = VIRT_BASE + (M2P[mfn] << 12); mfn_list[pfn] the other way.
READER = f"""
    mov %rsi, %r15
    mov {field("mfn_list")}(%r15), %r8
    movabs ${abi.MACH2PHYS_VIRT_START:#x}, %rcx
    movabs ${VIRT_BASE:#x}, %rdi
    mov {field("console.domU.mfn")}(%r15), %rax
    mov (%rcx,%rax,8), %rbx
    mov (%r8,%rbx,8), %rbp
    mov %rbx, %rdx
    shl $0xc, %rdx
    mov (%rdi,%rdx), %r12
    mov {field("store_mfn")}(%r15), %rax
    mov (%rcx,%rax,8), %r13
    mov (%r8,%r13,8), %r14
    mov %r13, %rdx
    shl $0xc, %rdx
    mov (%rdi,%rdx), %r11
    mov ${RAM_GFN:#x}, %eax
    mov (%rcx,%rax,8), %r9
    mov (%r8,%rax,8), %r10
"""


@dataclass
class Boot:
    machine: emu.Machine
    result: emu.Result
    plan: Any

    @property
    def info(self) -> dict[str, Any]:
        assert self.result.start_info is not None, self.result.outcome
        return self.result.start_info

    def reg(self, name: str) -> int:
        return self.result.registers[name]

    def translate(self, vaddr: int) -> int | None:
        return pt.translate(self.machine.read, self.reg("cr3"), vaddr)

    @property
    def shim_end(self) -> int:
        """Physical end of the shim segment."""
        return self.plan.shim_paddr + self.plan.memsz


def boot(tmp_path: Path, source: str, **state: Any) -> Boot:
    kernel = write_kernel(tmp_path / "kernel.elf", assemble(source))
    out = tmp_path / "kernel.universal"
    plan = api.patch(kernel, out, pv_abi=True).plan
    memory = RINGS | state.pop("memory", {})
    start = emu.StartState(mode="pvh", run_kernel=True, memory=memory, **state)
    machine, result = emu.run_machine(read_image(out), start)
    return Boot(machine, result, plan)


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Boot:
    return boot(tmp_path_factory.mktemp("reader"), READER)


def test_the_kernel_finds_its_rings_through_the_m2p_as_under_pv(reader: Boot) -> None:
    assert reader.result.outcome == "kernel-halted", reader.result.outcome
    assert (reader.info["console"]["domU"]["mfn"], reader.info["store_mfn"]) == (
        CONSOLE_GFN,
        STORE_GFN,
    )
    console_pfn, store_pfn = reader.reg("rbx"), reader.reg("r13")
    # each ring's pfn lies in the kernel's initial region (the shim segment), below
    # the first frame the kernel takes as free, and names the ring's frame back
    first_free = reader.shim_end // PAGE
    assert reader.plan.shim_paddr // PAGE <= console_pfn < first_free
    assert reader.plan.shim_paddr // PAGE <= store_pfn < first_free
    assert console_pfn != store_pfn
    assert (reader.reg("rbp"), reader.reg("r14")) == (CONSOLE_GFN, STORE_GFN)
    # and the kernel reads the rings' bytes at VIRT_BASE + (pfn << 12)
    assert reader.reg("r12").to_bytes(8, "little") == CONSOLE_BYTES[:8]
    assert reader.reg("r11").to_bytes(8, "little") == STORE_BYTES[:8]


def test_ram_frames_are_their_own_pfns_both_ways(reader: Boot) -> None:
    assert (reader.reg("r9"), reader.reg("r10")) == (RAM_GFN, RAM_GFN)
    m2p, mfn_list = (
        reader.translate(abi.MACH2PHYS_VIRT_START),
        reader.translate(reader.info["mfn_list"]),
    )
    assert m2p is not None and mfn_list is not None
    for pfn in range(0, reader.info["nr_pages"], 997):
        for table in (m2p, mfn_list):
            assert int.from_bytes(reader.machine.read(table + 8 * pfn, 8), "little") == pfn


def test_mfn_list_lies_in_the_kernels_region_at_its_own_pfns(reader: Boot) -> None:
    """As Xen maps it: the kernel turns mfn_list's address back into pfns and finds
    its frames in it (Mini-OS's arch_init_p2m: virt_to_mfn(mfn_list + pfn))."""
    mfn_list = reader.info["mfn_list"]
    assert mfn_list - VIRT_BASE >= reader.info["nr_pages"] * PAGE
    pages = -(-reader.info["nr_pages"] * 8 // PAGE)
    for page in (0, pages // 2, pages - 1):
        vaddr = mfn_list + page * PAGE
        pfn = (vaddr - VIRT_BASE) // PAGE
        assert pfn >= reader.info["nr_pages"]  # not a frame the kernel may take
        frame = reader.translate(vaddr)
        assert frame is not None and _entry(reader, mfn_list, pfn) == frame // PAGE


def test_the_m2p_is_read_only_to_the_kernel(tmp_path: Path) -> None:
    writer = f"""
        movabs ${abi.MACH2PHYS_VIRT_START + 8 * RAM_GFN:#x}, %rcx
        movq $0x0, (%rcx)
    """
    result = boot(tmp_path, writer).result
    # the write faults (movabs is 10 bytes); with no trap table the shim names the
    # #PF and stops the kernel, as Xen crashes a PV guest it cannot bounce a fault to
    write = imagegen.PV64_VIRT_BASE + imagegen.PHYS_BASE + 10
    assert result.debug_output.decode() == UNHANDLED_TRAP.format(abi.EXC_PF, write)
    assert result.registers["cr0"] & abi.CR0_WP


def _walk(boot: Boot, vaddr: int) -> list[int]:
    """The entries from the PML4 down mapping vaddr (stops at a missing one)."""
    table, entries = boot.reg("cr3") & abi.PTE_ADDR_MASK, []
    for level in (4, 3, 2, 1):
        at = table + pt.table_index(vaddr, level) * 8
        entry = int.from_bytes(boot.machine.read(at, 8), "little")
        entries.append(entry)
        if not entry & abi.PTE_PRESENT:
            break
        table = entry & abi.PTE_ADDR_MASK
    return entries


def test_the_kernel_runs_on_pt_base_mapped_page_by_page(reader: Boot) -> None:
    pt_base = reader.info["pt_base"]
    assert reader.translate(pt_base) == reader.reg("cr3")
    image = read_image(reader.plan.image.path)
    pages = [
        vaddr
        for segment in image.loadable_segments
        for vaddr in range(segment.vaddr & -PAGE, segment.vaddr + segment.memsz, PAGE)
    ]
    end = reader.plan.shim_vaddr + reader.plan.memsz
    # the shim segment, then the padding xen.h promises a PV kernel after its region
    shim = range(reader.plan.shim_vaddr, end + abi.PV_BOOTSTRAP_PADDING, PAGE)
    for vaddr in [*pages, *shim]:
        entries = _walk(reader, vaddr)
        assert len(entries) == 4, hex(vaddr)
        assert all(e & abi.PTE_PRESENT for e in entries), hex(vaddr)
        assert not any(e & abi.PTE_LARGE for e in entries[1:3]), hex(vaddr)
    # nothing past the region in the kernel's half: no identity map to mis-walk
    assert reader.translate(end) == reader.shim_end
    for vaddr in (0, abi.PAGE_SIZE * 0x200, end + abi.PV_BOOTSTRAP_PADDING):
        assert reader.translate(vaddr) is None, hex(vaddr)
    # the shim's window on physical memory is there (PML4 slot 262)
    assert reader.translate(abi.SHIM_DIRECTMAP_VIRT + RAM_GFN * PAGE) == RAM_GFN * PAGE


def test_the_first_free_pfn_lies_past_everything_of_the_shim(reader: Boot) -> None:
    info = reader.info
    pt_base = reader.translate(info["pt_base"])
    assert pt_base is not None
    first_free = pt_base // PAGE + info["nr_pt_frames"]
    assert first_free == -(-reader.shim_end // PAGE)
    lives_on = [reader.translate(reader.reg("rsi")), info["shared_info"]]
    lives_on += [reader.translate(reader.plan.shim_vaddr + reader.plan.offsets["stack_top"] - 8)]
    for paddr in lives_on:
        assert paddr is not None and paddr // PAGE < first_free


def _m2p_frames(boot: Boot) -> list[int]:
    """Physical frames of the M2P's tables and pages, and of mfn_list."""
    cr3 = boot.reg("cr3")
    found = []
    for level in (3, 2, 1):
        entry_at = pt.entry_address(boot.machine.read, cr3, abi.MACH2PHYS_VIRT_START, level)
        assert entry_at is not None
        found.append(entry_at // PAGE)
    for gfn in (0, RAM_GFN, CONSOLE_GFN, STORE_GFN):
        paddr = boot.translate(abi.MACH2PHYS_VIRT_START + 8 * gfn)
        assert paddr is not None
        found.append(paddr // PAGE)
    mfn_list = boot.translate(boot.info["mfn_list"])
    assert mfn_list is not None
    return [*found, mfn_list // PAGE]


def test_nr_pages_leaves_out_what_the_shim_built(reader: Boot) -> None:
    nr_pages = reader.info["nr_pages"]
    ram_end = emu.RAM_SIZE // PAGE
    for frame in _m2p_frames(reader):
        assert nr_pages <= frame < ram_end
    # and the kernel keeps nearly all of its RAM: the layout of a 128 MiB guest
    # is its M2P and mfn_list (8 bytes per frame each) and a few pages
    owned = emu.Machine.pc_memory_map()[-1]
    assert nr_pages > (owned[0] + owned[1]) // PAGE - 2 * ram_end * 8 // PAGE - 0x100


def test_an_xl_domu_map_gives_pfns_from_zero(tmp_path: Path) -> None:
    memmap = xl_pvh_memmap(64)
    result = boot(tmp_path, READER, memmap=memmap)
    assert result.result.outcome == "kernel-halted"
    assert (result.reg("rbp"), result.reg("r14"), result.reg("r9")) == (
        CONSOLE_GFN,
        STORE_GFN,
        RAM_GFN,
    )
    assert result.info["nr_pages"] < (64 << 20) // PAGE
    assert all(frame < (64 << 20) // PAGE for frame in _m2p_frames(result))


def test_a_module_at_the_top_of_ram_stays_where_it_is(tmp_path: Path) -> None:
    """QEMU puts a PVH module near the top of RAM: the layout goes below it."""
    module_at = emu.RAM_SIZE - 0x10 * PAGE
    modlist_at = emu.RAM_SIZE - 0x20 * PAGE
    entry = modlist_entry(module_at, 0x800)
    memory = {module_at: b"M" * 0x800, modlist_at: entry}
    result = boot(tmp_path, READER, memory=memory, hvm_fields={"modlist_paddr": modlist_at})
    assert result.result.outcome == "kernel-halted"
    assert result.info["mod_start"] == abi.SHIM_DIRECTMAP_VIRT + module_at
    assert all(frame < module_at // PAGE for frame in _m2p_frames(result))
    assert result.machine.read(module_at, 0x800) == b"M" * 0x800


def modlist_entry(paddr: int, size: int) -> bytes:

    return HVM_MODLIST_ENTRY.build(
        {"paddr": paddr, "size": size, "cmdline_paddr": 0, "reserved": 0}
    )


def test_without_xen_the_kernel_keeps_the_shims_tables(tmp_path: Path) -> None:
    result = boot(tmp_path, "nop", xen=False)
    assert result.result.outcome == "kernel-halted"
    assert result.info["mfn_list"] == 0
    assert result.translate(result.info["pt_base"]) == result.plan.tables.base


# --- hostile memory maps: one line on the debug port, then halt; never a fault ---------

NO_RAM = b"shimgen: pv-abi: no RAM entry of the memory map holds the kernel, "
NO_ROOM = b"shimgen: pv-abi: too little RAM after the kernel for its mfn_list and M2P, "


def test_no_ram_entry_holding_the_kernel_halts_with_its_line(tmp_path: Path) -> None:
    memmap = ((0, 0x9FC00, RAM), (0x100000, 0x100000, RESERVED))
    result = boot(tmp_path, "nop", memmap=memmap).result
    assert result.outcome == "halted" and result.start_info is None
    assert result.debug_output.startswith(NO_RAM) and result.debug_output.endswith(b"halted\n")


def test_ram_too_small_for_the_layout_halts_with_its_line(tmp_path: Path) -> None:
    plan_end = boot(tmp_path / "probe", "nop").shim_end
    memmap = ((0, plan_end + 4 * PAGE, RAM),)
    result = boot(tmp_path, "nop", memmap=memmap).result
    assert result.outcome == "halted" and result.start_info is None
    assert result.debug_output.startswith(NO_ROOM) and result.debug_output.endswith(b"halted\n")


@pytest.mark.parametrize("size", [(1 << 64) - 1, 1 << 63, (1 << 40) + 5])
def test_an_absurd_ram_size_is_bounded_by_what_the_domain_owns(tmp_path: Path, size: int) -> None:
    owned = emu.RAM_SIZE // PAGE
    result = boot(tmp_path, READER, memmap=((0, size, RAM),), reservation=owned)
    assert result.result.outcome == "kernel-halted", result.result.outcome
    assert result.info["nr_pages"] < owned
    assert all(frame < owned for frame in _m2p_frames(result))


MIB = 1 << 20


def _entry(boot: Boot, table: int, index: int) -> int:
    paddr = boot.translate(table + 8 * index)
    assert paddr is not None, hex(table + 8 * index)
    return int.from_bytes(boot.machine.read(paddr, 8), "little")


def test_ram_after_a_hole_follows_as_more_pfns(tmp_path: Path) -> None:
    """The pfn space: [0, the end of the RAM holding the kernel) as it is, then the
    RAM after the hole (what a PVH dom0 gets: its kernel below 640 KiB, its memory
    from 1 MiB on; here the test kernel at 1 MiB, more RAM after a hole)."""
    low_end, high = 33 * MIB, (48 * MIB, 64 * MIB)
    memmap = (
        (0, 0x9FC00, RAM),
        (0x100000, low_end - 0x100000, RAM),
        (low_end, high[0] - low_end, RESERVED),
        (high[0], high[1], RAM),
    )
    result = boot(tmp_path, READER, memmap=memmap)
    assert result.result.outcome == "kernel-halted", result.result.outcome
    mfn_list, m2p = result.info["mfn_list"], abi.MACH2PHYS_VIRT_START
    first = low_end // PAGE  # the first pfn after the hole
    for n in (0, 1, 0x1000, 0x3000):
        gfn = high[0] // PAGE + n
        assert _entry(result, mfn_list, first + n) == gfn
        assert _entry(result, m2p, gfn) == first + n
    for gfn in (low_end // PAGE, high[0] // PAGE - 1):  # the hole: no pfn
        assert _entry(result, m2p, gfn) == abi.INVALID_M2P_ENTRY
    assert _entry(result, mfn_list, 0x100) == _entry(result, m2p, 0x100) == 0x100
    # what the shim built ends the last RAM; nr_pages stops before it
    frames = _m2p_frames(result)
    assert all(high[0] // PAGE <= frame < sum(high) // PAGE for frame in frames)
    taken = sum(high) // PAGE - min(frames)
    assert result.info["nr_pages"] == first + high[1] // PAGE - taken


# --- RAM above 4 GiB (what libxl gives a guest bigger than the RAM below its hole) ----

LOW_RAM = 128 * MIB
HIGH_RAM = 16 * MIB
HIGH_GFN = (1 << 32) // PAGE  # the first frame above the hole
# libxl's PVH map shape, scaled down: RAM from 0, the special pages and the ACPI
# tables in the hole, the rest of the RAM from 4 GiB on
HIGH_MAP = ((0, LOW_RAM, RAM), SPECIAL_PAGES, ACPI_TABLES, (1 << 32, HIGH_RAM, RAM))
MAPPED_GFN = HIGH_GFN + 0x123  # a high frame the kernel maps and writes
TABLE_GFN = HIGH_GFN + 0xFFF  # a high frame the kernel writes an entry into
MARK = 0x5EED_0F_4161_4EAD
TABLE_ENTRY = RAM_GFN * PAGE | abi.PTE_PRESENT
# The kernel maps a high frame with update_va_mapping at the first address past its
# region (pt_base + nr_pt_frames pages, the padding Xen promises) and writes through
# it, then writes an entry into another high frame with mmu_update.
HIGH_WRITER = f"""
    mov %rsi, %r15
    mov {field("pt_base")}(%r15), %r14
    mov {field("nr_pt_frames")}(%r15), %rax
    shl $0xc, %rax
    add %rax, %r14
    mov %r14, %rdi
    movabs ${MAPPED_GFN * PAGE | abi.PTE_PRESENT | abi.PTE_WRITE:#x}, %rsi
    mov ${abi.UVMF_INVLPG}, %edx
    {hypercall(abi.Hypercall.UPDATE_VA_MAPPING)}
    mov %rax, %rbx
    movabs ${MARK:#x}, %rax
    mov %rax, (%r14)
    movabs ${DATA_VIRT:#x}, %rdi
    movabs ${TABLE_GFN * PAGE + 8 | abi.MMU_NORMAL_PT_UPDATE:#x}, %rax
    mov %rax, (%rdi)
    movabs ${TABLE_ENTRY:#x}, %rax
    mov %rax, 0x8(%rdi)
    mov $0x1, %esi
    xor %edx, %edx
    mov ${abi.DOMID_SELF:#x}, %r10d
    {hypercall(abi.Hypercall.MMU_UPDATE)}
    mov %rax, %rbp
"""


@pytest.fixture(scope="module")
def high(tmp_path_factory: pytest.TempPathFactory) -> Boot:
    tmp = tmp_path_factory.mktemp("high")
    return boot(tmp, HIGH_WRITER, memmap=HIGH_MAP, ram_size=LOW_RAM, high_ram_size=HIGH_RAM)


def _table(boot: Boot, table: int, count: int) -> list[int]:
    """count 8-byte entries of a table at a kernel virtual address, page by page."""
    words: list[int] = []
    for first in range(0, count, PAGE // 8):
        paddr = boot.translate(table + 8 * first)
        assert paddr is not None, hex(table + 8 * first)
        n = min(PAGE // 8, count - first)
        raw = boot.machine.read(paddr, 8 * n)
        words += [int.from_bytes(raw[i : i + 8], "little") for i in range(0, len(raw), 8)]
    return words


def test_high_ram_pfns_follow_the_low_ram(high: Boot) -> None:
    assert high.result.outcome == "kernel-halted", high.result.outcome
    nr_pages = high.info["nr_pages"]
    mfn_list = _table(high, high.info["mfn_list"], nr_pages + 1)
    # the low RAM's frames first, as they are (but the shim's ring pages, which name
    # the rings' frames), up to what the shim took at its top
    first_high = mfn_list.index(HIGH_GFN)
    rings = {CONSOLE_GFN, STORE_GFN}
    assert [gfn for gfn in mfn_list[:first_high] if gfn not in rings] == [
        pfn for pfn in range(first_high) if mfn_list[pfn] not in rings
    ]
    assert first_high < LOW_RAM // PAGE
    # then every frame above 4 GiB, in order, all of them the kernel's
    high_frames = HIGH_RAM // PAGE
    assert mfn_list[first_high : first_high + high_frames] == [
        HIGH_GFN + n for n in range(high_frames)
    ]
    assert nr_pages == first_high + high_frames > LOW_RAM // PAGE
    # the pfns past nr_pages are what the shim took: the top of the RAM below 4 GiB
    assert mfn_list[nr_pages] == first_high


def test_high_ram_m2p_and_mfn_list_agree_both_ways(high: Boot) -> None:
    nr_pages = high.info["nr_pages"]
    mfn_list = _table(high, high.info["mfn_list"], nr_pages)
    m2p = _table(high, abi.MACH2PHYS_VIRT_START, HIGH_GFN + HIGH_RAM // PAGE)
    for pfn, gfn in enumerate(mfn_list):
        assert m2p[gfn] == pfn, (hex(pfn), hex(gfn))
    pfns = set(range(nr_pages))
    for gfn in (*range(HIGH_GFN, HIGH_GFN + 0x10), TABLE_GFN, 0, RAM_GFN):
        assert m2p[gfn] in pfns and mfn_list[m2p[gfn]] == gfn


def test_the_hole_and_the_special_pages_have_no_pfn(high: Boot) -> None:
    m2p_at = abi.MACH2PHYS_VIRT_START
    special = SPECIAL_PAGES[0] // PAGE
    rings = {CONSOLE_GFN, STORE_GFN}  # they appear as the shim's ring pages
    hole = [LOW_RAM // PAGE, ACPI_TABLES[0] // PAGE, HIGH_GFN - 1]
    for gfn in hole + [special + n for n in range(8) if special + n not in rings]:
        assert _entry(high, m2p_at, gfn) == abi.INVALID_M2P_ENTRY, hex(gfn)


def test_a_kernel_maps_and_writes_high_frames(high: Boot) -> None:
    assert (high.reg("rbx"), high.reg("rbp")) == (0, 0)  # update_va_mapping, mmu_update
    assert high.translate(high.reg("r14")) == MAPPED_GFN * PAGE
    assert high.machine.read(MAPPED_GFN * PAGE, 8) == MARK.to_bytes(8, "little")
    assert high.machine.read(TABLE_GFN * PAGE + 8, 8) == TABLE_ENTRY.to_bytes(8, "little")
    # the direct map reaches them: up to the whole GiB after the RAM
    directmap = abi.SHIM_DIRECTMAP_VIRT + TABLE_GFN * PAGE
    assert high.translate(directmap) == TABLE_GFN * PAGE


TOO_MUCH = b"shimgen: pv-abi: RAM past 64 GiB, more than the shim maps, "


def test_ram_past_the_direct_maps_bound_halts_with_its_line(tmp_path: Path) -> None:
    assert abi.SHIM_DIRECTMAP_LIMIT == 64 << 30  # the line names it
    memmap = ((0, LOW_RAM, RAM), (abi.SHIM_DIRECTMAP_LIMIT, HIGH_RAM, RAM))
    result = boot(tmp_path, "nop", memmap=memmap).result
    assert result.outcome == "halted" and result.start_info is None
    assert result.debug_output.startswith(TOO_MUCH) and result.debug_output.endswith(b"halted\n")


# --- a real PV kernel under real Xen --------------------------------------------------

BOOT_SECONDS = 180  # Xen in QEMU TCG takes about 2 s idle; the machine is shared
# What patched Mini-OS prints, in order, as it runs its PV start of day through the
# layer: set_trap_table and set_callbacks taken, its console's and xenstore's
# addresses read through the M2P (arch/x86/setup.c), shared_info mapped, its page
# tables extended with mmu_update from pt_base (arch/x86/mm.c), its page allocator
# fed from nr_pages, arch_init_p2m through mfn_list, its console ring attached.
MINI_OS_START_OF_DAY = ("Xen Minimal OS (pv)!", "Mapping memory range", "MM: done")
MINI_OS_START_OF_DAY += ("Initialising console ... done.",)


@pytest.mark.xen
@pytest.mark.slow
def test_mini_os_runs_its_pv_start_of_day_as_a_pvh_dom0(
    mini_os: Callable[[str], Path], tmp_path: Path
) -> None:
    """Mini-OS's PV build as a Xen PVH dom0: its kernel below 640 KiB, its RAM from
    1 MiB on, so the pfn space spans the gap. It gets through MINI_OS_START_OF_DAY with
    no call the layer leaves unanswered (as an xl PVH domU it runs to its main:
    tests/shim/test_pv_mini_os.py)."""
    out = tmp_path / "mini-os.universal"
    assert api.patch(mini_os("pv"), out).plan.pv_abi.on
    result = api.boot(out, "xen-pvh", timeout=BOOT_SECONDS)
    lines = [line.strip() for line in result.guest_lines]
    found = [
        next((n for n, line in enumerate(lines) if line.startswith(want)), None)
        for want in MINI_OS_START_OF_DAY
    ]
    assert None not in found and found == sorted(found), result.to_json()
    assert not any(line.startswith("shimgen: pv-abi: unhandled hypercall") for line in lines)
    assert not any(line.startswith("shimgen: pv-abi: no") for line in lines)
    assert not any(line.startswith("shimgen: pv-abi: too little") for line in lines)
