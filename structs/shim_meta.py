"""The "shimgen" ELF note: what a patch did, so inspect, diff and re-patching know.

One note, owner "shimgen", type SHIM_META_NOTE_TYPE (never 18: QEMU matches note
type 18 whatever the owner). Its desc is FIELDS below: fixed-width numbers first,
then length-prefixed strings. Enough of the original image is recorded to
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
import struct
from dataclasses import asdict, dataclass, field
from functools import cache

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on the patch path
if TYPE_CHECKING:
    from typing import Any

SHIM_META_OWNER = b"shimgen"
SHIM_META_NOTE_TYPE = 0x5348  # "SH"; any type but Xen's PHYS32_ENTRY (18) would do
SHIM_META_FORMAT = 3  # what build() writes unless told otherwise
SHIM_META_FORMATS = (1, 2, 3)  # what parse() reads
DIGEST_OPTION, NO_DIGEST = "digest", "none"  # options entry of a patch without a sha256

# The note, field by field: (name, kind, the first format that has it). Both the
# construct that parses it (shim_meta_struct) and the encoder every patch runs
# (ShimMeta.build, without importing construct) are made from this one list.
FIELDS: tuple[tuple[str, str, int], ...] = (
    ("format", "format", 1),
    ("tool_version", "text", 1),
    ("handoff", "text", 1),
    ("original_size", "u64", 1),
    ("original_sha256", "sha256", 1),
    ("original_e_entry", "u64", 1),
    ("original_e_phoff", "u64", 1),
    ("original_e_phnum", "u16", 1),
    # the kernel's 64-bit entry the shim jumps to: start-info its PV entry (ENTRY note,
    # e_entry or --entry), hvm-start-info --entry64; 0 for pvh-passthrough
    ("original_pv_entry", "u64", 1),
    # the input's PHYS32_ENTRY (0: none); for pvh-passthrough the entry jumped to
    ("original_phys32_entry", "u64", 1),
    ("shim_vaddr", "u64", 1),
    ("shim_paddr", "u64", 1),
    ("shim_filesz", "u64", 1),
    ("shim_memsz", "u64", 1),
    ("shim_code_size", "u64", 1),
    ("pv_entry", "u64", 1),  # ENTRY and e_entry; 0 without a PV entry (pvh-passthrough)
    ("pvh_entry", "u64", 1),  # PHYS32_ENTRY (with --single-entry, equal to pv_entry)
    ("options", "text", 1),  # JSON, keys sorted: deterministic bytes
    ("code_regions", "regions", 2),
    ("labels", "labels", 3),
)
SHA256_SIZE = 32
# Little-endian numbers: the note's integers, a text's length (u32), a list's count
# (u16), a code region (offset u32, bits u8) and a label's shared count, name length
# (u8 each) and offset (u16: the shim's code is a few KiB).
NUMBER = {"format": struct.Struct("<I"), "u64": struct.Struct("<Q"), "u16": struct.Struct("<H")}
TEXT_LENGTH = struct.Struct("<I")
COUNT = struct.Struct("<H")
CODE_REGION_FORMAT = struct.Struct("<IB")
LABEL_BYTE = struct.Struct("<B")
LABEL_OFFSET = struct.Struct("<H")


def _shared_prefix(a: str, b: str) -> int:
    pairs = enumerate(zip(a, b, strict=False))  # up to the shorter one's end
    return next((n for n, (x, y) in pairs if x != y), min(len(a), len(b)))


def front_coded(labels: dict[str, int]) -> list[tuple[int, str, int]]:
    """(shared, rest, offset) per label, in the dict's order: each name stores how
    many leading characters it shares with the one before, then the rest."""
    entries = []
    previous = ""
    for name, offset in labels.items():
        shared = _shared_prefix(previous, name)
        entries.append((shared, name[shared:], offset))
        previous = name
    return entries


@cache
def shim_meta_struct() -> Any:
    """The note as a ``construct`` Struct, made from FIELDS (imported on first use:
    reading a note needs it, writing one does not)."""
    import construct as cs

    text = cs.PascalString(cs.Int32ul, "utf8")
    region = cs.Struct("offset" / cs.Int32ul, "bits" / cs.Int8ul)
    label = cs.Struct(
        "shared" / cs.Int8ul,  # leading characters taken from the label before
        "rest" / cs.PascalString(cs.Int8ul, "ascii"),  # so a name has at most 255 characters
        "offset" / cs.Int16ul,
    )

    class FrontCodedLabels(cs.Adapter):
        """{name: offset} <-> label entries, in the dict's order."""

        def _decode(self, entries: Any, context: Any, path: Any) -> dict[str, int]:
            labels: dict[str, int] = {}
            previous = ""
            for entry in entries:
                if entry.shared > len(previous):
                    raise cs.ValidationError(
                        f"label shares {entry.shared} characters of {previous!r}"
                    )
                previous = previous[: entry.shared] + entry.rest
                labels[previous] = entry.offset
            return labels

        def _encode(self, labels: dict[str, int], context: Any, path: Any) -> list[dict]:
            return [
                {"shared": shared, "rest": rest, "offset": offset}
                for shared, rest, offset in front_coded(labels)
            ]

    kinds = {
        "format": cs.OneOf(cs.Int32ul, SHIM_META_FORMATS),
        "text": text,
        "u64": cs.Int64ul,
        "u16": cs.Int16ul,
        "sha256": cs.Bytes(SHA256_SIZE),
        "regions": cs.PrefixedArray(cs.Int16ul, region),
        "labels": FrontCodedLabels(cs.PrefixedArray(cs.Int16ul, label)),
    }
    members = []
    for name, kind, since in FIELDS:
        member = kinds[kind]
        if since > 1:
            member = cs.If(lambda this, since=since: this.format >= since, member)
        members.append(name / member)
    return cs.Struct(*members)


