"""Decode a memory dump of a boot structure and say what looks wrong in it.

A dump is whatever someone captured from a guest (``xl dump-core``, a QEMU
``pmemsave``, a debugger): the structure sits at some offset in it. Decoding gives
every leaf field in layout order with its offset and a reading in words (SIF flag
names, strings up to their NUL, E820 type names), plus *findings*: the things a
loader or kernel would trip over (bad magic, unknown flag bits, a command line
without its NUL, non-zero reserved fields, an unknown version).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shimgen.errors import BadInput, ExitCode, ShimgenError

from .boot import (
    HVM_START_MAGIC,
    SIF_PM_MASK,
    START_INFO_MAGIC,
    START_INFO_MAGIC_PREFIX,
    E820Type,
    StartInfoFlags,
    boot_structures,
    hvm_start_info,
    start_info,
)
from .clayout import CharArray, Leaf, Record

_KNOWN_SIF_BITS = sum(int(bit) for bit in StartInfoFlags) | SIF_PM_MASK


class UnknownStructure(ShimgenError):
    """A structure name or version shimgen does not know: a usage error (exit 2)."""

    exit_code = ExitCode.USAGE


# --- choosing the structure ------------------------------------------------------------


def _version_families() -> dict[str, dict[int, str]]:
    """CLI name -> {version: CLI name} for structures that come in versions.

    ``--version`` picks the hvm_start_info version (0, 1) or the start_info word size
    (64, 32). The names come from boot_structures(), matched by identity, so a
    renamed structure cannot silently drop out of its family.
    """
    names = {id(record): name for name, record in boot_structures().items()}
    hvm = {version: names[id(hvm_start_info(version))] for version in (1, 0)}
    pv = {bits: names[id(start_info(bits))] for bits in (64, 32)}
    return {name: family for family in (hvm, pv) for name in family.values()}


def structure_names() -> list[str]:
    return list(boot_structures())


def select_structure(name: str, version: int | None = None) -> tuple[str, Record]:
    """The CLI name and record for ``name``, optionally another version of it."""
    structures = boot_structures()
    if name not in structures:
        raise UnknownStructure(f"unknown structure {name!r}; valid names: {', '.join(structures)}")
    if version is None:
        return name, structures[name]
    family = _version_families().get(name)
    if family is None:
        raise UnknownStructure(f"{name} has no versions; drop --version")
    if version not in family:
        choices = ", ".join(str(known) for known in sorted(family))
        raise UnknownStructure(f"{name} has no version {version}; valid: {choices}")
    chosen = family[version]
    return chosen, structures[chosen]


def default_version(name: str) -> int | None:
    """The version number that ``name`` itself stands for, if it has versions."""
    family = _version_families().get(name, {})
    return next((version for version, member in family.items() if member == name), None)


# --- results ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """Something in the dump a loader or kernel would reject or misread."""

    field: str  # dotted path, or "" for the structure as a whole
    code: str  # stable identifier for scripts: bad-magic, unknown-flags, ...
    message: str

    def to_json(self) -> dict[str, str]:
        return {"field": self.field, "code": self.code, "message": self.message}


@dataclass(frozen=True)
class DecodedField:
    path: str
    offset: int  # from the start of the structure
    size: int
    c_type: str
    value: int | bytes
    meaning: str = ""  # the value in words: flag names, decoded string, E820 type

    @property
    def text(self) -> str:
        """The value as a person reads it: strings decoded, numbers in hex."""
        if isinstance(self.value, bytes):
            return repr(c_string(self.value).decode("utf-8", "backslashreplace"))
        return f"{self.value:#x}"

    def to_json(self) -> dict[str, Any]:
        value: Any = self.value
        if isinstance(value, bytes):
            value = c_string(value).decode("utf-8", "backslashreplace")
        return {
            "path": self.path,
            "offset": self.offset,
            "size": self.size,
            "type": self.c_type,
            "value": value,
            "meaning": self.meaning,
        }


@dataclass(frozen=True)
class Decoded:
    name: str  # CLI name of the layout used
    record: Record
    offset: int  # where the structure starts in the dump
    fields: list[DecodedField]
    findings: list[Finding] = field(default_factory=list)
    chosen_by: str = ""  # how the layout was picked when the dump decided it

    @property
    def clean(self) -> bool:
        return not self.findings

    def field(self, path: str) -> DecodedField:
        return next(decoded for decoded in self.fields if decoded.path == path)

    def to_json(self) -> dict[str, Any]:
        return {
            "structure": self.name,
            "offset": self.offset,
            "size": self.record.size,
            "chosen_by": self.chosen_by,
            "fields": [decoded.to_json() for decoded in self.fields],
            "findings": [finding.to_json() for finding in self.findings],
        }


# --- reading values in words ------------------------------------------------------------


def c_string(raw: bytes) -> bytes:
    """The bytes of a C char array up to (not including) its first NUL."""
    return raw.split(b"\0", 1)[0]


def sif_names(flags: int) -> str:
    """SIF_* names of ``flags``, with power-management and unknown bits in hex."""
    names = [f"SIF_{bit.name}" for bit in StartInfoFlags if flags & bit]
    if flags & SIF_PM_MASK:
        names.append(f"SIF_PM({(flags & SIF_PM_MASK) >> 8:#x})")
    if flags & ~_KNOWN_SIF_BITS:
        names.append(f"unknown {flags & ~_KNOWN_SIF_BITS:#x}")
    # Spaces around "|" let a narrow table wrap between names, not inside one.
    return " | ".join(names) if names else "none"


def e820_name(value: int) -> str:
    try:
        return E820Type(value).name
    except ValueError:
        return "not a type Xen defines (treated as reserved)"


def _meaning(record: Record, leaf: Leaf, value: int | bytes) -> str:
    last = leaf.path.rsplit(".", 1)[-1]
    if isinstance(value, bytes):
        if record.name == "start_info" and last == "magic":
            return "ok" if c_string(value).startswith(START_INFO_MAGIC_PREFIX) else "bad magic"
        return "" if b"\0" in value else "no NUL terminator"
    if last == "flags":
        return sif_names(value)
    if record.name == "hvm_memmap_table_entry" and last == "type":
        return e820_name(value)
    if record.name == "hvm_start_info" and last == "magic":
        return "ok" if value == HVM_START_MAGIC else f"expected {HVM_START_MAGIC:#x}"
    if last.endswith("_paddr") and value == 0 and record.name == "hvm_start_info":
        return "absent"
    return ""


# --- findings per structure ---------------------------------------------------------------

Checker = Callable[[Record, dict[str, int | bytes]], list[Finding]]


def _flag_findings(values: dict[str, int | bytes]) -> list[Finding]:
    flags = values["flags"]
    assert isinstance(flags, int)
    unknown = flags & ~_KNOWN_SIF_BITS
    if not unknown:
        return []
    message = f"flags has bits no SIF_* flag defines: {unknown:#x}"
    return [Finding("flags", "unknown-flags", message)]


def _reserved_findings(values: dict[str, int | bytes]) -> list[Finding]:
    return [
        Finding(path, "reserved-nonzero", f"{path} must be zero, is {value:#x}")
        for path, value in values.items()
        if path.rsplit(".", 1)[-1] == "reserved" and value != 0
    ]


def _check_start_info(record: Record, values: dict[str, int | bytes]) -> list[Finding]:
    findings = _flag_findings(values)
    magic = values["magic"]
    assert isinstance(magic, bytes)
    text = c_string(magic)
    shown = text.decode("ascii", "backslashreplace")
    bits = record.size_of("nr_pages") * 8
    if not text.startswith(START_INFO_MAGIC_PREFIX):
        prefix = START_INFO_MAGIC_PREFIX.decode()
        findings.append(
            Finding(
                "magic",
                "bad-magic",
                f"bad magic {shown!r}: a start_info magic starts with {prefix!r}",
            )
        )
    else:
        # A right-looking magic for the other word size means the wrong layout was picked.
        for other_bits, other_magic in START_INFO_MAGIC.items():
            if other_bits != bits and text == other_magic:
                findings.append(
                    Finding(
                        "magic",
                        "word-size-mismatch",
                        f"magic {shown!r} is a {other_bits}-bit guest's, decoded with the "
                        f"{bits}-bit layout (use --version {other_bits})",
                    )
                )
    cmd_line = values["cmd_line"]
    assert isinstance(cmd_line, bytes)
    if b"\0" not in cmd_line:
        findings.append(
            Finding(
                "cmd_line",
                "unterminated-string",
                f"cmd_line has no NUL in its {len(cmd_line)} bytes",
            )
        )
    return findings


def _check_hvm_start_info(record: Record, values: dict[str, int | bytes]) -> list[Finding]:
    findings = _flag_findings(values)
    magic, version = values["magic"], values["version"]
    assert isinstance(magic, int) and isinstance(version, int)
    if magic != HVM_START_MAGIC:
        findings.append(
            Finding("magic", "bad-magic", f"bad magic {magic:#x}, expected {HVM_START_MAGIC:#x}")
        )
    layout_version = 1 if "memmap_paddr" in values else 0
    if version not in (0, 1):
        findings.append(Finding("version", "unknown-version", f"unknown version {version}"))
    elif version < layout_version:
        findings.append(
            Finding(
                "version",
                "version-mismatch",
                f"version field is {version} but decoded with the v{layout_version} layout: "
                "the fields after rsdp_paddr are not part of the structure",
            )
        )
    findings += _count_without_table(values, "nr_modules", "modlist_paddr")
    if layout_version >= 1:
        findings += _count_without_table(values, "memmap_entries", "memmap_paddr")
    return findings + _reserved_findings(values)


def _count_without_table(values: dict[str, int | bytes], count: str, table: str) -> list[Finding]:
    if values[count] and not values[table]:
        return [
            Finding(table, "missing-table", f"{count} is {values[count]} but {table} is 0 (absent)")
        ]
    return []


def _check_reserved_only(record: Record, values: dict[str, int | bytes]) -> list[Finding]:
    return _reserved_findings(values)


# Keyed by the C name of the record, so every version and word size shares its checks.
_CHECKERS: dict[str, Checker] = {
    "start_info": _check_start_info,
    "hvm_start_info": _check_hvm_start_info,
    "hvm_modlist_entry": _check_reserved_only,
    "hvm_memmap_table_entry": _check_reserved_only,
}


# --- decoding ------------------------------------------------------------------------------


def _leaf_value(record: Record, leaf: Leaf, raw: bytes) -> int | bytes:
    """A leaf's value read straight from the bytes at the layout engine's offset."""
    chunk = raw[leaf.offset : leaf.offset + leaf.size]
    if is_char_array(record, leaf.path):
        return chunk
    return int.from_bytes(chunk, "little")


def _parsed_value(container: Any, path: str) -> Any:
    for part in path.split("."):
        container = container[part]
    return container


def _need(data: bytes, offset: int, size: int, what: str, source: str) -> None:
    available = max(len(data) - offset, 0)
    if available < size:
        raise BadInput(
            f"{source}: too short for {what}: needs {size} bytes at offset {offset:#x}, "
            f"only {available} available"
        )


def _auto_select(name: str, data: bytes, offset: int, source: str) -> tuple[str, Record, str]:
    """Pick the layout the dump itself declares (hvm version field, start_info magic)."""
    chosen, record = select_structure(name)
    # Only the family's plain name is auto-detected: hvm_start_info_v0 or
    # start_info_x86_32 asked for by name are taken at their word.
    if record is hvm_start_info(1):
        _need(data, offset, record.offset_of("version") + 4, f"{name} (magic and version)", source)
        version = int.from_bytes(data[offset + 4 : offset + 8], "little")
        if version in (0, 1):
            chosen, record = select_structure(name, version)
            return chosen, record, f"version field ({version})"
        # Newer versions only append fields: read the newest layout, report the version.
        chosen, record = select_structure(name, 1)
        return chosen, record, f"version field ({version}, unknown: read as v1)"
    if record is start_info(64):
        magic = c_string(data[offset : offset + 32])
        for bits, known in START_INFO_MAGIC.items():
            if magic == known and record is not start_info(bits):
                chosen, record = select_structure(name, bits)
                return chosen, record, f"magic ({known.decode()})"
    return chosen, record, ""


def decode(
    name: str,
    data: bytes,
    offset: int = 0,
    version: int | None = None,
    source: str = "dump",
) -> Decoded:
    """Decode the structure ``name`` found at ``offset`` in ``data``.

    With ``version`` None, hvm_start_info takes its version from the dump's version
    field and start_info its word size from the magic; otherwise ``version`` picks
    (0/1 for hvm_start_info, 64/32 for start_info).
    """
    if offset < 0 or offset > len(data):
        raise BadInput(f"{source}: offset {offset:#x} is outside the {len(data)}-byte dump")
    if version is None:
        chosen, record, chosen_by = _auto_select(name, data, offset, source)
    else:
        chosen, record = select_structure(name, version)
        chosen_by = ""
    _need(data, offset, record.size, chosen, source)
    raw = bytes(data[offset : offset + record.size])
    parsed = record.parse(raw)
    fields: list[DecodedField] = []
    values: dict[str, int | bytes] = {}
    for leaf in record.layout():
        value = _leaf_value(record, leaf, raw)
        # The construct and the layout engine must agree; a mismatch is a bug here.
        if _parsed_value(parsed, leaf.path) != value:
            raise AssertionError(f"construct and layout disagree on {chosen}.{leaf.path}")
        values[leaf.path] = value
        fields.append(
            DecodedField(
                leaf.path, leaf.offset, leaf.size, leaf.c_type, value, _meaning(record, leaf, value)
            )
        )
    checker = _CHECKERS.get(record.name, _check_reserved_only)
    order = {path: index for index, path in enumerate(values)}
    findings = sorted(checker(record, values), key=lambda finding: order.get(finding.field, -1))
    return Decoded(chosen, record, offset, fields, findings, chosen_by)


def is_char_array(record: Record, path: str) -> bool:
    """Whether ``path`` in ``record`` is a char array (a string) rather than a number."""
    parts = path.split(".")
    current: Record = record
    for part in parts[:-1]:
        current = next(member.type for member in current.fields if member.name == part)  # type: ignore[assignment]
    member = next(member for member in current.fields if member.name == parts[-1])
    return isinstance(member.type, CharArray)
