"""`shimgen layout` and `shimgen decode`: the boot structures, and dumps of them.

``layout`` is a pahole-like view of the layout engine (offsets, sizes, types, holes
and padding), a C header (``--format c``) or JSON. ``decode`` reads one structure out
of a memory dump and flags what a loader or kernel would trip over.

Structures, construct and rich are imported inside the handlers: every shimgen
command builds this parser, and start-up time matters.
"""

from __future__ import annotations

import argparse
import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadInput, ExitCode
from .argtypes import unsigned
from .render import console, print_json

if TYPE_CHECKING:
    from ..structs.clayout import Record
    from ..structs.decode import Decoded

_EXIT_NOTE = (
    "An unknown STRUCT or --version is a usage error: one line listing the valid names, exit 2."
)


def register(commands: Any) -> None:
    _register_layout(commands)
    _register_decode(commands)


def _register_layout(commands: Any) -> None:
    layout = commands.add_parser(
        "layout",
        help="offsets, sizes and types of the Xen boot structures; C header export",
        description=(
            "Show the layout of one Xen boot structure, or all of them, as pahole "
            "would (offset, size, type, holes and padding), as a C header a kernel "
            "can include (--format c), or as JSON."
        ),
        epilog=f"Exit 0 on success. {_EXIT_NOTE}",
    )
    layout.add_argument(
        "struct",
        nargs="?",
        metavar="STRUCT",
        help="structure name, e.g. start_info or hvm_start_info (default: all of them)",
    )
    layout.add_argument(
        "--version",
        type=int,
        metavar="N",
        help="hvm_start_info version (0 or 1) or start_info word size (64 or 32)",
    )
    layout.add_argument(
        "--format",
        choices=("table", "c", "json"),
        default="table",
        help="table: pahole-like view (default); c: C header; "
        "json: {name: {size, fields, holes}} for every structure shown",
    )
    layout.set_defaults(handler=run_layout)


def _register_decode(commands: Any) -> None:
    decode = commands.add_parser(
        "decode",
        help="decode a memory dump of a boot structure and flag what is wrong in it",
        description=(
            "Decode the boot structure STRUCT found at --offset in FILE: every field "
            "with its offset and its meaning (SIF flag names, strings, E820 types), "
            "then the problems a loader or kernel would meet (bad magic, unknown flag "
            "bits, command line without NUL, non-zero reserved fields, unknown "
            "version). hvm_start_info takes its version from the dump, start_info its "
            "word size from the magic, unless --version says otherwise."
        ),
        epilog=(
            "Exit 0 when the structure is clean, 1 when there are findings, 3 when "
            f"FILE cannot be read or is too short. {_EXIT_NOTE}"
        ),
    )
    decode.add_argument("struct", metavar="STRUCT", help="structure name, e.g. hvm_start_info")
    decode.add_argument("file", metavar="FILE", help="memory dump holding the structure")
    decode.add_argument(
        "--offset",
        type=unsigned,
        default=0,
        metavar="N",
        help="byte offset of the structure in FILE; 0x for hex (default 0)",
    )
    decode.add_argument(
        "--version",
        type=int,
        metavar="N",
        help="hvm_start_info version (0 or 1) or start_info word size (64 or 32); "
        "default: read from the dump",
    )
    decode.add_argument("--json", action="store_true", help="print the decoded fields as JSON")
    decode.set_defaults(handler=run_decode)


# --- layout rows ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of the pahole-like view."""

    kind: str  # "member", "aggregate" (a nested struct/union), "hole", "padding"
    depth: int
    offset: int
    size: int
    c_type: str = ""  # as Xen's header declares it: unsigned long, xen_pfn_t, char[32]
    path: str = ""
    doc: str = ""
    fixed_type: str = ""  # the fixed-width type shimgen's C header uses


def layout_rows(record: Record, prefix: str = "", base: int = 0, depth: int = 0) -> Iterator[Row]:
    """Members depth first, with the gaps C alignment leaves between and after them."""
    from ..structs.clayout import CharArray, Record

    cursor = 0  # end of the furthest member so far, relative to the record
    for member in record.fields:
        offset = record.member_offset(member.name)
        if record.kind == "struct" and offset > cursor:
            yield Row("hole", depth, base + cursor, offset - cursor, path=prefix.rstrip("."))
        path = f"{prefix}{member.name}"
        kind = member.type
        if isinstance(kind, Record):
            yield Row("aggregate", depth, base + offset, kind.size, kind.kind, path, member.doc)
            yield from layout_rows(kind, f"{path}.", base + offset, depth + 1)
        elif isinstance(kind, CharArray):
            c_type = f"char[{kind.length}]"
            yield Row("member", depth, base + offset, kind.size, c_type, path, member.doc, c_type)
        else:
            yield Row(
                "member",
                depth,
                base + offset,
                kind.size,
                kind.c_name,
                path,
                member.doc,
                kind.fixed_c_name,
            )
        cursor = max(cursor, offset + kind.size)
    if record.size > cursor:
        yield Row("padding", depth, base + cursor, record.size - cursor, path=prefix.rstrip("."))


def _summary(record: Record, rows: list[Row]) -> dict[str, int]:
    holes = [row for row in rows if row.kind == "hole"]
    padding = [row for row in rows if row.kind == "padding"]
    return {
        "size": record.size,
        "align": record.align,
        "members": sum(row.kind == "member" for row in rows),
        "holes": len(holes),
        "sum_holes": sum(row.size for row in holes),
        "padding": sum(row.size for row in padding),
    }


