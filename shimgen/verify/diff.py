"""Compare two images the way their loaders see them, for regression tests.

Every category below is a list of differences (plain dicts, ready for JSON); an
empty list means "no difference". What only moves inside the file without
changing what Xen, QEMU or linux-loader read (where a table sits, the p_offset of
identical segment contents, padding nobody loads) is not a difference: it goes to
``ignored``, in words, so a reader knows it was seen and why it does not count.

Segments are paired by type, then by p_vaddr, then in table order; notes by where
libelf reads them from (PT_NOTE segments, SHT_NOTE sections, ``__xen_guest``),
then by type and occurrence, so that one changed note is one difference and an
inserted note does not shift every later one.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..read.check import Verdicts, evaluate
from ..read.image import Image, Note, Segment, read_image
from ..read.shim_view import CorruptShimNote, code_file_range, is_meta_note, shim_meta, view_of
from ..structs import XenNote
from ..structs.elf import SHT_NOBITS, SegmentType, elf_header
from ..structs.shim_meta import ShimMeta

CATEGORIES = (
    "header",
    "segments",
    "sections",
    "xen_notes",
    "other_notes",
    "verdicts",
    "shim_metadata",
    "shim_code",
    "bytes",
    "outside_bytes",
)
# ELF header fields a loader acts on; the others only say where tables are.
HEADER_FIELDS = ("e_type", "e_machine", "e_version", "e_entry", "e_flags")
LAYOUT_HEADER_FIELDS = ("e_phoff", "e_shoff", "e_ehsize", "e_phentsize", "e_shentsize")
SEGMENT_FIELDS = ("vaddr", "paddr", "filesz", "memsz", "flags", "align")
SECTION_FIELDS = ("type", "addr", "size", "align")
VERDICT_FIELDS = ("ok", "reasons", "warnings")
EI_OSABI = 7
MAX_RANGES = 64  # per segment or section: enough to locate a change, bounded for JSON
MERGE_GAP = 15  # equal bytes between two changed runs that still make one range
BLOCK = 4096  # compare big byte strings block by block, bytes only inside differing blocks
CONTEXT_LINES = 3  # of the unified diff of the shim's disassembly


@dataclass
class DiffReport:
    a: str
    b: str
    differences: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not any(self.differences.values())

    def summary(self) -> str:
        if self.equal:
            quiet = f" ({len(self.ignored)} layout-only changes ignored)" if self.ignored else ""
            return f"{self.a} and {self.b}: equal{quiet}"
        counts = ", ".join(
            f"{len(items)} {category.replace('_', ' ')}"
            for category, items in self.differences.items()
            if items
        )
        return f"{self.a} and {self.b}: different: {counts}"

    def to_text(self, width: int = 100) -> str:
        """What `shimgen diff` prints, without colour: a table per category of
        differences, the layout changes ignored, the summary line."""
        from .diff_text import render_text

        return render_text(self, width)

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "equal": self.equal,
            "differences": {k: v for k, v in self.differences.items() if v},
            "ignored": self.ignored,
        }


def diff_files(path_a: str | Path, path_b: str | Path) -> DiffReport:
    """BadInput (exit 3) when either file is not an image read_image accepts."""
    return diff_images(read_image(path_a), read_image(path_b))


def diff_images(a: Image, b: Image) -> DiffReport:
    report = DiffReport(a.path, b.path)
    ignored = report.ignored
    pairs, removed, added = match_segments(a.segments, b.segments)
    meta_a, meta_b = _read_meta(a), _read_meta(b)
    report.differences = {
        "header": _header_diff(a, b, ignored),
        "segments": _segments_diff(
            pairs, removed, added, ignored, lambda sa, sb: _moved(a, b, sa, sb)
        ),
        "sections": _sections_diff(a, b, ignored),
        "xen_notes": _xen_notes_diff(a, b, _container_pairs(pairs), ignored),
        "other_notes": _other_notes_diff(a, b, _container_pairs(pairs)),
        "verdicts": _verdicts_diff(evaluate(a), evaluate(b)),
        "shim_metadata": _meta_diff(meta_a, meta_b),
        "shim_code": _shim_code_diff(a, b, meta_a, meta_b),
        "bytes": _bytes_diff(a, b, pairs, meta_a),
        "outside_bytes": _outside_diff(a, b),
    }
    _padding_note(a, b, ignored)
    if a.size != b.size and report.equal:
        ignored.append(f"file size {a.size} -> {b.size} bytes: only layout differs")
    return report


# --- ELF header ----------------------------------------------------------------------


def _header(image: Image) -> dict[str, int]:
    return dict(elf_header(image.elf_class).unpack_from(image.data, 0))


def _header_facts(image: Image) -> dict[str, Any]:
    header = _header(image)
    facts = {"class": image.elf_class, "compressed": image.compressed}
    facts["osabi"] = image.data[EI_OSABI]
    return facts | {name.removeprefix("e_"): header[name] for name in HEADER_FIELDS}


def _header_diff(a: Image, b: Image, ignored: list[str]) -> list[dict[str, Any]]:
    ha, hb = _header(a), _header(b)
    tables = {"e_phoff": "program header table", "e_shoff": "section header table"}
    for name in LAYOUT_HEADER_FIELDS:
        if ha[name] == hb[name]:
            continue
        if name in tables:
            ignored.append(f"{tables[name]} moved: {name} {ha[name]:#x} -> {hb[name]:#x}")
        else:
            ignored.append(f"{name} {ha[name]} -> {hb[name]}: sizes of the tables' entries")
    return _field_changes(_header_facts(a), _header_facts(b))


def _field_changes(a: dict[str, Any], b: dict[str, Any], **extra: Any) -> list[dict[str, Any]]:
    return [
        {**extra, "change": "changed", "field": name, "a": a.get(name), "b": b.get(name)}
        for name in dict.fromkeys([*a, *b])
        if a.get(name) != b.get(name)
    ]


# --- segments ------------------------------------------------------------------------


def match_segments(
    a: Sequence[Segment], b: Sequence[Segment]
) -> tuple[list[tuple[Segment, Segment]], list[Segment], list[Segment]]:
    """Pairs (same type; same p_vaddr first, then table order), A-only, B-only.

    Grouped by type and address up front: linear in the number of segments, so a
    hostile image with thousands of segment types costs no more than a real one.
    """
    by_type_a: dict[int, list[Segment]] = {}
    by_type_b: dict[int, list[Segment]] = {}
    for segment in a:
        by_type_a.setdefault(segment.type, []).append(segment)
    for segment in b:
        by_type_b.setdefault(segment.type, []).append(segment)
    pairs: list[tuple[Segment, Segment]] = []
    removed: list[Segment] = []
    taken: set[int] = set()
    for kind, of_a in by_type_a.items():
        of_b = by_type_b.get(kind, [])
        at_address: dict[int, list[Segment]] = {}
        for twin in of_b:
            at_address.setdefault(twin.vaddr, []).append(twin)
        unmatched = []
        for segment in of_a:
            candidates = at_address.get(segment.vaddr)
            if candidates:
                twin = candidates.pop(0)
                taken.add(twin.index)
                pairs.append((segment, twin))
            else:
                unmatched.append(segment)
        rest = [t for t in of_b if t.index not in taken]
        for segment, twin in zip(unmatched, rest, strict=False):
            taken.add(twin.index)
            pairs.append((segment, twin))
        removed += unmatched[len(rest) :]
    added = [t for t in b if t.index not in taken]
    pairs.sort(key=lambda pair: pair[0].index)
    return pairs, removed, added


def segment_label(sa: Segment, sb: Segment | None = None) -> str:
    if sb is None or sa.index == sb.index:
        return f"{sa.type_name}[{sa.index}]"
    return f"{sa.type_name}[{sa.index}->{sb.index}]"


def _segment_facts(segment: Segment) -> dict[str, Any]:
    return {name: getattr(segment, name) for name in ("type_name", *SEGMENT_FIELDS)}


def _file_bytes(image: Image, offset: int, size: int) -> bytes:
    return image.data[offset : offset + size]


def _segments_diff(
    pairs: list[tuple[Segment, Segment]],
    removed: list[Segment],
    added: list[Segment],
    ignored: list[str],
    moved: Callable[[Segment, Segment], str],
) -> list[dict[str, Any]]:
    """moved(sa, sb) says what a p_offset change means for the pair's contents."""
    result: list[dict[str, Any]] = []
    for sa, sb in pairs:
        label = segment_label(sa, sb)
        facts_a = {name: getattr(sa, name) for name in SEGMENT_FIELDS}
        facts_b = {name: getattr(sb, name) for name in SEGMENT_FIELDS}
        result += _field_changes(facts_a, facts_b, segment=label)
        if sa.offset != sb.offset:
            ignored.append(f"{label}: p_offset {sa.offset:#x} -> {sb.offset:#x} ({moved(sa, sb)})")
    result += [
        {"segment": segment_label(s), "change": "removed", "field": "segment"}
        | {"a": _segment_facts(s), "b": None}
        for s in removed
    ]
    result += [
        {"segment": segment_label(s), "change": "added", "field": "segment"}
        | {"a": None, "b": _segment_facts(s)}
        for s in added
    ]
    order = _order_change([segment_label(sa, sb) for sa, sb in pairs], [sb for _, sb in pairs])
    if order:
        result.append({"segment": "program headers", "change": "order", "field": "order", **order})
    return result


