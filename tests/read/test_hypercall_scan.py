"""The hypercall scan: which hypercalls a kernel calls through its hypercall page.

Images come from tests/imagegen.py (whose HYPERCALL_PAGE is the text's second page);
call instructions are written into their text by hand, so each expectation below
is the encoding the test itself wrote, not something read back from shimgen.
"""

from __future__ import annotations

from pathlib import Path

import imagegen
from shimgen.structs import xen_abi as abi
from xenprobe import xen_values

from shimgen.read.hypercalls import scan_hypercalls
from shimgen.read.image import image_from_bytes

TEXT_VIRT = imagegen.PV64_VIRT_BASE + imagegen.PHYS_BASE
PAGE_VIRT = TEXT_VIRT + 0x1000  # what imagegen's HYPERCALL_PAGE note says
STUB = 32  # xen.h: each hypercall's stub in the page


def rel32(opcode: int, site: int, target: int) -> bytes:
    return bytes([opcode]) + (target - (site + 5)).to_bytes(4, "little", signed=True)


SET_TRAP_TABLE_CALL = {0x100: rel32(0xE8, TEXT_VIRT + 0x100, PAGE_VIRT + 0 * STUB)}
# a PV-only call the shim's PV ABI layer does not answer (Xen's profiler)
XENOPROF_CALL = {
    0x100: rel32(0xE8, TEXT_VIRT + 0x100, PAGE_VIRT + abi.Hypercall.XENOPROF_OP * STUB)
}


def image_with(code: dict[int, bytes], spec: imagegen.Spec = imagegen.PV64) -> bytes:
    """The imagegen image with code placed at these offsets into its text."""
    data = bytearray(imagegen.write_elf(spec))
    for offset, encoded in code.items():
        at = imagegen.TEXT_OFFSET + offset
        data[at : at + len(encoded)] = encoded
    return bytes(data)


def test_calls_and_jumps_into_stubs_are_named_with_their_sites() -> None:
    code = {
        0x100: rel32(0xE8, TEXT_VIRT + 0x100, PAGE_VIRT + 0 * STUB),  # set_trap_table
        0x110: rel32(0xE8, TEXT_VIRT + 0x110, PAGE_VIRT + 23 * STUB),  # iret
        0x120: rel32(0xE8, TEXT_VIRT + 0x120, PAGE_VIRT + 23 * STUB),  # iret again
        0x130: rel32(0xE9, TEXT_VIRT + 0x130, PAGE_VIRT + 29 * STUB),  # tail jump: sched_op
        0x140: rel32(0xE8, TEXT_VIRT + 0x140, PAGE_VIRT + 26 * STUB),  # mmuext_op
    }
    scan = scan_hypercalls(image_from_bytes(image_with(code)))
    assert scan.page == PAGE_VIRT
    got = {use.name: (use.under_pvh, use.sites) for use in scan.uses}
    assert got == {
        "set_trap_table": ("pv-only", [TEXT_VIRT + 0x100]),
        "iret": ("pv-only", [TEXT_VIRT + 0x110, TEXT_VIRT + 0x120]),
        "sched_op": ("xen", [TEXT_VIRT + 0x130]),
        "mmuext_op": ("restricted", [TEXT_VIRT + 0x140]),
    }
    assert [use.name for use in scan.pv_only] == ["set_trap_table", "iret", "mmuext_op"]


def test_targets_off_a_stub_boundary_or_outside_the_page_are_not_hypercalls() -> None:
    code = {
        0x100: rel32(0xE8, TEXT_VIRT + 0x100, PAGE_VIRT + 0x10),  # inside a stub
        0x110: rel32(0xE8, TEXT_VIRT + 0x110, PAGE_VIRT + 0x1000),  # just past the page
        0x120: rel32(0xE8, TEXT_VIRT + 0x120, PAGE_VIRT - STUB),  # just before it
    }
    assert scan_hypercalls(image_from_bytes(image_with(code))).uses == []


def test_calls_inside_the_skipped_range_are_left_out() -> None:
    scan = scan_hypercalls(
        image_from_bytes(image_with(SET_TRAP_TABLE_CALL)),
        skip=(TEXT_VIRT + 0x100, TEXT_VIRT + 0x105),
    )
    assert scan.uses == []


