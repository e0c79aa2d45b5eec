"""The "shimgen" ELF note: what a patch did, so inspect, diff and re-patching know.

One note, owner "shimgen", type SHIM_META_NOTE_TYPE (never 18: QEMU matches note
type 18 whatever the owner). Its desc is the construct below: fixed-width numbers
first, then length-prefixed strings. Enough of the original image is recorded to
rebuild it byte for byte: a patch only appends to the file and rewrites three ELF
header fields (e_entry, e_phoff, e_phnum), so the original is the first
``original_size`` bytes with those fields restored, checked against its sha256.
An ELF32 container converted to ELF64 (options "input": "elf32") is instead
``original_size`` bytes at options "input_offset", unchanged; a gzip input
("input": "gzip") comes back decompressed (size and sha256 are of that).

options holds what planning the same patch again needs: "handoff" and "entry"
always, "entry64", "single_entry", "input", "input_offset" only when set
(plan.plan_arguments turns them back into make_plan arguments). "digest": "none"
says the patch took no sha256 (--no-digest): original_sha256 is zeros, and the
original bytes are rebuilt unchecked.

Format 2 adds code_regions: (offset, bits) where the shim's bytes switch between
32-bit code, 64-bit code and data (bits 0), so inspect and diff decode every byte
as what it is. A format 1 note (written before) parses with no regions.

Format 3 adds labels: every label of the shim's source and its offset in the shim,
as the assembler placed them, so a reader names the code without assembling
anything. They are kept in the order a disassembly shows them: by offset and, at
one offset, the name to show first (the shim's exported labels, then the others,
"*_end" names last). Names are front-coded (each stores how many leading characters
it shares with the one before, then the rest): 56 labels of the start-info shim
take about 700 bytes. Formats 1 and 2 parse with no labels.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import construct as cs

SHIM_META_OWNER = b"shimgen"
SHIM_META_NOTE_TYPE = 0x5348  # "SH"; any type but Xen's PHYS32_ENTRY (18) would do
SHIM_META_FORMAT = 3  # what build() writes unless told otherwise
SHIM_META_FORMATS = (1, 2, 3)  # what parse() reads
DIGEST_OPTION, NO_DIGEST = "digest", "none"  # options entry of a patch without a sha256

_TEXT = cs.PascalString(cs.Int32ul, "utf8")

CODE_REGION = cs.Struct("offset" / cs.Int32ul, "bits" / cs.Int8ul)

# One front-coded label: the shim's code is a few KiB, so 16 bits hold any offset in it.
LABEL = cs.Struct(
    "shared" / cs.Int8ul,  # leading characters taken from the label before
    "rest" / cs.PascalString(cs.Int8ul, "ascii"),  # so a name has at most 255 characters
    "offset" / cs.Int16ul,
)


def _shared_prefix(a: str, b: str) -> int:
    pairs = enumerate(zip(a, b, strict=False))  # up to the shorter one's end
    return next((n for n, (x, y) in pairs if x != y), min(len(a), len(b)))


class _FrontCodedLabels(cs.Adapter):
    """{name: offset} <-> LABEL entries, in the dict's order."""

    def _decode(self, entries: Any, context: Any, path: Any) -> dict[str, int]:
        labels: dict[str, int] = {}
        previous = ""
        for entry in entries:
            if entry.shared > len(previous):
                raise cs.ValidationError(f"label shares {entry.shared} characters of {previous!r}")
            previous = previous[: entry.shared] + entry.rest
            labels[previous] = entry.offset
        return labels

    def _encode(self, labels: dict[str, int], context: Any, path: Any) -> list[dict[str, Any]]:
        entries = []
        previous = ""
        for name, offset in labels.items():
            shared = _shared_prefix(previous, name)
            entries.append({"shared": shared, "rest": name[shared:], "offset": offset})
            previous = name
        return entries


SHIM_META = cs.Struct(
    "format" / cs.OneOf(cs.Int32ul, SHIM_META_FORMATS),
    "tool_version" / _TEXT,
    "handoff" / _TEXT,
    "original_size" / cs.Int64ul,
    "original_sha256" / cs.Bytes(32),
    "original_e_entry" / cs.Int64ul,
    "original_e_phoff" / cs.Int64ul,
    "original_e_phnum" / cs.Int16ul,
    # the kernel's 64-bit entry the shim jumps to: start-info its PV entry (ENTRY note,
    # e_entry or --entry), hvm-start-info --entry64; 0 for pvh-passthrough
    "original_pv_entry" / cs.Int64ul,
    # the input's PHYS32_ENTRY (0: none); for pvh-passthrough the entry jumped to
    "original_phys32_entry" / cs.Int64ul,
    "shim_vaddr" / cs.Int64ul,
    "shim_paddr" / cs.Int64ul,
    "shim_filesz" / cs.Int64ul,
    "shim_memsz" / cs.Int64ul,
    "shim_code_size" / cs.Int64ul,
    "pv_entry" / cs.Int64ul,  # ENTRY and e_entry; 0 without a PV entry (pvh-passthrough)
    "pvh_entry" / cs.Int64ul,  # PHYS32_ENTRY (with --single-entry, equal to pv_entry)
    "options" / _TEXT,  # JSON, keys sorted: deterministic bytes
    "code_regions" / cs.If(cs.this.format >= 2, cs.PrefixedArray(cs.Int16ul, CODE_REGION)),
    "labels" / cs.If(cs.this.format >= 3, _FrontCodedLabels(cs.PrefixedArray(cs.Int16ul, LABEL))),
)


@dataclass
class ShimMeta:
    tool_version: str
    handoff: str
    original_size: int
    original_sha256: bytes
    original_e_entry: int
    original_e_phoff: int
    original_e_phnum: int
    original_pv_entry: int
    original_phys32_entry: int
    shim_vaddr: int
    shim_paddr: int
    shim_filesz: int
    shim_memsz: int
    shim_code_size: int
    pv_entry: int
    pvh_entry: int
    options: dict[str, Any] = field(default_factory=dict)
    # (offset, bits): 32/64-bit code from offset on, 0 = data; empty from format 1
    code_regions: list[tuple[int, int]] = field(default_factory=list)
    # label -> offset in the shim, in display order; empty before format 3
    labels: dict[str, int] = field(default_factory=dict)
    # the note's format: parse() keeps what it read; build() writes it (an older one
    # leaves out what that format did not have)
    format: int = SHIM_META_FORMAT

    @property
    def has_digest(self) -> bool:
        """Whether original_sha256 is the original's digest (not --no-digest's zeros)."""
        return self.options.get(DIGEST_OPTION) != NO_DIGEST

    def build(self) -> bytes:
        values = asdict(self)
        values["options"] = json.dumps(self.options, sort_keys=True, separators=(",", ":"))
        values["code_regions"] = [{"offset": o, "bits": b} for o, b in self.code_regions]
        return SHIM_META.build(values)

    @classmethod
    def parse(cls, desc: bytes) -> ShimMeta:
        parsed = SHIM_META.parse(desc)
        values = {name: parsed[name] for name in cls.__dataclass_fields__}
        values["options"] = json.loads(parsed.options)
        if not isinstance(values["options"], dict):
            raise ValueError("options is not a JSON object")
        values["code_regions"] = [(r.offset, r.bits) for r in parsed.code_regions or ()]
        values["labels"] = dict(parsed.labels or {})
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """Every field but labels: a reader shows those where they name the code
        (read/shim_view.py)."""
        data = asdict(self)
        del data["labels"]
        data["original_sha256"] = self.original_sha256.hex()
        return data