def __getattr__(name: str) -> Any:
    if name == "SHIM_META":  # the construct, for readers that want it by name
        return shim_meta_struct()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _text(value: str) -> bytes:
    data = value.encode()
    return TEXT_LENGTH.pack(len(data)) + data


def _encode(values: dict[str, Any]) -> bytes | None:
    """The note's bytes from FIELDS without construct; None when a value does not
    fit its field (the construct then raises what it raises for it)."""
    out = []
    try:
        if values["format"] not in SHIM_META_FORMATS:
            return None
        if len(values["original_sha256"]) != SHA256_SIZE:
            return None
        for name, kind, since in FIELDS:
            if since > values["format"]:
                continue
            value = values[name]
            if kind == "text":
                out.append(_text(value))
            elif kind == "sha256":
                out.append(bytes(value))
            elif kind == "regions":
                out.append(COUNT.pack(len(value)))
                out += [CODE_REGION_FORMAT.pack(r["offset"], r["bits"]) for r in value]
            elif kind == "labels":
                out.append(COUNT.pack(len(value)))
                for shared, rest, offset in front_coded(value):
                    name_bytes = rest.encode("ascii")
                    out += [
                        LABEL_BYTE.pack(shared),
                        LABEL_BYTE.pack(len(name_bytes)),
                        name_bytes,
                        LABEL_OFFSET.pack(offset),
                    ]
            else:
                out.append(NUMBER[kind].pack(value))
    except (struct.error, UnicodeEncodeError, TypeError, AttributeError):
        return None
    return b"".join(out)


@dataclass
class ShimMeta:
    """The metadata note's fields (FIELDS), decoded."""

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

    def field_values(self) -> dict[str, Any]:
        """The values of FIELDS, as the construct builds them."""
        values = asdict(self)
        values["options"] = json.dumps(self.options, sort_keys=True, separators=(",", ":"))
        values["code_regions"] = [{"offset": o, "bits": b} for o, b in self.code_regions]
        return values

    def build(self) -> bytes:
        values = self.field_values()
        encoded = _encode(values)
        return shim_meta_struct().build(values) if encoded is None else encoded

    @classmethod
    def parse(cls, desc: bytes) -> ShimMeta:
        parsed = shim_meta_struct().parse(desc)
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