def _moved(a: Image, b: Image, sa: Segment, sb: Segment) -> str:
    if _file_bytes(a, sa.offset, sa.filesz) == _file_bytes(b, sb.offset, sb.filesz):
        return "same contents"
    if sa.is_load:
        return "its bytes are compared under bytes"
    if sa.type == SegmentType.NOTE:
        return "its notes are compared under notes"
    return "contents differ, but no loader loads them"


def _order_change(labels: list[str], in_b: list[Segment]) -> dict[str, Any] | None:
    """Matched segments in another relative order (e.g. which PT_NOTE is last)."""
    b_order = sorted(range(len(in_b)), key=lambda n: in_b[n].index)
    if b_order == list(range(len(in_b))):
        return None
    return {"a": labels, "b": [labels[n] for n in b_order]}


# --- sections ------------------------------------------------------------------------


def _keyed(items: Iterable[Any], key: Callable[[Any], Any]) -> dict[tuple[Any, int], Any]:
    """Key each item by key(item) and its occurrence among items with the same key."""
    seen: dict[Any, int] = {}
    result = {}
    for item in items:
        k = key(item)
        result[(k, seen.get(k, 0))] = item
        seen[k] = seen.get(k, 0) + 1
    return result


def _sections_diff(a: Image, b: Image, ignored: list[str]) -> list[dict[str, Any]]:
    by_a = _keyed(a.sections[1:], lambda s: s.name)
    by_b = _keyed(b.sections[1:], lambda s: s.name)
    result: list[dict[str, Any]] = []
    moved = []
    for key in dict.fromkeys([*by_a, *by_b]):
        label = _occurrence_label(key)
        sa, sb = by_a.get(key), by_b.get(key)
        if sa is None or sb is None:
            change = "added" if sa is None else "removed"
            present = sa or sb
            facts = {name: getattr(present, name) for name in SECTION_FIELDS}
            result.append(
                {
                    "section": label,
                    "change": change,
                    "field": "section",
                    "a": facts if sb is None else None,
                    "b": facts if sa is None else None,
                }
            )
            continue
        facts_a = {name: getattr(sa, name) for name in SECTION_FIELDS}
        facts_b = {name: getattr(sb, name) for name in SECTION_FIELDS}
        result += _field_changes(facts_a, facts_b, section=label)
        if sa.offset != sb.offset:
            moved.append(label)
    if moved:
        ignored.append(
            f"{len(moved)} section(s) at other file offsets ({', '.join(moved)}): "
            "loaders read segments, and section notes are compared by content"
        )
    return result


