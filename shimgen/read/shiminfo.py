"""What a shimgen patch put into an image: its metadata note, decoded, and the shim's
code, disassembled, for `shimgen inspect`.

The metadata note (structs/shim_meta.py) gives the shim's range, both entry
points and (format 2) its code regions: where 64-bit code, 32-bit code and data
begin, so every byte is decoded as what it is without anything else. Symbol names
come from the plan: the original image is rebuilt from the patched one
(patch.original_bytes) and planned again with the recorded options; when that
reproduces the shim's bytes exactly, every label of the shim source is known
(``labels_source`` says whether it did). A format 1 note has no regions: the code
is then decoded per entry point: 64-bit from the PV entry, 32-bit from the PVH
entry up to its far jump, 64-bit from the far jump's target on.

Shown addresses are where each byte runs: physical for 32-bit code and for the
64-bit code that runs identity-mapped (PHYSICAL_64_LABELS up to pvh_virtual),
virtual elsewhere. diff.py decodes through the same regions.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ..structs.shim_meta import ShimMeta
from .image import Image

OPCODE_JMP_FAR = 0xEA  # jmp ptr16:32 (valid in 32-bit code only)
DATA_LABELS = ("shim_data", "kernel_entry_ptr")  # format 1 shims have the second only
# 64-bit code that runs at physical (identity-mapped) addresses, up to VIRTUAL_LABEL
PHYSICAL_64_LABELS = ("pvh_in_long_mode", "pvh_long_entry")
VIRTUAL_LABEL = "pvh_virtual"
DATA_ROW = 8  # bytes per data line
_LABEL_LINE = re.compile(r"^\s*([A-Za-z_]\w*):", re.M)


@dataclass
class Instruction:
    address: int
    bytes: str  # hex
    mnemonic: str
    operands: str
    bits: int  # 32, 64, or 0 for data
    # address is where the byte runs: physical for the PVH path up to pvh_virtual
    # (identity-mapped), virtual elsewhere
    label: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ShimInfo:
    meta: ShimMeta
    labels: dict[str, int]  # label -> virtual address
    labels_source: str  # "plan" or "entry points (...)"
    code_vaddr: int
    code: bytes = field(repr=False)
    disassembly: list[Instruction] | None = None
    disasm_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "metadata": self.meta.to_json(),
            "labels": dict(sorted(self.labels.items(), key=lambda item: (item[1], item[0]))),
            "labels_source": self.labels_source,
            "code_vaddr": self.code_vaddr,
            "code_size": len(self.code),
            "disassembly": (
                None if self.disassembly is None else [i.to_json() for i in self.disassembly]
            ),
            "disasm_error": self.disasm_error,
        }


def shim_info(image: Image, disassemble: bool = True) -> ShimInfo | None:
    """The shim of a patched image; None for an image shimgen did not patch."""
    from ..write.patch import shim_meta

    meta = shim_meta(image)
    if meta is None:
        return None
    code = _code_bytes(image, meta)
    labels, source = _plan_labels(image, meta, code)
    info = ShimInfo(
        meta=meta, labels=labels, labels_source=source, code_vaddr=meta.shim_vaddr, code=code
    )
    if disassemble:
        try:
            info.disassembly = disassemble_shim(info)
        except ImportError:
            info.disasm_error = "capstone is not installed: pip install capstone"
    return info


def _code_bytes(image: Image, meta: ShimMeta) -> bytes:
    for segment in image.segments:
        if segment.type_name == "LOAD" and segment.vaddr == meta.shim_vaddr:
            size = min(meta.shim_code_size, segment.filesz)
            return bytes(image.data[segment.offset : segment.offset + size])
    return b""


def _plan_labels(image: Image, meta: ShimMeta, code: bytes) -> tuple[dict[str, int], str]:
    """Every label of the shim source, when planning the original again gives these bytes."""
    base = {"pv_entry": meta.pv_entry, "pvh_entry": _virt(meta, meta.pvh_entry)}
    try:
        from ..plan import make_plan, plan_arguments
        from ..shim.assemble import keystone_assemble, label_table
        from ..write.patch import original_bytes
        from .image import image_from_bytes

        original = image_from_bytes(original_bytes(image.data, meta), image.path)
        plan = make_plan(original, **plan_arguments(meta.options or {}, meta.handoff))
        if plan.shim.code != code:
            return base, "entry points (re-planning the original gives other shim bytes)"
        names = tuple(dict.fromkeys(_LABEL_LINE.findall(plan.shim.source)))
        raw = keystone_assemble(plan.shim.source + label_table(names))
        table = raw[len(code) :]
        offsets = [int.from_bytes(table[8 * n : 8 * n + 8], "little") for n in range(len(names))]
        labels = {name: meta.shim_vaddr + off for name, off in zip(names, offsets, strict=True)}
        labels.update({k: meta.shim_vaddr + v for k, v in plan.shim.labels.items()})
        return labels, "plan"
    except Exception as error:  # any failure leaves the entry points, which always hold
        return base, f"entry points (re-planning failed: {type(error).__name__})"


def _virt(meta: ShimMeta, paddr: int) -> int:
    return meta.shim_vaddr + (paddr - meta.shim_paddr)


def _phys_to_offset(meta: ShimMeta, paddr: int) -> int | None:
    offset = paddr - meta.shim_paddr
    return offset if 0 <= offset < meta.shim_code_size else None


Region = tuple[int, int, int, bool]  # start offset, end offset, bits (0: data), physical


def code_regions(meta: ShimMeta, code: bytes, offsets: dict[str, int]) -> list[Region]:
    """The shim's bytes cut where their instruction set (or data) changes and where
    they start or stop running at physical addresses. offsets: label -> shim offset
    (at least the entry points)."""
    size = len(code)
    # a corrupt note can hold any numbers: keep what can be decoded
    changes = {o: b for o, b in meta.code_regions if 0 <= o < size and b in (0, 32, 64)}
    if not changes:
        changes = _entry_point_changes(meta, code, offsets)
    physical = {o: b == 32 for o, b in changes.items()}
    for name in (*PHYSICAL_64_LABELS, VIRTUAL_LABEL):
        at = offsets.get(name)
        if at is not None and 0 <= at < size:
            changes.setdefault(at, _bits_at(changes, at))
            physical[at] = name != VIRTUAL_LABEL
    cuts = sorted(changes)
    regions = [(0, cuts[0], 64, False)] if cuts and cuts[0] > 0 else []
    for n, start in enumerate(cuts):
        end = cuts[n + 1] if n + 1 < len(cuts) else size
        regions.append((start, end, changes[start], physical[start]))
    return [r for r in regions if r[0] < r[1]]


def _bits_at(changes: dict[int, int], offset: int) -> int:
    before = [o for o in changes if o <= offset]
    return changes[max(before)] if before else 64


def _entry_point_changes(meta: ShimMeta, code: bytes, offsets: dict[str, int]) -> dict[int, int]:
    """Format 1: 64-bit from the PV entry, 32-bit from the PVH entry, 64-bit from the
    PVH entry's far-jump target, data from the data label (when known)."""
    size = len(code)
    data = next((offsets[n] for n in DATA_LABELS if n in offsets), size)
    pvh = offsets.get("pvh_entry")
    long = offsets.get("pvh_long_entry")
    if long is None and pvh is not None:
        long = _far_jump_target(meta, code, pvh)
    # A pvh-passthrough shim has no PV entry: the PV path is refused, not built.
    points = [(offsets.get("pv_entry"), 64), (pvh, 32), (long, 64), (data, 0)]
    return {o: b for o, b in points if o is not None and 0 <= o < size}


