"""The PV ABI layer of the start-info shim (issue 11, phase 1): the hypercall slots it
takes over in the kernel's page, its handlers, and the patch options that turn it on.

The kernels are tests/imagegen.py's PV64 image (its HYPERCALL_PAGE is the text's
second page) with code the test writes at the entry: each call below is encoded
here, byte by byte, so what a test expects comes from the test, not from shimgen.
The emulated PVH boot runs the shim, then the kernel past its entry up to its hlt.
"""

from __future__ import annotations

from pathlib import Path

import imagegen
import pytest
from pvkernel import (
    KEEP_RAX,
    MARKERS,
    MOVABS,
    UNHANDLED,
    Step,
    patched,
    results,
    run,
    write_kernel,
)
from shimgen.structs import xen_abi as abi
from xenprobe import xen_values

from shimgen import api

SWAPGS = b"\x0f\x01\xf8"


SET_TRAP_TABLE = abi.Hypercall.SET_TRAP_TABLE
# A PV-only hypercall the layer does not answer (Xen's profiler): the tests' example
# of the unhandled path and of the plan's reason to put the layer in.
XENOPROF_OP = abi.Hypercall.XENOPROF_OP
PHYSDEV_OP = abi.Hypercall.PHYSDEV_OP
VM_ASSIST = abi.Hypercall.VM_ASSIST
WRITABLE_PAGETABLES = abi.VmAssist.TYPE_WRITABLE_PAGETABLES


def test_unhandled_call_returns_enosys_and_names_itself_then_vm_assist_answers(
    tmp_path: Path,
) -> None:
    last = {"rdi": abi.VMASST_CMD_ENABLE, "rsi": WRITABLE_PAGETABLES}
    image = patched(tmp_path, [(XENOPROF_OP, {"rdi": 0}), (VM_ASSIST, last)])
    result = run(image)
    assert results(result, 2) == [-abi.ENOSYS, 0]
    assert result.debug_output.decode() == UNHANDLED.format(int(XENOPROF_OP), "xenoprof_op")
    # neither call reached the (emulated) hypervisor: the shim answered both
    assert not [line for line in result.hypercalls if line.startswith(("XENOPROF", "VM_ASSIST"))]
    # every register the kernel loaded comes back: argument registers, rcx, r11
    for name, value in (MARKERS | last).items():
        assert result.registers[name] == value, name


def test_under_pv_the_kernel_calls_xen_and_the_shim_stays_out(tmp_path: Path) -> None:
    image = patched(tmp_path, [(XENOPROF_OP, {"rdi": 0}), (VM_ASSIST, {"rdi": 0, "rsi": 2})])
    result = run(image, "pv")
    assert result.debug_output == b""
    went = [line.split("(")[0] for line in result.hypercalls]
    assert went == ["XENOPROF_OP", "VM_ASSIST"]  # Xen's own stubs (vmcall here)


# Deterministic counts (Unicorn): they change only when the shim or this kernel does.
# To the kernel's entry: 286 without the layer (tests/test_emulate.py), 27 slots
# rewritten at about 11 instructions each, four of Xen's stubs saved, a TSS, the syscall
# MSRs and EFER (25, NX's cpuid among them) and the 256 IDT gates at 21 each
# (36_pv_traps.S) on top; in the kernel: the unhandled xenoprof_op (its line, and the
# search of the name records, are most of it) and vm_assist. And before the kernel, the
# PV memory layout (tests/shim/test_pv_memory.py) of a 32 MiB guest
# (pvkernel.MEMORY_MIB): its M2P and mfn_list at 6 instructions a frame, the invalid
# entries and zeroed tables stored (Unicorn counts each store of a rep stosq; two spare
# M2P pages for the grant frames' gfns among them), the search of the map for those
# gfns, mfn_list and the 512 KiB after the kernel's region mapped page by page; pfns for
# the map's first nr_pages frames of RAM (a pass over the map first), the BIOS hole not
# counted.
PV_MEMORY_LAYOUT = 80838
PVH_TO_ENTRY_WITH_LAYER = 6201 + PV_MEMORY_LAYOUT
PVH_KERNEL = 1904
PV_KERNEL = 25  # Xen's (emulated) stubs: mov, vmcall, ret