def _occurrence_label(key: tuple[Any, int]) -> str:
    name, occurrence = key
    name = name or "(unnamed)"
    return name if occurrence == 0 else f"{name}#{occurrence + 1}"


# --- notes ---------------------------------------------------------------------------


def _source_kind(source: str) -> str:
    if source.startswith("PT_NOTE"):
        return "segments"
    if source.startswith("section"):
        return "sections"
    return "legacy"


def _container_pairs(pairs: list[tuple[Segment, Segment]]) -> dict[str, str]:
    """A's PT_NOTE source -> the source of its paired PT_NOTE in B. A note "moves" only
    when it leaves the pair of its PT_NOTE: an index shift alone is no change."""
    return {
        f"PT_NOTE[{sa.index}]": f"PT_NOTE[{sb.index}]"
        for sa, sb in pairs
        if sa.type == SegmentType.NOTE
    }


def _xen_notes_diff(
    a: Image, b: Image, containers: dict[str, str], ignored: list[str]
) -> list[dict[str, Any]]:
    sources = (
        ("segments", a.segment_xen_notes, b.segment_xen_notes),
        ("sections", a.section_xen_notes, b.section_xen_notes),
        ("legacy", a.legacy_xen_notes, b.legacy_xen_notes),
    )
    result: list[dict[str, Any]] = []
    for kind, notes_a, notes_b in sources:
        used = kind in (a.note_origin, b.note_origin)
        result += _compare_notes(
            kind,
            _keyed(notes_a, lambda n: n.name),
            _keyed(notes_b, lambda n: n.name),
            lambda n: {"value": n.value, "width": n.width},
            containers,
            used=used,
        )
        _order_within(kind, notes_a, notes_b, lambda n: n.name, ignored)
    last = _last_note_container(a), _last_note_container(b)
    if last[0] != last[1]:
        # linux-loader (Firecracker, Cloud Hypervisor) reads only the last PT_NOTE.
        result.append(
            {
                "note": "last PT_NOTE",
                "source": "segments",
                "change": "changed",
                "field": "notes",
                "a": last[0],
                "b": last[1],
                "used": True,
                "where": [],
            }
        )
    return _merge_same_bytes(result)


