"""Test kernels for the PV ABI layer (tests/shim/test_pv_*.py): tests/imagegen.py's
PV64 image, whose HYPERCALL_PAGE is the text's second page, with code a test writes
at the entry, either call by call (:func:`kernel`: registers loaded, a slot called,
rax kept) or as assembly text (:func:`assemble`, Keystone's AT&T syntax, with
:func:`hypercall` for the call into a slot). What a test expects comes from the
test, not from shimgen. The emulated PVH boot runs the shim, then the kernel past its
entry up to its hlt.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import imagegen

from shimgen import api

TEXT_VIRT = imagegen.PV64_VIRT_BASE + imagegen.PHYS_BASE
PAGE_VIRT = TEXT_VIRT + 0x1000  # imagegen's HYPERCALL_PAGE note
STUB = 32  # xen.h: one 32-byte stub per hypercall
UNHANDLED = "shimgen: pv-abi: unhandled hypercall {} ({})\n"
UNHANDLED_TRAP = "shimgen: pv-abi: unhandled trap {:#04x} at {:#018x}\n"

# x86-64 encodings (Intel SDM vol. 2): movabs $imm64 into an argument register, and
# mov %rax into the registers that keep each result
MOVABS = {
    "rdi": b"\x48\xbf",
    "rsi": b"\x48\xbe",
    "rdx": b"\x48\xba",
    "rcx": b"\x48\xb9",
    "r8": b"\x49\xb8",
    "r10": b"\x49\xba",
    "r11": b"\x49\xbb",
}
KEEP_RAX = {
    "rbx": b"\x48\x89\xc3",
    "rbp": b"\x48\x89\xc5",
    "r12": b"\x49\x89\xc4",
    "r13": b"\x49\x89\xc5",
    "r14": b"\x49\x89\xc6",
    "r15": b"\x49\x89\xc7",
}
HLT = b"\xf4"
# what the kernel puts in every register a hypercall must give back unchanged
MARKERS = {
    "rdi": 0x1111,
    "rsi": 0x2222,
    "rdx": 0x3333,
    "r10": 0x4444,
    "r8": 0x5555,
    "rcx": 0x6666,
    "r11": 0x7777,
}


def call_slot(site: int, slot: int) -> bytes:
    target = PAGE_VIRT + slot * STUB
    return b"\xe8" + (target - (site + 5)).to_bytes(4, "little", signed=True)


Step = tuple[int, dict[str, int]] | bytes  # a call (slot, registers), or raw code


def kernel(steps: list[Step]) -> bytes:
    """The code at the entry: for each call (slot, registers), load the registers
    (the MARKERS in the rest), call the slot, keep rax in the next of KEEP_RAX; raw
    code as it is; then hlt."""
    code = bytearray()
    keep = iter(KEEP_RAX.values())
    for step in steps:
        if isinstance(step, bytes):
            code += step
            continue
        slot, registers = step
        for name, value in (MARKERS | registers).items():
            code += MOVABS[name] + (value & (1 << 64) - 1).to_bytes(8, "little")
        code += call_slot(TEXT_VIRT + len(code), slot)
        code += next(keep, b"")  # past the last keeper: rax is not kept
    return bytes(code + HLT)


def write_kernel(path: Path, calls: list[Step] | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = bytearray(imagegen.write_elf(KERNEL_SPEC))
    code = calls if isinstance(calls, bytes) else kernel(calls)
    data[imagegen.TEXT_OFFSET : imagegen.TEXT_OFFSET + len(code)] = code
    path.write_bytes(bytes(data))
    return path


def patched(tmp_path: Path, calls: list[Step] | bytes, **options: object) -> Path:
    source = write_kernel(tmp_path / "kernel.elf", calls)
    out = tmp_path / "kernel.universal"
    api.patch(source, out, **options)  # type: ignore[arg-type]
    return out


# The test kernels' RAM: an xl domU's usual size. The PV memory layout the layer
# builds at boot grows with it (about 8 instructions a frame in the emulator).
MEMORY_MIB = 32


def run(image: Path, mode: str = "pvh", **options: object) -> api.EmulateResult:
    options = {"memory_mib": MEMORY_MIB} | options
    result = api.emulate(image, mode, run_kernel=True, **options)  # type: ignore[arg-type]
    assert result.outcome == "kernel-halted", result.outcome
    return result


def results(result: api.EmulateResult, count: int) -> list[int]:
    """The kernel's hypercall results, signed, in call order."""
    kept = [result.registers[name] for name in list(KEEP_RAX)[:count]]
    return [value - (1 << 64) if value >> 63 else value for value in kept]


TEXT_SIZE = 0x4000  # code in the first page, the hypercall page, then data
DATA_VIRT = TEXT_VIRT + 0x2000  # two pages a test kernel may use for its data
KERNEL_SPEC = replace(imagegen.PV64, text_size=TEXT_SIZE)


def hypercall(number: int) -> str:
    """The instruction that calls slot number of the kernel's hypercall page."""
    return f"call {PAGE_VIRT + number * STUB:#x}"


def assemble(source: str) -> bytes:
    """Keystone (AT&T) assembly of source, placed at TEXT_VIRT; hlt appended."""
    from keystone import KS_ARCH_X86, KS_MODE_64, KS_OPT_SYNTAX_ATT, Ks

    engine = Ks(KS_ARCH_X86, KS_MODE_64)
    engine.syntax = KS_OPT_SYNTAX_ATT
    encoding, _count = engine.asm(source, TEXT_VIRT)
    code = bytes(encoding or b"") + HLT
    if len(code) > PAGE_VIRT - TEXT_VIRT:
        raise ValueError(f"test kernel is {len(code)} bytes: more than its first page")
    return code