def _layout_json(record: Record) -> dict[str, Any]:
    rows = list(layout_rows(record))
    fields = [
        {
            "path": row.path,
            "offset": row.offset,
            "size": row.size,
            "type": row.c_type,
            "fixed_type": row.fixed_type,
            "doc": row.doc,
        }
        for row in rows
        if row.kind == "member"
    ]
    gaps = [
        {"kind": row.kind, "offset": row.offset, "size": row.size, "in": row.path}
        for row in rows
        if row.kind in ("hole", "padding")
    ]
    return {"c_name": record.c_name, **_summary(record, rows), "fields": fields, "gaps": gaps}


# --- layout ---------------------------------------------------------------------------------


def _selected(args: argparse.Namespace) -> list[tuple[str, Record]]:
    from ..structs.decode import UnknownStructure, select_structure, structure_names

    if args.struct is None:
        if args.version is not None:
            raise UnknownStructure("--version needs a STRUCT to apply to")
        return [select_structure(name) for name in structure_names()]
    return [select_structure(args.struct, args.version)]


def run_layout(args: argparse.Namespace) -> int:
    selected = _selected(args)
    if args.format == "c":
        from ..structs.cheader import render_header

        print(render_header([name for name, _ in selected]), end="")
    elif args.format == "json":
        print_json({name: _layout_json(record) for name, record in selected})
    else:
        out = console()
        for name, record in selected:
            out.print(_layout_table(name, record))
            out.print()
    return int(ExitCode.OK)


def _layout_table(name: str, record: Record) -> Any:
    from rich.table import Table
    from rich.text import Text

    rows = list(layout_rows(record))
    summary = _summary(record, rows)
    table = Table(
        title=f"{record.c_name} ({name}): {record.size} bytes",
        caption=(
            f"size: {summary['size']}, members: {summary['members']}, "
            f"holes: {summary['holes']}, sum holes: {summary['sum_holes']}, "
            f"padding: {summary['padding']}"
        ),
        title_justify="left",
        caption_justify="left",
    )
    table.add_column("offset", justify="right", no_wrap=True)
    table.add_column("hex", justify="right", no_wrap=True, style="dim")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("field", no_wrap=True)
    table.add_column("comment", overflow="fold")
    for row in rows:
        place = (str(row.offset), f"{row.offset:#x}", str(row.size))
        if row.kind in ("hole", "padding"):
            # pahole's wording, so the view reads the same as the tool people know.
            what = "hole, try to pack" if row.kind == "hole" else "padding"
            gap = Text(f"/* XXX {row.size} bytes {what} */", style="yellow")
            table.add_row(*place, "", "", gap)
        else:
            indent = "  " * row.depth
            label = f"{row.c_type} {{" if row.kind == "aggregate" else row.c_type
            # Nested members show their own name under their parent, as pahole does;
            # the dotted path is in --format json and in decode.
            name = row.path.rsplit(".", 1)[-1]
            # Text, not markup: "char[32]" would read as a style tag.
            table.add_row(*place, Text(f"{indent}{label}"), Text(f"{indent}{name}"), Text(row.doc))
    return table


# --- decode -----------------------------------------------------------------------------------


def _read_dump(path: str) -> bytes | mmap.mmap:
    """The dump's bytes, mapped rather than read: core dumps can be gigabytes."""
    try:
        with Path(path).open("rb") as handle:
            try:
                return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError:  # an empty file cannot be mapped
                return handle.read()
    except OSError as error:
        raise BadInput(f"{path}: cannot read: {error.strerror or error}") from None


def run_decode(args: argparse.Namespace) -> int:
    from ..structs.decode import decode, select_structure

    select_structure(args.struct)  # an unknown name is a usage error before any I/O
    data = _read_dump(args.file)
    decoded = decode(args.struct, data, args.offset, args.version, source=args.file)
    if args.json:
        print_json({"file": args.file, **decoded.to_json()})
    else:
        _print_decoded(args.file, decoded)
    return int(ExitCode.OK if decoded.clean else ExitCode.FAILED)


def _value_text(value: int | bytes, text: str) -> str:
    if isinstance(value, int) and value > 9:
        return f"{text} ({value})"
    return text


def _print_decoded(path: str, decoded: Decoded) -> None:
    from rich.table import Table
    from rich.text import Text

    out = console()
    how = f"; layout from the {decoded.chosen_by}" if decoded.chosen_by else ""
    table = Table(
        title=(
            f"{decoded.name} at offset {decoded.offset:#x} in {path} "
            f"({decoded.record.size} bytes{how})"
        ),
        title_justify="left",
    )
    table.add_column("offset", justify="right", no_wrap=True)
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("meaning", overflow="fold")
    flagged = {finding.field for finding in decoded.findings}
    for field in decoded.fields:
        style = "bold red" if field.path in flagged else None
        value = _value_text(field.value, field.text)
        # Text, not markup: a dump's strings may hold anything, "[" included.
        cells = (field.path, value, field.meaning)
        table.add_row(f"{field.offset:#x}", *(Text(cell) for cell in cells), style=style)
    out.print(table)
    if decoded.clean:
        out.print(Text("no problems found", style="green"))
    for finding in decoded.findings:
        where = f"{finding.field}: " if finding.field else ""
        out.print(Text.assemble(("problem ", "bold red"), f"{where}{finding.message}"))