def test_instruction_counts_are_deterministic(tmp_path: Path) -> None:
    image = patched(tmp_path, [(XENOPROF_OP, {"rdi": 0}), (VM_ASSIST, {"rdi": 0, "rsi": 2})])
    first, second = run(image), run(image)
    assert first.instructions == second.instructions
    assert first.instructions - first.kernel_instructions == PVH_TO_ENTRY_WITH_LAYER
    assert first.kernel_instructions == PVH_KERNEL
    assert run(image, "pv").kernel_instructions == PV_KERNEL


def signed(value: int) -> int:
    return value - (1 << 64) if value >> 63 else value


def answers(tmp_path: Path, calls: list[Step]) -> api.EmulateResult:
    """The PVH run of a kernel making calls the shim answers (no line printed); the
    layer forced in, as a kernel calling only these would not get it by default."""
    result = run(patched(tmp_path, calls, pv_abi=True))
    assert result.debug_output == b""
    return result


VMASST = abi.VmAssist


@pytest.mark.parametrize(
    ("cmd", "assist", "expected"),
    [
        (abi.VMASST_CMD_ENABLE, VMASST.TYPE_WRITABLE_PAGETABLES, 0),
        (abi.VMASST_CMD_DISABLE, VMASST.TYPE_WRITABLE_PAGETABLES, 0),
        (abi.VMASST_CMD_ENABLE, VMASST.TYPE_M2P_STRICT, 0),  # bit 32 of Xen's mask
        (abi.VMASST_CMD_ENABLE, VMASST.TYPE_RUNSTATE_UPDATE_FLAG, 0),
        (abi.VMASST_CMD_ENABLE, 6, -abi.EINVAL),  # not a PV64 assist
        (abi.VMASST_CMD_ENABLE, 64, -abi.EINVAL),  # past Xen's 64-bit mask
        (abi.VMASST_CMD_ENABLE, (1 << 32) + 2, 0),  # the type is an unsigned int
        (2, VMASST.TYPE_WRITABLE_PAGETABLES, -abi.ENOSYS),  # no such command
    ],
)
def test_vm_assist(tmp_path: Path, cmd: int, assist: int, expected: int) -> None:
    result = answers(tmp_path, [(VM_ASSIST, {"rdi": cmd, "rsi": assist})])
    assert results(result, 1) == [expected]


FPU_TASKSWITCH = abi.Hypercall.FPU_TASKSWITCH


def test_fpu_taskswitch_sets_and_clears_cr0_ts(tmp_path: Path) -> None:
    set_ts = answers(tmp_path / "set", [(FPU_TASKSWITCH, {"rdi": 1})])
    assert results(set_ts, 1) == [0] and set_ts.registers["cr0"] & abi.CR0_TS
    cleared = answers(
        tmp_path / "clear", [(FPU_TASKSWITCH, {"rdi": 1}), (FPU_TASKSWITCH, {"rdi": 0})]
    )
    assert results(cleared, 2) == [0, 0] and not cleared.registers["cr0"] & abi.CR0_TS


SET_SEGMENT_BASE = abi.Hypercall.SET_SEGMENT_BASE
FS, USER_GS, KERNEL_GS = 0x7F0000001000, 0x7F0000002000, 0xFFFF800000003000


def test_set_segment_base_writes_fs_and_both_gs_bases(tmp_path: Path) -> None:
    result = answers(
        tmp_path,
        [
            (SET_SEGMENT_BASE, {"rdi": abi.SEGBASE_FS, "rsi": FS}),
            (SET_SEGMENT_BASE, {"rdi": abi.SEGBASE_GS_KERNEL, "rsi": KERNEL_GS}),
            (SET_SEGMENT_BASE, {"rdi": abi.SEGBASE_GS_USER, "rsi": USER_GS}),
        ],
    )
    assert results(result, 3) == [0, 0, 0]
    assert (result.registers["fs_base"], result.registers["gs_base"]) == (FS, KERNEL_GS)
    swapped = answers(
        tmp_path / "swapgs",
        [
            (SET_SEGMENT_BASE, {"rdi": abi.SEGBASE_GS_KERNEL, "rsi": KERNEL_GS}),
            (SET_SEGMENT_BASE, {"rdi": abi.SEGBASE_GS_USER, "rsi": USER_GS}),
            SWAPGS,  # what the kernel does on its way to user mode
        ],
    )
    assert swapped.registers["gs_base"] == USER_GS