def _other_notes_diff(a: Image, b: Image, containers: dict[str, str]) -> list[dict[str, Any]]:
    def label(note: Note) -> str:
        return f"{note.owner or '(empty)'} type {note.type:#x}"

    result: list[dict[str, Any]] = []
    for kind in ("segments", "sections"):
        notes_a = [n for n in _other_notes(a) if _source_kind(n.source) == kind]
        notes_b = [n for n in _other_notes(b) if _source_kind(n.source) == kind]
        result += _compare_notes(
            kind,
            _keyed(notes_a, label),
            _keyed(notes_b, label),
            lambda n: {"desc": n.desc.hex()},
            containers,
            used=True,
        )
    return _merge_same_bytes(result)


def _other_notes(image: Image) -> list[Note]:
    """Non-Xen notes, without shimgen's metadata note (compared field by field)."""
    return [n for n in image.notes if not n.is_xen and not is_meta_note(n)]


def _compare_notes(
    kind: str,
    by_a: dict[tuple[Any, int], Any],
    by_b: dict[tuple[Any, int], Any],
    facts: Callable[[Any], dict[str, Any]],
    containers: dict[str, str],
    used: bool,
) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for key in dict.fromkeys([*by_a, *by_b]):
        na, nb = by_a.get(key), by_b.get(key)
        base = {"note": _occurrence_label(key), "source": kind}
        where = [n.source for n in (na, nb) if n is not None][:1]
        offsets = {"a_offset": getattr(na, "offset", None), "b_offset": getattr(nb, "offset", None)}
        if na is None or nb is None:
            change = "added" if na is None else "removed"
            value = facts(na or nb)
            result.append(
                {
                    **base,
                    "change": change,
                    "field": "note",
                    "a": value if nb is None else None,
                    "b": value if na is None else None,
                    "used": used,
                    "where": where,
                    **offsets,
                }
            )
            continue
        for change in _field_changes(facts(na), facts(nb)):
            result.append({**base, **change, "used": used, "where": where, **offsets})
        if kind == "segments" and containers.get(na.source) != nb.source:
            result.append(
                {**base, "change": "moved", "field": "container", "a": na.source, "b": nb.source}
                | {"used": used, "where": where, **offsets}
            )
    return result