def test_an_image_without_a_hypercall_page_has_no_scan() -> None:
    spec = imagegen.Spec(note_segments=imagegen._in_pt_note(imagegen.xen_number(18, 0x100010, 4)))
    scan = scan_hypercalls(image_from_bytes(image_with({}, spec)))
    assert scan.page is None and scan.uses == []


def test_legacy_hypercall_page_is_a_page_number_from_virt_base() -> None:
    spec = imagegen.case("xen_guest_only").spec
    code = {0x100: rel32(0xE8, TEXT_VIRT + 0x100, PAGE_VIRT + 1 * STUB)}  # mmu_update
    scan = scan_hypercalls(image_from_bytes(image_with(code, spec)))
    assert scan.page == PAGE_VIRT
    assert [(use.name, use.under_pvh) for use in scan.uses] == [("mmu_update", "pv-only")]


def test_hypercall_numbers_match_xen_h(tmp_path: Path) -> None:
    got = xen_values(
        tmp_path, {call.name: f"__HYPERVISOR_{call.name.lower()}" for call in abi.Hypercall}
    )
    assert got == {call.name: call.value for call in abi.Hypercall}


def test_pv_only_and_restricted_sets_are_disjoint() -> None:
    assert not abi.PV_ONLY_HYPERCALLS & set(abi.PVH_RESTRICTED_HYPERCALLS)


# --- what inspect and check make of it -----------------------------------------------


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_patched_pv_kernel_with_pv_only_calls_is_told_it_fails_as_pvh(tmp_path: Path) -> None:
    import shimgen

    source = write(tmp_path, "pv.elf", image_with(XENOPROF_CALL))
    patched = tmp_path / "pv.universal"
    shimgen.patch(source, patched)
    verdicts = shimgen.check(patched, "pvh")
    assert verdicts.pvh is not None and verdicts.pvh.ok
    assert "xenoprof_op" in verdicts.pvh_hypercalls
    assert "kernel fails as PVH" in verdicts.pvh_hypercalls
    assert verdicts.ok  # a warning...
    assert not shimgen.check(patched, "pvh", strict=True).ok  # ...and a problem with --strict
    # patching adds no call of its own to what the kernel makes
    assert (
        shimgen.inspect(patched).hypercalls.to_json()
        == shimgen.inspect(source).hypercalls.to_json()
    )


def test_check_cli_prints_the_hypercall_warning_and_strict_fails(tmp_path: Path, capsys) -> None:
    from shimgen.cli import main

    source = write(tmp_path, "pv.elf", image_with(SET_TRAP_TABLE_CALL))
    patched = tmp_path / "pv.universal"
    assert main(["patch", str(source), "-o", str(patched)]) == 0
    capsys.readouterr()
    assert main(["check", str(patched), "--mode", "pvh"]) == 0
    out = capsys.readouterr().out
    assert "pvh: warning: the kernel calls hypercalls Xen refuses under PVH: set_trap_table" in out
    assert main(["check", str(patched), "--mode", "pvh", "--strict"]) == 1


def test_a_kernel_without_pv_only_calls_gets_no_hypercall_warning(tmp_path: Path) -> None:
    import shimgen

    code = {0x100: rel32(0xE8, TEXT_VIRT + 0x100, PAGE_VIRT + 18 * STUB)}  # console_io
    source = write(tmp_path, "pv.elf", image_with(code))
    patched = tmp_path / "pv.universal"
    shimgen.patch(source, patched)
    verdicts = shimgen.check(patched, "pvh")
    assert verdicts.pvh_hypercalls is None
    assert [use.name for use in verdicts.hypercalls.uses] == ["console_io"]


def test_inspect_lists_the_calls_in_text_and_json(tmp_path: Path, capsys) -> None:
    import json

    from shimgen.cli import main

    source = write(tmp_path, "pv.elf", image_with(SET_TRAP_TABLE_CALL))
    assert main(["inspect", str(source), "--json"]) == 0
    calls = json.loads(capsys.readouterr().out)["hypercalls"]["calls"]
    assert calls == [
        {
            "number": 0,
            "name": "set_trap_table",
            "under_pvh": "pv-only",
            "note": "",
            "shim_answers": False,  # not patched
            "sites": [TEXT_VIRT + 0x100],
        }
    ]
    assert main(["inspect", str(source)]) == 0
    out = capsys.readouterr().out
    assert "Hypercalls the kernel calls" in out and "set_trap_table" in out
