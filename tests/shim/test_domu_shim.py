"""The start-info shim's PVH path as a domU gets it (issue 10, item 4), in Unicorn.

Every real boot before the xl loaders was a dom0 boot, so what only a domU meets was
never exercised: memory maps of guests from 16 MiB to several GiB with the hole below
4 GiB, the special pages libxl reserves near 4 GiB (where the xenstore and console
rings live), a kernel that brings no HYPERCALL_PAGE note.
"""

from __future__ import annotations

import imagegen
import pytest
from memmaps import ACPI, MIB, RAM, RESERVED, ram_pages, xl_pvh_memmap
from shimgen.structs import xen_abi as abi

from shimgen.read.image import read_image
from shimgen.shim import pagetables as pt
from shimgen.verify.emulate import FAKE_PARAMS, Machine, StartState, emulate
from shimgen.write.patch import patch_file

GIB = 1 << 30


@pytest.fixture
def patched(universal_pv) -> object:
    return universal_pv


def _pvh(image, **kwargs):
    result = emulate(image, StartState(mode="pvh", **kwargs))
    assert result.reached_kernel, result.outcome
    return result


# --- nr_pages: RAM pages, not the highest RAM address ---------------------------------


@pytest.mark.parametrize("memory_mib", [16, 128, 4096, 4608, 8192])
@pytest.mark.parametrize("version", [1, 0], ids=["v1", "v0"])
def test_nr_pages_counts_the_ram_of_an_xl_memory_map(patched, memory_mib, version) -> None:
    """A 4608 MiB PVH domU got nr_pages 1196032 (the end of its highest RAM range)
    where it has 1179648 pages: the hole below 4 GiB was counted as RAM. Version 0
    asks Xen for the same map (XENMEM_memory_map)."""
    memmap = xl_pvh_memmap(memory_mib)
    result = _pvh(patched, memmap=memmap, hvm_version=version)
    assert result.start_info["nr_pages"] == memory_mib * MIB // abi.PAGE_SIZE
    assert result.start_info["nr_pages"] == ram_pages(memmap)


def test_nr_pages_of_maxmem_above_memory_is_the_reservation(patched) -> None:
    """xl `memory = 64, maxmem = 256` (populate-on-demand): xl's PVH map lists 256 MiB
    of RAM, but only about 64 MiB is backed; a PV kernel takes nr_pages as the pages
    it may use, so the shim caps it at XENMEM_current_reservation."""
    memmap = xl_pvh_memmap(256)
    backed = 64 * MIB // abi.PAGE_SIZE
    result = _pvh(patched, memmap=memmap, reservation=backed)
    assert result.start_info["nr_pages"] == backed
    assert any(line.startswith("MEMORY_OP(0x3,") for line in result.hypercalls)


def test_nr_pages_keeps_the_map_when_xen_gives_no_reservation(patched) -> None:
    """A failed XENMEM_current_reservation (a negative error) caps nothing."""
    memmap = xl_pvh_memmap(256)
    result = _pvh(patched, memmap=memmap, reservation=-abi.ENOSYS)
    assert result.start_info["nr_pages"] == ram_pages(memmap)


def test_nr_pages_without_xen_is_the_map(patched) -> None:
    memmap = xl_pvh_memmap(256)
    result = _pvh(patched, memmap=memmap, xen=False, reservation=1)
    assert result.start_info["nr_pages"] == ram_pages(memmap)


@pytest.mark.parametrize(
    "memmap",
    [
        # a PC's map: RAM below the EBDA is not a whole number of pages
        ((0, 0x9FC00, RAM), (0x9FC00, 0x60400, RESERVED), (0x100000, 127 * MIB, RAM)),
        # holes, reserved and ACPI ranges between RAM ranges, RAM not in address order
        (
            (4 * GIB, 2 * GIB, RAM),
            (0, 0x9F000, RAM),
            (0xE0000, 0x20000, RESERVED),
            (0x100000, 0x3FF00000, RAM),
            (0x40000000, 0x1000, ACPI),
            (0xFEC00000, 0x1400000, RESERVED),
        ),
        # ranges that hold no whole page, or none at all, or end at 2^64
        ((0x1800, 0x1000, RAM), (0x5000, 0, RAM), (0x10000, 0x2000, RAM)),
        ((0x1000, 0x1FFF, RAM), ((1 << 64) - 0x3000, 0x3000, RAM)),
        # only reserved memory
        ((0, 16 * MIB, RESERVED),),
    ],
    ids=["pc", "holes", "partial-pages", "ends-at-2^64", "no-ram"],
)
def test_nr_pages_is_the_whole_pages_of_ram_entries(patched, memmap) -> None:
    result = _pvh(patched, memmap=memmap)
    assert result.start_info["nr_pages"] == ram_pages(memmap)