@pytest.mark.parametrize(
    ("which", "base"),
    [
        (abi.SEGBASE_FS, 0x0000800000000000),  # not canonical
        (abi.SEGBASE_GS_KERNEL, 0xFFFF000000000000),  # not canonical
        (4, 0),  # no such SEGBASE_ (GS_USER_SEL: tests/shim/test_pv_traps.py)
    ],
)
def test_set_segment_base_refuses_with_einval(tmp_path: Path, which: int, base: int) -> None:
    result = answers(tmp_path, [(SET_SEGMENT_BASE, {"rdi": which, "rsi": base})])
    assert results(result, 1) == [-abi.EINVAL]
    assert result.registers["fs_base"] == 0


def test_stack_switch_is_recorded_and_answered(tmp_path: Path) -> None:
    result = answers(
        tmp_path, [(abi.Hypercall.STACK_SWITCH, {"rdi": 0xE02B, "rsi": 0xFFFF800000010000})]
    )
    assert results(result, 1) == [0]


SET_DEBUGREG, GET_DEBUGREG = abi.Hypercall.SET_DEBUGREG, abi.Hypercall.GET_DEBUGREG
DR = abi.DebugReg


@pytest.mark.parametrize("reg", [DR.DR0, DR.DR1, DR.DR2, DR.DR3])
def test_address_debug_registers_round_trip(tmp_path: Path, reg: int) -> None:
    address = 0xFFFFFFFF80101234 + reg
    result = answers(
        tmp_path,
        [(SET_DEBUGREG, {"rdi": reg, "rsi": address}), (GET_DEBUGREG, {"rdi": reg})],
    )
    assert results(result, 2) == [0, signed(address)]


def test_status_and_control_registers_keep_their_reserved_bits(tmp_path: Path) -> None:
    result = answers(
        tmp_path,
        [
            (SET_DEBUGREG, {"rdi": DR.DR6, "rsi": 0}),
            (GET_DEBUGREG, {"rdi": DR.DR6}),
            (SET_DEBUGREG, {"rdi": DR.DR7, "rsi": 0}),
            (GET_DEBUGREG, {"rdi": DR.DR7}),
        ],
    )
    assert results(result, 4) == [0, abi.DR6_ONES, 0, abi.DR7_ONES]


@pytest.mark.parametrize(
    ("call", "registers", "expected"),
    [
        (SET_DEBUGREG, {"rdi": DR.DR0, "rsi": 0x0000800000000000}, -abi.EPERM),  # not canonical
        (SET_DEBUGREG, {"rdi": DR.DR7, "rsi": (0b10 << 16) | 1}, -abi.EPERM),  # I/O breakpoint
        (SET_DEBUGREG, {"rdi": 4, "rsi": 0}, -abi.EINVAL),
        (SET_DEBUGREG, {"rdi": 8, "rsi": 0}, -abi.EINVAL),
        (GET_DEBUGREG, {"rdi": 5}, -abi.EINVAL),
        (GET_DEBUGREG, {"rdi": 8}, -abi.EINVAL),
    ],
)
def test_debug_registers_refuse_what_xen_refuses(
    tmp_path: Path, call: int, registers: dict[str, int], expected: int
) -> None:
    result = answers(tmp_path, [(call, registers)])
    assert results(result, 1) == [expected]


