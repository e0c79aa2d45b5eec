"""What the tests know of samples/pv-classic: the steps it reports and how to read
them (``shimgen-sample: step.NAME=ok``, or ``fail ...``/``skip (needs ...)``), and the
trap frames it prints (``trap.bp=vector=3 rcx=0x... rip=0x... cs=0x...``).

Its own checks decide each step's verdict; the tests check the verdicts and, from
what they know independently (the ELF's symbols, Xen's selectors in structs), the
trap frames the kernel saw.
"""

from __future__ import annotations

from pathlib import Path

from shimgen.structs import xen_abi as abi

from shimgen.verify.console import parse_report

STEP_PREFIX = "step."
TRAP_PREFIX = "trap."

# Every step a PV boot reports, in order (a domU adds console_ring and xenstore).
PV_STEPS = (
    "set_trap_table",
    "set_callbacks",
    "callback_op",
    "stack_switch",
    "m2p",
    "update_va_mapping",
    "events_masked_at_entry",
    "mmu_update",
    "mmuext_invlpg",
    "window_shows_scratch",
    "mmu_update_restore",
    "mmuext_tlb_flush",
    "window_restored",
    "set_gdt",
    "gdt_selector",
    "flat_kernel_ds",
    "new_baseptr",
    "new_baseptr_back",
    "trap_bp",
    "trap_ud",
    "trap_de",
    "trap_gp",
    "unmap_page",
    "trap_pf",
    "event_channel",
    "event_held_while_masked",
    "event_callback",
    "bind_virq_timer",
    "set_timer_op",
    "sched_block",
    "timer_deadline",
)
DOMU_STEPS = ("console_ring", "xenstore")

# The steps that pass as PVH through the shim in the emulator (`shimgen emulate
# --mode pvh --run-kernel`, tests/shim/test_pv_classic.py): all but the event channel,
# timer and xenstore steps, which need a real Xen's event channels (the emulated one
# answers none). Under real Xen as an xl PVH domU every step passes
# (tests/verify/test_xl_boot.py).
PVH_PASSING = ("set_trap_table", "set_callbacks", "callback_op", "stack_switch")
PVH_PASSING += ("trap_bp", "trap_ud", "trap_de", "trap_gp")
PVH_PASSING += ("m2p", "console_ring", "update_va_mapping", "mmu_update", "mmuext_invlpg")
PVH_PASSING += ("window_shows_scratch", "mmu_update_restore", "mmuext_tlb_flush")
PVH_PASSING += ("window_restored", "new_baseptr", "new_baseptr_back")
PVH_PASSING += ("unmap_page", "trap_pf", "set_gdt", "gdt_selector", "flat_kernel_ds")
PVH_PASSING += ("events_masked_at_entry",)

# The trap each probe raises: vector, the symbol of the instruction its frame's rip
# names (int3 is a trap: rip is past its one byte), and whether Xen pushes an error code.
TRAPS = {
    "bp": (3, "provoke_bp_at", 1, False),
    "ud": (6, "provoke_ud_at", 0, False),
    "de": (0, "provoke_de_at", 0, False),
    "gp": (13, "provoke_gp_at", 0, True),
    "pf": (14, "provoke_pf_at", 0, True),
}
# samples/pv-classic/probe.h: what the probes hold in rcx and r11 across the trap
PROBE_RCX = 0x5C5C5C5C0000C0C0
PROBE_R11 = 0x1111111100001111
# xen/arch/x86/x86_64/entry.S, create_bounce_frame: a trap from the kernel shows its
# code selector with RPL 0, and the upcall mask it saved in bits 32-39 of that slot
KERNEL_CS_IN_FRAME = abi.FLAT_KERNEL_CS64 & ~3
SAVED_MASK_SHIFT = 32
RFLAGS_IF = 1 << 9  # Intel SDM vol. 1, "EFLAGS Register": the frame's IF is !mask


def steps(lines: list[str]) -> dict[str, str]:
    """step name -> its verdict text, from the guest's lines."""
    report, _done = parse_report(lines)
    return {k.removeprefix(STEP_PREFIX): v for k, v in report.items() if k.startswith(STEP_PREFIX)}


def passing(lines: list[str]) -> list[str]:
    """The steps that passed, in the order reported."""
    return [name for name, verdict in steps(lines).items() if verdict == "ok"]


def trap_frames(lines: list[str]) -> dict[str, dict[str, int]]:
    """trap name -> the frame's fields as the kernel printed them."""
    report, _done = parse_report(lines)
    frames = {}
    for key, value in report.items():
        if key.startswith(TRAP_PREFIX):
            fields = dict(field.split("=", 1) for field in value.split())
            frames[key.removeprefix(TRAP_PREFIX)] = {k: int(v, 0) for k, v in fields.items()}
    return frames


def assert_pv_run(lines: list[str], image: Path, domu: bool) -> None:
    """Every step passed, and each trap frame is the one Xen builds for a 64-bit PV
    kernel: the probe's rip (from the ELF's symbols) and its rcx/r11 markers on top,
    the kernel's flat selectors, events masked (saved mask 1, IF clear)."""
    from shimgen.read.image import read_image

    expected = PV_STEPS + (DOMU_STEPS if domu else ())
    got = steps(lines)
    assert sorted(got) == sorted(expected), got
    assert all(verdict == "ok" for verdict in got.values()), got
    frames = trap_frames(lines)
    assert sorted(frames) == sorted(TRAPS)
    assert_frames(frames, image, tuple(TRAPS))
    assert frames["pf"]["cr2"] == read_image(image).symbols["hole"], frames["pf"]


def assert_frames(frames: dict[str, dict[str, int]], image: Path, names: tuple[str, ...]) -> None:
    """The named traps' frames are the ones Xen builds (assert_pv_run)."""
    from shimgen.read.image import read_image

    symbols = read_image(image).symbols
    for name in names:
        vector, symbol, past, has_error = TRAPS[name]
        frame = frames[name]
        assert frame["vector"] == vector, (name, frame)
        assert frame["rip"] == symbols[symbol] + past, (name, frame)
        assert (frame["rcx"], frame["r11"]) == (PROBE_RCX, PROBE_R11), (name, frame)
        assert ("error" in frame) == has_error and frame.get("error", 0) == 0, (name, frame)
        assert frame["cs"] & 0xFFFF == KERNEL_CS_IN_FRAME, (name, frame)
        assert frame["cs"] >> SAVED_MASK_SHIFT & 0xFF == 1, (name, frame)
        assert not frame["rflags"] & RFLAGS_IF, (name, frame)
        assert frame["ss"] == abi.FLAT_KERNEL_SS64, (name, frame)
