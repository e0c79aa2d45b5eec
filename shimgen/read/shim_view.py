"""What a shimgen patch put into an image, read from the image alone: the metadata
note (structs/shim_meta.py), the shim's code bytes, where that code switches between
32-bit code, 64-bit code and data, the names of its labels, and its disassembly.
`shimgen inspect`, `shimgen diff`, `shimgen emulate` and a re-patch read a patched
image through here. Nothing here plans, assembles or writes: what the writer knew
is in the note.

Labels: a format 3 note records every label of the shim's source with its offset,
in display order (at one offset, the first recorded name is the one shown).
Formats 1 and 2 record none: only the two entry points are named, and
``labels_source`` says so.

Regions: a format 2 or 3 note records where 64-bit code, 32-bit code and data
begin, so every byte is decoded as what it is. A format 1 note does not: the code
is then decoded per entry point: 64-bit from the PV entry, 32-bit from the PVH
entry up to its far jump, 64-bit from the far jump's target on.

Shown addresses are where each byte runs: physical for 32-bit code and for the
64-bit code that runs identity-mapped (PHYSICAL_64_LABELS up to pvh_virtual),
virtual elsewhere. diff.py decodes through the same regions with every address
an offset into the shim.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

from ..errors import BadInput
from ..structs.shim_meta import SHIM_META_NOTE_TYPE, SHIM_META_OWNER, ShimMeta
from .image import Image, Note

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on the patch path
if TYPE_CHECKING:
    from typing import Any

OPCODE_JMP_FAR = 0xEA  # jmp ptr16:32 (valid in 32-bit code only)
DATA_LABELS = ("shim_data", "kernel_entry_ptr")  # format 1 shims have the second only
# 64-bit code that runs at physical (identity-mapped) addresses, up to VIRTUAL_LABEL
PHYSICAL_64_LABELS = ("pvh_in_long_mode", "pvh_long_entry")
VIRTUAL_LABEL = "pvh_virtual"
DATA_ROW = 8  # bytes per data line
LABELS_RECORDED = "plan"  # labels_source of a format 3 note: the planner's own table


class CorruptShimNote(BadInput):
    """The image has a shimgen note that does not decode."""

    def __init__(self, path: str, cause: str) -> None:
        super().__init__(f"{path}: its shimgen note is corrupt ({cause})")
        self.cause = cause  # the decoding error's type name


# --- the note and the code -------------------------------------------------------------


def is_meta_note(note: Note) -> bool:
    return note.owner.encode() == SHIM_META_OWNER and note.type == SHIM_META_NOTE_TYPE


def shim_meta(image: Image) -> ShimMeta | None:
    """The metadata note of a patched image; None for an image shimgen did not patch."""
    for note in image.notes:
        if is_meta_note(note):
            try:
                return ShimMeta.parse(note.desc)
            except _decoding_errors() as error:
                raise CorruptShimNote(image.path, type(error).__name__) from None
    return None


def _decoding_errors() -> tuple[type[Exception], ...]:
    """What a note that does not decode raises (evaluated only when something was
    raised: construct, which ShimMeta.parse imported, is not imported by a patch)."""
    import construct as cs

    return (cs.ConstructError, ValueError)


def code_file_range(image: Image, meta: ShimMeta) -> tuple[int, int] | None:
    """[start, end) in the file of the shim's code: inside the loadable segment that
    holds it; None when no segment's file bytes hold all of it."""
    for segment in image.loadable_segments:
        start = meta.shim_vaddr - segment.vaddr
        if 0 <= start <= segment.filesz - meta.shim_code_size:
            return segment.offset + start, segment.offset + start + meta.shim_code_size
    return None


# --- the view --------------------------------------------------------------------------

Region = tuple[int, int, int, bool]  # start offset, end offset, bits (0: data), physical


@dataclass
class Instruction:
    """One disassembled instruction of the shim."""

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
class ShimView:
    """What a patched image says about its shim: metadata, labels, code."""

    meta: ShimMeta
    code: bytes | None  # None: outside every loadable segment's file bytes
    offsets: dict[str, int]  # label -> offset in the shim, in display order
    labels_source: str  # "plan" or "entry points (...)"
    disassembly: list[Instruction] | None = None
    disasm_error: str | None = None

    @property
    def code_vaddr(self) -> int:
        return self.meta.shim_vaddr

    @property
    def labels(self) -> dict[str, int]:
        """label -> virtual address."""
        return {name: self.code_vaddr + offset for name, offset in self.offsets.items()}

    def regions(self) -> list[Region]:
        return code_regions(self.meta, self.code or b"", self.offsets)

    def decode(self, relative: bool = False) -> list[Instruction]:
        """Instructions and data rows of the code, named by the labels; ``relative``:
        every address an offset into the shim and no names (what a diff compares)."""
        if relative:
            return decode_regions(self.code or b"", self.regions(), (0, 0), {})
        origins = (self.code_vaddr, self.meta.shim_paddr)
        return decode_regions(self.code or b"", self.regions(), origins, self._shown())

    def _shown(self) -> dict[int, str]:
        """offset -> the one label shown there: the first recorded."""
        shown: dict[int, str] = {}
        for name, offset in self.offsets.items():
            shown.setdefault(offset, name)
        return shown

    def to_json(self) -> dict[str, Any]:
        return {
            "metadata": self.meta.to_json(),
            "labels": dict(sorted(self.labels.items(), key=lambda item: (item[1], item[0]))),
            "labels_source": self.labels_source,
            "code_vaddr": self.code_vaddr,
            "code_size": len(self.code or b""),
            "disassembly": (
                None if self.disassembly is None else [i.to_json() for i in self.disassembly]
            ),
            "disasm_error": self.disasm_error,
        }


def view_of(image: Image, meta: ShimMeta) -> ShimView:
    span = code_file_range(image, meta)
    code = None if span is None else bytes(image.data[span[0] : span[1]])
    if meta.labels:
        return ShimView(meta, code, dict(meta.labels), LABELS_RECORDED)
    entries = {"pvh_entry": meta.pvh_entry - meta.shim_paddr}
    if meta.pv_entry:  # a pvh-passthrough shim has no PV entry
        entries = {"pv_entry": meta.pv_entry - meta.shim_vaddr} | entries
    source = f"entry points (a format {meta.format} note records no labels)"
    return ShimView(meta, code, entries, source)


def shim_view(image: Image, disassemble: bool = True) -> ShimView | None:
    """The shim of a patched image (disassembled unless told not to); None for an image
    shimgen did not patch. CorruptShimNote when its note does not decode."""
    meta = shim_meta(image)
    if meta is None:
        return None
    view = view_of(image, meta)
    if disassemble:
        try:
            view.disassembly = view.decode()
        except ImportError:
            view.disasm_error = "capstone is not installed: pip install capstone"
    return view


# --- regions ---------------------------------------------------------------------------


def _phys_to_offset(meta: ShimMeta, paddr: int) -> int | None:
    offset = paddr - meta.shim_paddr
    return offset if 0 <= offset < meta.shim_code_size else None


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


# --- decoding --------------------------------------------------------------------------


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