HANDLED = {
    abi.Hypercall.VM_ASSIST,
    FPU_TASKSWITCH,
    SET_SEGMENT_BASE,
    abi.Hypercall.STACK_SWITCH,
    SET_DEBUGREG,
    GET_DEBUGREG,
    abi.Hypercall.UPDATE_VA_MAPPING,
    abi.Hypercall.MMU_UPDATE,
    abi.Hypercall.MMUEXT_OP,
    abi.Hypercall.MULTICALL,
    SET_TRAP_TABLE,  # these in tests/shim/test_pv_traps.py
    abi.Hypercall.SET_CALLBACKS,
    abi.Hypercall.CALLBACK_OP,
    abi.Hypercall.SET_GDT,
    abi.Hypercall.UPDATE_DESCRIPTOR,
    abi.Hypercall.IRET,
    abi.Hypercall.XEN_VERSION,  # passed on to Xen's own stubs
    abi.Hypercall.SCHED_OP,
    abi.Hypercall.GRANT_TABLE_OP,  # tests/shim/test_pv_grant.py
    PHYSDEV_OP,  # set_iopl; the rest to Xen's stub
}
IRET = abi.Hypercall.IRET
UNANSWERED = sorted((abi.PV_ONLY_HYPERCALLS | {abi.Hypercall.MMUEXT_OP}) - HANDLED - {IRET})


def test_every_other_slot_taken_over_returns_enosys_and_names_itself(tmp_path: Path) -> None:
    result = run(patched(tmp_path, [(slot, {}) for slot in UNANSWERED]))
    lines = "".join(UNHANDLED.format(int(n), abi.Hypercall(n).name.lower()) for n in UNANSWERED)
    assert result.debug_output.decode() == lines
    assert results(result, len(KEEP_RAX)) == [-abi.ENOSYS] * len(KEEP_RAX)


def test_slots_xen_serves_under_pvh_keep_xen_stubs(tmp_path: Path) -> None:
    # xen_version and grant_table_op (but setup_table) go through the shim (36_pv_traps.S,
    # 38_pv_grant.S) to the stub Xen wrote
    served = [abi.Hypercall.XEN_VERSION, abi.Hypercall.GRANT_TABLE_OP, abi.Hypercall.PHYSDEV_OP]
    result = run(patched(tmp_path, [(XENOPROF_OP, {})] + [(slot, {}) for slot in served]))
    went = [line.split("(")[0] for line in result.hypercalls if "(" in line]
    assert [name for name in went if name in {s.name for s in served}] == [s.name for s in served]


IOPL_AT = imagegen.PV64_VIRT_BASE + imagegen.PHYS_BASE + 0x2000  # pvkernel's data pages


def test_physdev_op_set_iopl_as_xen_answers_a_pv_guest(tmp_path: Path) -> None:
    """PHYSDEVOP_set_iopl (Xen refuses it to PVH): iopl 0 to 3 taken, 4 -EINVAL, an
    argument Xen may not read -EFAULT (physdev.h; Xen's do_physdev_op)."""
    movl_to_rdi = b"\xc7\x07"  # movl $imm32, (%rdi)
    store = b"".join(
        MOVABS["rdi"]
        + (IOPL_AT + 4 * n).to_bytes(8, "little")
        + movl_to_rdi
        + iopl.to_bytes(4, "little")
        for n, iopl in enumerate((3, 0, 4))
    )
    calls: list[Step] = [store]
    for pointer in (IOPL_AT, IOPL_AT + 4, IOPL_AT + 8, 1 << 44, abi.HYPERVISOR_VIRT_START):
        calls.append((PHYSDEV_OP, {"rdi": abi.PHYSDEVOP_SET_IOPL, "rsi": pointer}))
    result = run(patched(tmp_path, calls, pv_abi=True))
    assert result.debug_output == b""
    assert results(result, 5) == [0, 0, -abi.EINVAL, -abi.EFAULT, -abi.EFAULT]
    assert not [line for line in result.hypercalls if line.startswith("PHYSDEV_OP")]


# --- patch: the layer's switch, recorded --------------------------------------------

CALLS_XENOPROF: list[Step] = [(XENOPROF_OP, {"rdi": 0})]