def test_default_emulated_map_counts_its_ram(patched) -> None:
    result = _pvh(patched)
    assert result.start_info["nr_pages"] == ram_pages(Machine.pc_memory_map())


# --- the special pages near 4 GiB --------------------------------------------------------


def test_store_and_console_pages_are_reachable_at_their_gfn(patched) -> None:
    """libxl puts the xenstore and console rings at gfns 0xfeffc and 0xfefff: the
    kernel finds them at those frames' addresses, through the shim's tables."""
    result = _pvh(patched, memmap=xl_pvh_memmap(16))
    info = result.start_info
    assert info["store_mfn"] == FAKE_PARAMS[abi.HvmParam.STORE_PFN] == 0xFEFFC
    assert info["console"]["domU"]["mfn"] == FAKE_PARAMS[abi.HvmParam.CONSOLE_PFN] == 0xFEFFF
    assert info["store_evtchn"] == FAKE_PARAMS[abi.HvmParam.STORE_EVTCHN]
    assert info["console"]["domU"]["evtchn"] == FAKE_PARAMS[abi.HvmParam.CONSOLE_EVTCHN]
    read = _physical_reader(patched)
    for gfn in (info["store_mfn"], info["console"]["domU"]["mfn"]):
        address = gfn << abi.PAGE_SHIFT
        assert pt.translate(read, result.registers["cr3"], address) == address


def _physical_reader(image):
    """Reads the image's bytes at their physical addresses: the shim's page tables
    are built at patch time and stored in its segment."""

    def read(paddr: int, size: int) -> bytes:
        for segment in image.loadable_segments:
            if segment.paddr <= paddr and paddr + size <= segment.paddr + segment.filesz:
                at = segment.offset + paddr - segment.paddr
                return bytes(image.data[at : at + size])
        raise AssertionError(f"{paddr:#x} is not in the image's file bytes")

    return read


# --- a kernel without a HYPERCALL_PAGE note -------------------------------------------------


@pytest.fixture(scope="module")
def without_hypercall_note(tmp_path_factory) -> object:
    notes = tuple(
        note for note in imagegen.pv64_notes() if note.type != imagegen.XEN_HYPERCALL_PAGE
    )
    spec = imagegen.Spec(note_segments=((imagegen.NoteSection(".note.Xen", notes),),))
    folder = tmp_path_factory.mktemp("no-hcall")
    source = folder / "pv64-no-hypercall-page"
    source.write_bytes(imagegen.write_elf(spec))
    out = folder / "universal"
    plan = patch_file(source, out).plan
    assert plan.hypercall_page_own
    return read_image(out), plan


def test_no_hypercall_page_note_pvh_uses_the_shims_own_page(without_hypercall_note) -> None:
    image, plan = without_hypercall_note
    result = _pvh(image, memmap=xl_pvh_memmap(16))
    own_page = plan.shim_paddr + (plan.hypercall_page_virt - plan.shim_vaddr)
    assert "(hypercall page)" in result.hypercalls[0]
    assert result.hypercalls[0].endswith(f"{own_page:#x} (hypercall page)")
    info = result.start_info
    assert info["store_mfn"] == 0xFEFFC and info["shared_info"] != 0
    assert info["nr_pages"] == 16 * MIB // abi.PAGE_SIZE


def test_no_hypercall_page_note_pv_gets_one_from_xen(without_hypercall_note) -> None:
    """The shim adds a HYPERCALL_PAGE note for its own page, so Xen fills one and the
    PV error path (console_io, then a crash shutdown) has stubs to call."""
    image, _plan = without_hypercall_note
    assert emulate(image, StartState(mode="pv")).reached_kernel
    bad = emulate(image, StartState(mode="pv", bad_magic=True))
    assert bad.outcome == "halted" and b"bad boot magic" in bad.debug_output
    assert any("SCHED_OP" in line for line in bad.hypercalls)