def _regions(info: ShimInfo) -> list[Region]:
    offsets = {name: vaddr - info.code_vaddr for name, vaddr in info.labels.items()}
    return code_regions(info.meta, info.code, offsets)


def _far_jump_target(meta: ShimMeta, code: bytes, pvh: int) -> int | None:
    """Offset of the 64-bit code the PVH entry's far jump (ptr16:32) goes to."""
    from capstone import CS_ARCH_X86, CS_MODE_32, Cs

    engine = Cs(CS_ARCH_X86, CS_MODE_32)
    for insn in engine.disasm(code[pvh:], pvh):
        if insn.bytes[0] == OPCODE_JMP_FAR and len(insn.bytes) == 7:
            target = int.from_bytes(insn.bytes[1:5], "little")
            offset = _phys_to_offset(meta, target)
            if offset is not None:
                return offset
    return None


def disassemble_shim(info: ShimInfo) -> list[Instruction]:
    return decode_regions(
        info.code,
        _regions(info),
        (info.code_vaddr, info.meta.shim_paddr),
        _label_offsets(info),
    )


def decode_regions(
    code: bytes, regions: list[Region], origins: tuple[int, int], offsets: dict[int, str]
) -> list[Instruction]:
    """Instructions and data rows of code, region by region; origins = (virtual,
    physical) address of offset 0; offsets: shim offset -> label shown there."""
    from capstone import CS_ARCH_X86, CS_MODE_32, CS_MODE_64, Cs

    engines = {32: Cs(CS_ARCH_X86, CS_MODE_32), 64: Cs(CS_ARCH_X86, CS_MODE_64)}
    out: list[Instruction] = []
    for start, end, bits, physical in regions:
        chunk = code[start:end]
        origin = origins[1] if physical else origins[0]
        base = origin + start
        names = {origin + offset: name for offset, name in offsets.items()}
        if bits == 0:
            out += _data_rows(chunk, base, names)
            continue
        done = 0
        for insn in engines[bits].disasm(chunk, base):
            out.append(
                Instruction(
                    insn.address,
                    bytes(insn.bytes).hex(),
                    insn.mnemonic,
                    insn.op_str,
                    bits,
                    names.get(insn.address),
                )
            )
            done = insn.address + insn.size - base
        if done < len(chunk):  # capstone stops at an undecodable byte
            out += _data_rows(chunk[done:], base + done, names)
    return out


def _label_offsets(info: ShimInfo) -> dict[int, str]:
    """offset -> the one label shown there: exported names first, "*_end" names last."""
    from ..shim.assemble import EXPORTED_LABELS

    def rank(name: str) -> tuple[int, str]:
        return (0 if name in EXPORTED_LABELS else 2 if name.endswith("_end") else 1, name)

    chosen: dict[int, str] = {}
    for name in sorted(info.labels, key=rank):
        chosen.setdefault(info.labels[name] - info.code_vaddr, name)
    return chosen


def _data_rows(chunk: bytes, base: int, names: dict[int, str]) -> list[Instruction]:
    """Data as .byte rows, split at labels so each label starts its own row."""
    cuts = sorted({0, len(chunk)} | {a - base for a in names if 0 < a - base < len(chunk)})
    rows = []
    for start, end in itertools.pairwise(cuts):
        for row in range(start, end, DATA_ROW):
            piece = chunk[row : min(row + DATA_ROW, end)]
            text = piece.decode("ascii", "replace")
            printable = all(32 <= b < 127 or b in (9, 10) for b in piece.rstrip(b"\0"))
            printable &= bool(piece.rstrip(b"\0"))
            rows.append(
                Instruction(
                    base + row,
                    piece.hex(),
                    ".ascii" if printable else ".byte",
                    repr(text) if printable else ", ".join(f"{b:#04x}" for b in piece),
                    0,
                    names.get(base + row),
                )
            )
    return rows