def test_plan_says_why_the_layer_is_in_and_records_what_it_answers(tmp_path: Path) -> None:
    source = write_kernel(tmp_path / "kernel.elf", CALLS_XENOPROF)
    plan = api.patch(source, tmp_path / "out", dry_run=True).to_json()
    answered = sorted(h.name.lower() for h in HANDLED)
    assert plan["pv_abi"] == {
        "on": True,
        "reason": "the kernel calls PV-only hypercalls: xenoprof_op",
        "answers": answered,
    }
    assert plan["options"]["pv_abi"] == answered


def test_no_pv_abi_leaves_it_out_and_says_so_in_the_metadata(tmp_path: Path) -> None:
    source = write_kernel(tmp_path / "kernel.elf", CALLS_XENOPROF)
    out = tmp_path / "out"
    plan = api.patch(source, out, pv_abi=False).to_json()
    assert plan["pv_abi"]["on"] is False and plan["options"]["pv_abi"] is False
    assert api.inspect(out).shim.meta.options["pv_abi"] is False
    result = run(out)  # Xen's (emulated) stub answers, the shim prints nothing
    assert result.debug_output == b"" and results(result, 1) == [-abi.ENOSYS]
    assert any(line.startswith("XENOPROF_OP(") for line in result.hypercalls)


def test_a_kernel_without_pv_only_calls_gets_the_same_bytes_as_before(tmp_path: Path) -> None:
    """No layer, no option: the shim is the one a kernel got before the layer existed
    (the samples' goldens in tests/__snapshots__ hold them too)."""
    source = write_kernel(tmp_path / "kernel.elf", [(abi.Hypercall.XEN_VERSION, {})])
    default, without = tmp_path / "default", tmp_path / "without"
    plan = api.patch(source, default).to_json()
    api.patch(source, without, pv_abi=False)
    assert plan["pv_abi"]["on"] is False and "pv_abi" not in plan["options"]
    assert default.read_bytes() == without.read_bytes()
    assert b"pv-abi" not in default.read_bytes()


def test_pv_abi_forced_where_it_cannot_go_is_refused(tmp_path: Path, samples_build: Path) -> None:
    hvm64 = samples_build / "hvm64-hello"
    with pytest.raises(api.Refused, match="hvm-start-info's shim sets up no hypercall page"):
        api.patch(hvm64, tmp_path / "out", entry64="_start", pv_abi=True)
    no_page = tmp_path / "no-page.elf"  # imagegen's PV64 notes without HYPERCALL_PAGE
    notes = tuple(n for n in imagegen.pv64_notes() if n.type != imagegen.XEN_HYPERCALL_PAGE)
    no_page.write_bytes(
        imagegen.write_elf(imagegen.Spec(note_segments=imagegen._in_pt_note(*notes)))
    )
    with pytest.raises(api.Refused, match="the kernel has no HYPERCALL_PAGE note"):
        api.patch(no_page, tmp_path / "out", pv_abi=True)


def test_re_patching_keeps_the_choice(tmp_path: Path) -> None:
    source = write_kernel(tmp_path / "kernel.elf", CALLS_XENOPROF)
    once = tmp_path / "once"
    api.patch(source, once, pv_abi=False)
    from shimgen.plan.metadata import plan_arguments

    assert plan_arguments(api.inspect(once).shim.meta.options)["pv_abi"] is False


# --- inspect and check: what the image's shim answers --------------------------------


def test_inspect_marks_the_calls_the_shim_answers(tmp_path: Path) -> None:
    source = write_kernel(
        tmp_path / "kernel.elf", [(XENOPROF_OP, {}), (FPU_TASKSWITCH, {}), (IRET, {})]
    )
    before = {
        u["name"]: u["shim_answers"] for u in api.inspect(source).to_json()["hypercalls"]["calls"]
    }
    assert before == {"xenoprof_op": False, "fpu_taskswitch": False, "iret": False}
    out = tmp_path / "out"
    api.patch(source, out)
    calls = api.inspect(out).to_json()["hypercalls"]["calls"]
    assert {u["name"]: u["shim_answers"] for u in calls} == {
        "xenoprof_op": False,
        "fpu_taskswitch": True,
        "iret": True,
    }