def _merge_same_bytes(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One difference for one note seen twice (a PT_NOTE and the SHT_NOTE over the same
    bytes): same change, same file offsets -> one entry listing both places."""
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for number, entry in enumerate(entries):
        offsets = (entry.get("a_offset"), entry.get("b_offset"))
        # without a file offset (__xen_guest, "last PT_NOTE") there is nothing to share
        identity = offsets if offsets != (None, None) else (number,)
        key = (entry["note"], entry["change"], entry["field"], repr(entry["a"]), repr(entry["b"]))
        key += identity
        if key in merged:
            first = merged[key]
            first["where"] = first["where"] + entry["where"]
            first["used"] = first["used"] or entry["used"]
            continue
        merged[key] = dict(entry)
    for entry in merged.values():
        entry.pop("a_offset", None)
        entry.pop("b_offset", None)
    return list(merged.values())


def _order_within(
    kind: str,
    notes_a: list[Any],
    notes_b: list[Any],
    key: Callable[[Any], Any],
    ignored: list[str],
) -> None:
    """libelf takes the last of duplicate notes (reported as value changes); the order of
    distinct notes matters to no loader, so a reordering is only mentioned."""
    keys_a = list(_keyed(notes_a, key))
    keys_b = list(_keyed(notes_b, key))
    common_a = [k for k in keys_a if k in set(keys_b)]
    common_b = [k for k in keys_b if k in set(keys_a)]
    if common_a != common_b:
        ignored.append(f"Xen notes in {kind} are in another order (no loader depends on it)")


def _last_note_container(image: Image) -> list[str]:
    segments = [s for s in image.note_segments() if s.offset]
    if not segments:
        return []
    source = f"PT_NOTE[{segments[-1].index}]"
    return [_note_name(n) for n in image.notes if n.source == source]


def _note_name(note: Note) -> str:
    if note.is_xen:
        known = note.type in XenNote._value2member_map_
        return f"Xen {XenNote(note.type).name}" if known else f"Xen type {note.type}"
    return f"{note.owner or '(empty)'} type {note.type:#x}"


# --- verdicts -------------------------------------------------------------------------


def _verdicts_diff(va: Verdicts, vb: Verdicts) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for mode in ("pv", "pvh"):
        a, b = getattr(va, mode), getattr(vb, mode)
        facts_a = {name: getattr(a, name) for name in VERDICT_FIELDS}
        facts_b = {name: getattr(b, name) for name in VERDICT_FIELDS}
        result += _field_changes(facts_a, facts_b, mode=mode)
    return result


# --- shim metadata and code ----------------------------------------------------------


@dataclass(frozen=True)
class _Meta:
    meta: ShimMeta | None
    error: str | None = None  # the note is there but does not decode


def _read_meta(image: Image) -> _Meta:
    try:
        return _Meta(shim_meta(image))
    except CorruptShimNote as error:  # a damaged note is a fact, not a crash
        return _Meta(None, f"undecodable: {error.cause}")


def _meta_facts(meta: _Meta) -> dict[str, Any]:
    if meta.meta is None:
        return {"present": meta.error or False}
    return _flat_meta(meta.meta.to_json())


def _flat_meta(metadata: dict[str, Any]) -> dict[str, Any]:
    """ShimMeta.to_json() as one level of fields, the options as "options.NAME"."""
    facts = {"present": True, **{k: v for k, v in metadata.items() if k != "options"}}
    options = metadata.get("options") or {}
    return facts | {f"options.{key}": value for key, value in sorted(options.items())}


def _meta_diff(ma: _Meta, mb: _Meta) -> list[dict[str, Any]]:
    facts_a, facts_b = _meta_facts(ma), _meta_facts(mb)
    if facts_a["present"] is not True or facts_b["present"] is not True:
        # one side is not patched: its fields are absent, not changed one by one
        return _field_changes({"present": facts_a["present"]}, {"present": facts_b["present"]})
    return _field_changes(facts_a, facts_b)


def _line(offset: int, bits: int, raw: bytes, text: str) -> str:
    return f"+{offset:#06x} {bits}  {raw.hex(' '):<30} {text}".rstrip()


def _shim_lines(image: Image, meta: ShimMeta) -> list[str]:
    """One line per instruction or data row, addresses relative to the shim's start.

    The bytes are cut into 64-bit code, 32-bit code and data as the metadata note
    records them (read/shim_view.py, the same cut `inspect` shows), so a shim-code
    diff depends on what changed, not on where the shim sits; a changed constant in
    the data after the code shows as a changed data row.
    """
    view = view_of(image, meta)
    if view.code is None:
        return ["(shim code is outside every loadable segment)"]
    return [
        _line(i.address, i.bits, bytes.fromhex(i.bytes), f"{i.mnemonic} {i.operands}")
        for i in view.decode(relative=True)
    ]


def _shim_code_diff(a: Image, b: Image, ma: _Meta, mb: _Meta) -> list[dict[str, Any]]:
    def facts(meta: ShimMeta | None) -> dict[str, int] | None:
        return None if meta is None else {"vaddr": meta.shim_vaddr, "size": meta.shim_code_size}

    if ma.meta is None or mb.meta is None:
        return _code_presence(facts(ma.meta), facts(mb.meta))
    return _code_changes(
        (a.path, facts(ma.meta)),
        (b.path, facts(mb.meta)),
        _shim_lines(a, ma.meta),
        _shim_lines(b, mb.meta),
    )


def _code_presence(a: dict[str, int] | None, b: dict[str, int] | None) -> list[dict[str, Any]]:
    """Shim code on one side only (facts: vaddr, size): added or removed; none: []."""
    if a is None and b is None:
        return []
    return [{"change": "added" if a is None else "removed", "a": a, "b": b, "diff": []}]


def _code_changes(
    a: tuple[str, dict[str, int]],
    b: tuple[str, dict[str, int]],
    lines_a: list[str],
    lines_b: list[str],
) -> list[dict[str, Any]]:
    """One "changed" entry with the unified diff of two listings; a, b: (name, facts)."""
    if lines_a == lines_b:
        return []
    diff = difflib.unified_diff(
        lines_a, lines_b, fromfile=a[0], tofile=b[0], n=CONTEXT_LINES, lineterm=""
    )
    return [{"change": "changed", "a": a[1], "b": b[1], "diff": list(diff)}]


# --- bytes ----------------------------------------------------------------------------


def changed_ranges(x: bytes, y: bytes) -> list[tuple[int, int, int]]:
    """(offset, length, changed bytes) of the regions where x and y differ.

    Runs of differing bytes separated by fewer than MERGE_GAP equal bytes form one
    range (a rebuilt function is one range, not fifty), so length may include equal
    bytes; the third number counts only the differing ones. Bytes only one side has
    (a length change) are a range of their own.
    """
    common = min(len(x), len(y))
    ranges: list[tuple[int, int, int]] = []
    for block in range(0, common, BLOCK):
        end = min(block + BLOCK, common)
        if x[block:end] == y[block:end]:
            continue
        for position in range(block, end):
            if x[position] != y[position]:
                _extend(ranges, position, 1, MERGE_GAP)
    if len(x) != len(y):
        _extend(ranges, common, abs(len(x) - len(y)), 0)
    return ranges


def _extend(ranges: list[tuple[int, int, int]], offset: int, length: int, gap: int) -> None:
    if ranges and offset - (ranges[-1][0] + ranges[-1][1]) <= gap:
        start, _, changed = ranges[-1]
        ranges[-1] = (start, offset + length - start, changed + length)
    else:
        ranges.append((offset, length, length))


def _where(image: Image, file_start: int, length: int, meta: _Meta) -> str:
    """What a file range overlaps: sections, note segments, the shim's code."""
    end = file_start + length
    labels = [
        s.name
        for s in image.sections[1:]
        if s.type != SHT_NOBITS and s.size and s.offset < end and file_start < s.offset + s.size
    ]
    labels += [
        f"PT_NOTE[{s.index}]"
        for s in image.note_segments()
        if s.offset < end and file_start < s.offset + s.filesz
    ]
    if meta.meta is not None:
        code = code_file_range(image, meta.meta)
        if code and code[0] < end and file_start < code[1]:
            labels.append("shim code")
    return ", ".join(labels) or "-"


def _range_entries(
    ranges: list[tuple[int, int, int]], describe: Callable[[int, int], dict[str, Any]]
) -> dict[str, Any]:
    return {
        "ranges": [
            {"offset": offset, "length": length, "changed": changed, **describe(offset, length)}
            for offset, length, changed in ranges[:MAX_RANGES]
        ],
        "range_count": len(ranges),
        "bytes_changed": sum(changed for _, _, changed in ranges),
    }


def _bytes_diff(
    a: Image, b: Image, pairs: list[tuple[Segment, Segment]], meta_a: _Meta
) -> list[dict[str, Any]]:
    """The file bytes of each pair of PT_LOADs; offsets are relative to the segment."""
    result = []
    for sa, sb in pairs:
        if not (sa.is_load and sb.is_load):
            continue
        ranges = changed_ranges(
            _file_bytes(a, sa.offset, sa.filesz), _file_bytes(b, sb.offset, sb.filesz)
        )
        if not ranges:
            continue

        def describe(offset: int, length: int, sa: Segment = sa) -> dict[str, Any]:
            return {"vaddr": sa.vaddr + offset, "in": _where(a, sa.offset + offset, length, meta_a)}

        result.append({"segment": segment_label(sa, sb), **_range_entries(ranges, describe)})
    return result


def _outside_sections(image: Image) -> dict[tuple[Any, int], Any]:
    """Sections whose bytes no PT_LOAD covers (symbols, unloaded notes, __xen_guest)."""
    loads = [s for s in image.segments if s.is_load]

    def loaded(section: Any) -> bool:
        return any(
            s.offset <= section.offset and section.offset + section.size <= s.offset + s.filesz
            for s in loads
        )

    return _keyed(
        (s for s in image.sections[1:] if s.type != SHT_NOBITS and not loaded(s)),
        lambda s: s.name,
    )


def _outside_diff(a: Image, b: Image) -> list[dict[str, Any]]:
    by_a, by_b = _outside_sections(a), _outside_sections(b)
    result = []
    for key in by_a.keys() & by_b.keys():
        sa, sb = by_a[key], by_b[key]
        ranges = changed_ranges(
            _file_bytes(a, sa.offset, sa.size), _file_bytes(b, sb.offset, sb.size)
        )
        if ranges:
            result.append(
                {"section": _occurrence_label(key), **_range_entries(ranges, lambda o, n: {})}
            )
    # sections present on one side only are reported under "sections"
    return sorted(result, key=lambda entry: entry["section"])


def _covered(image: Image) -> list[tuple[int, int]]:
    """File ranges something reads: headers, tables, segments, sections."""
    header = _header(image)
    spans = [(0, elf_header(image.elf_class).size)]
    spans.append(
        (header["e_phoff"], header["e_phoff"] + header["e_phentsize"] * len(image.segments))
    )
    spans.append(
        (header["e_shoff"], header["e_shoff"] + header["e_shentsize"] * len(image.sections))
    )
    spans += [(s.offset, s.offset + s.filesz) for s in image.segments if s.type != SegmentType.NULL]
    spans += [(s.offset, s.offset + s.size) for s in image.sections if s.type != SHT_NOBITS]
    return sorted(spans)


def _padding(image: Image) -> bytes:
    """The bytes outside every header, table, segment and section, in file order."""
    pieces = []
    position = 0
    for start, end in _covered(image):
        if start > position:
            pieces.append(image.data[position:start])
        position = max(position, end)
    pieces.append(image.data[position:])
    return b"".join(pieces)


def _padding_note(a: Image, b: Image, ignored: list[str]) -> None:
    pa, pb = _padding(a), _padding(b)
    if pa != pb:
        ignored.append(
            f"padding outside every segment, section and table differs "
            f"({len(pa)} -> {len(pb)} bytes): no loader reads it"
        )


# --- reports (the snapshots of the pytest plugin) ----------------------------------------


def diff_reports(
    a: dict[str, Any], b: dict[str, Any], name_a: str = "A", name_b: str = "B"
) -> DiffReport:
    """Compare two `inspect --json` reports (or their stable form, which the pytest
    plugin's snapshots hold) by the rules diff_images follows, for what a report
    holds: header facts, segments, sections, notes, verdicts, findings, shim
    metadata and the shim's disassembly. Reports hold no segment bytes, so there
    is no bytes category; a p_offset change is layout, as for images."""
    image_a, image_b = _report_image(a, name_a), _report_image(b, name_b)
    report = DiffReport(name_a, name_b)
    ignored = report.ignored
    pairs, removed, added = match_segments(image_a.segments, image_b.segments)
    containers = _container_pairs(pairs)
    shim_a, shim_b = a.get("shim"), b.get("shim")
    report.differences = {
        "header": _field_changes(_report_header(a), _report_header(b)),
        "segments": _segments_diff(
            pairs, removed, added, ignored, lambda sa, sb: "file layout only"
        ),
        "sections": _sections_diff(image_a, image_b, ignored),
        "xen_notes": _xen_notes_diff(image_a, image_b, containers, ignored),
        "other_notes": _other_notes_diff(image_a, image_b, containers),
        "findings": _findings_diff(image_a, image_b),
        "verdicts": _verdicts_diff(_report_verdicts(a), _report_verdicts(b)),
        "shim_metadata": _field_changes(_report_meta(shim_a), _report_meta(shim_b)),
        "shim_code": _report_code_diff((name_a, shim_a), (name_b, shim_b)),
    }
    if a["size"] != b["size"] and report.equal:
        ignored.append(f"file size {a['size']} -> {b['size']} bytes: only layout differs")
    return report


def _records(cls: type, items: Iterable[dict[str, Any]], **convert: Callable[[Any], Any]) -> list:
    """Dataclass records from their asdict() form (to_json() of the reader's records)."""
    from dataclasses import fields

    names = [f.name for f in fields(cls)]
    return [
        cls(**{n: convert.get(n, lambda v: v)(item[n]) for n in names if n in item})
        for item in items
    ]


def _hex_bytes(text: str) -> bytes:
    """A desc or raw field; the stable form replaces the shimgen note's desc by words."""
    try:
        return bytes.fromhex(text)
    except ValueError:
        return text.encode()


def _report_image(report: dict[str, Any], name: str) -> Image:
    """The reader's records of a report, enough for the comparisons above (no bytes)."""
    from ..read.image import Finding, Section, XenNoteRecord

    xen = report["xen_notes"]

    def xen_notes(kind: str) -> list[XenNoteRecord]:
        return _records(XenNoteRecord, xen[kind], raw=_hex_bytes)

    return Image(
        path=name,
        size=report["size"],
        compressed=report["compressed"],
        elf_class=int(str(report["class"]).removeprefix("ELF")),
        machine=0,
        machine_name=report["machine"],
        elf_type=0,
        entry=report["entry"],
        segments=_records(Segment, report["segments"]),
        sections=_records(Section, report["sections"]),
        notes=_records(Note, report["notes"], desc=_hex_bytes),
        segment_xen_notes=xen_notes("segments"),
        section_xen_notes=xen_notes("sections"),
        legacy_xen_notes=xen_notes("legacy"),
        legacy_guest_text=xen["legacy_text"],
        findings=_records(Finding, report["findings"]),
        symbols={},
        data=b"",
    )


def _report_header(report: dict[str, Any]) -> dict[str, Any]:
    return {name: report[name] for name in ("class", "machine", "compressed", "entry")}


def _findings_diff(a: Image, b: Image) -> list[dict[str, Any]]:
    """Findings (malformed or suspicious things the reader saw) found on one side only."""

    def text(finding: Any) -> str:
        return f"{finding.severity}: {finding.message}"

    by_a = _keyed(a.findings, lambda f: f.where)
    by_b = _keyed(b.findings, lambda f: f.where)
    result = []
    for key in dict.fromkeys([*by_a, *by_b]):
        fa, fb = by_a.get(key), by_b.get(key)
        if fa is not None and fb is not None and fa == fb:
            continue
        change = "added" if fa is None else "removed" if fb is None else "changed"
        result.append(
            {
                "note": _occurrence_label(key),
                "change": change,
                "field": "finding",
                "a": None if fa is None else text(fa),
                "b": None if fb is None else text(fb),
            }
        )
    return result


def _report_verdicts(report: dict[str, Any]) -> Verdicts:
    from ..read.check import Verdict

    verdicts = report["verdicts"]
    return Verdicts(pv=Verdict(**verdicts["pv"]), pvh=Verdict(**verdicts["pvh"]))


def _report_meta(shim: dict[str, Any] | None) -> dict[str, Any]:
    """The shim metadata's fields, and what inspect adds: labels and where they came from."""
    if shim is None:
        return {"present": False}
    if "metadata" not in shim:
        return {"present": shim.get("error") or "undecodable"}
    facts = _flat_meta(shim["metadata"])
    facts |= {name: shim.get(name) for name in ("labels_source", "code_vaddr", "disasm_error")}
    return facts | {f"label {name}": at for name, at in (shim.get("labels") or {}).items()}


def _report_code_diff(
    a: tuple[str, dict[str, Any] | None], b: tuple[str, dict[str, Any] | None]
) -> list[dict[str, Any]]:
    def facts(shim: dict[str, Any] | None) -> dict[str, int] | None:
        if not shim or "metadata" not in shim:
            return None
        return {"vaddr": shim["code_vaddr"], "size": shim["code_size"]}

    facts_a, facts_b = facts(a[1]), facts(b[1])
    if facts_a is None or facts_b is None:
        return _code_presence(facts_a, facts_b)
    return _code_changes((a[0], facts_a), (b[0], facts_b), _listing(a[1]), _listing(b[1]))


def _listing(shim: dict[str, Any]) -> list[str]:
    """inspect's disassembly as diff_images' lines (offsets from the shim's start, so a
    moved shim with the same code shows no change), each label on a line of its own.
    The listing covers every shim byte once, in order: an offset is the bytes before."""
    lines: list[str] = []
    offset = 0
    for insn in shim.get("disassembly") or []:
        if insn.get("label"):
            lines.append(f"{insn['label']}:")
        raw = bytes.fromhex(insn["bytes"])
        lines.append(_line(offset, insn["bits"], raw, f"{insn['mnemonic']} {insn['operands']}"))
        offset += len(raw)
    return lines