def test_check_blames_only_the_calls_nobody_answers(tmp_path: Path) -> None:
    source = write_kernel(tmp_path / "kernel.elf", [(XENOPROF_OP, {}), (FPU_TASKSWITCH, {})])
    out = tmp_path / "out"
    api.patch(source, out)
    warning = api.check(out, "pvh").pvh_hypercalls
    assert "the shim's PV ABI layer answers fpu_taskswitch" in warning
    assert "nothing answers xenoprof_op, so the kernel fails as PVH" in warning


def test_check_stops_saying_it_fails_when_every_pv_only_call_is_answered(tmp_path: Path) -> None:
    source = write_kernel(tmp_path / "kernel.elf", [(FPU_TASKSWITCH, {}), (SET_DEBUGREG, {})])
    out = tmp_path / "out"
    api.patch(source, out)
    warning = api.check(out, "pvh").pvh_hypercalls
    assert "fails as PVH" not in warning
    assert "answers fpu_taskswitch, set_debugreg" in warning
    without = tmp_path / "without"
    api.patch(source, without, pv_abi=False)
    assert "the shim does not answer them, so the kernel fails as PVH" in (
        api.check(without, "pvh").pvh_hypercalls
    )


# Mini-OS under real Xen through the layer: tests/shim/test_pv_memory.py


# --- the numbers the handlers take, against Xen's public headers -----------------------

ERRNO_NAMES = ("EPERM", "ENOENT", "ESRCH", "E2BIG", "EAGAIN", "ENOMEM", "EACCES", "EFAULT")
ERRNO_NAMES += ("EBUSY", "EEXIST", "EINVAL", "ENOSYS")
PV_ABI_EXPRESSIONS = (
    {
        "VMASST_CMD_ENABLE": "VMASST_CMD_enable",
        "VMASST_CMD_DISABLE": "VMASST_CMD_disable",
        "SEGBASE_FS": "SEGBASE_FS",
        "SEGBASE_GS_USER": "SEGBASE_GS_USER",
        "SEGBASE_GS_KERNEL": "SEGBASE_GS_KERNEL",
        "SEGBASE_GS_USER_SEL": "SEGBASE_GS_USER_SEL",
    }
    | {name: f"XEN_{name}" for name in ERRNO_NAMES}
    | {
        name: name
        for name in (
            "HYPERVISOR_VIRT_START",
            "HYPERVISOR_VIRT_END",
            "MACH2PHYS_VIRT_START",
            "MACH2PHYS_VIRT_END",
            "FIRST_RESERVED_GDT_PAGE",
            "FIRST_RESERVED_GDT_BYTE",
            "FIRST_RESERVED_GDT_ENTRY",
            "FLAT_RING3_CS32",
            "FLAT_RING3_CS64",
            "FLAT_RING3_DS32",
            "FLAT_RING3_DS64",
            "FLAT_RING3_SS32",
            "FLAT_RING3_SS64",
            "FLAT_KERNEL_CS64",
            "FLAT_KERNEL_DS64",
            "FLAT_KERNEL_SS64",
        )
    }
    | {
        "PHYSDEVOP_SET_IOPL": "PHYSDEVOP_set_iopl",
        "PHYSDEV_SET_IOPL_SIZE": "sizeof(struct physdev_set_iopl)",
    }
)


def test_pv_abi_numbers_match_xen_headers(tmp_path: Path) -> None:
    # VmAssist.TYPE_M2P_STRICT is xen.h's VMASST_TYPE_m2p_strict
    assists = {
        assist.name: f"VMASST_TYPE_{assist.name.removeprefix('TYPE_').lower()}"
        for assist in abi.VmAssist
    }
    headers = ("xen/xen.h", "xen/errno.h", "xen/physdev.h")
    got = xen_values(tmp_path, PV_ABI_EXPRESSIONS | assists, headers)
    assert got == {name: getattr(abi, name) for name in PV_ABI_EXPRESSIONS} | {
        assist.name: assist.value for assist in abi.VmAssist
    }
