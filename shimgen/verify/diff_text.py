"""The text of a structural diff, as `shimgen diff` prints it: a table per category of
differences, the layout-only changes ignored, the summary line. The CLI prints it on
a terminal; ``DiffReport.to_text`` renders it without colour for scripts and the
pytest plugin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SHOWN_RANGES = 6  # per row of the bytes tables; --json lists up to diff.MAX_RANGES
CHANGE_STYLE = {"added": "green", "removed": "red", "moved": "yellow", "order": "yellow"}


def render_text(report: Any, width: int = 100) -> str:
    """What `shimgen diff` prints for report, as plain text (no colour) width columns wide."""
    import io

    from rich.console import Console

    buffer = io.StringIO()
    out = Console(file=buffer, width=width, highlight=False, soft_wrap=False, color_system=None)
    show(report, out)
    return "".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines())


def show(report: Any, out: Any) -> None:
    """Print report on the rich console out: a table per category, the ignored layout
    changes, the summary line."""
    for category, items in report.differences.items():
        if items:
            for renderable in _RENDERERS.get(category, _generic)(category, items):
                out.print(renderable)
    # one line each, however narrow the terminal: scripts and eyes grep these
    if report.ignored:
        out.print("[dim]ignored (file layout only):[/]")
        for line in report.ignored:
            out.print(f"[dim]  {_esc(line)}[/]", soft_wrap=True)
    colour = "green" if report.equal else "red"
    out.print(f"[{colour}]{_esc(report.summary())}[/]", soft_wrap=True)


MAX_ROWS = 200  # per table: a hostile image can differ in 65536 notes; --json has all


def _table(title: str, *columns: str) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left", title_style="bold")
    for column in columns:
        table.add_column(column)
    return table


def _value(value: Any, name: str = "") -> str:
    """Numbers in hex (addresses, sizes), flags with their letters, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:#x} ({_flags(value)})" if name == "flags" else f"{value:#x}"
    if isinstance(value, list):
        return "\n".join(_value(v) for v in value) if value else "[]"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_value(v, k)}" for k, v in value.items())
    return repr(value) if isinstance(value, str) else str(value)


def _flags(value: int) -> str:
    return "".join(letter if value & bit else "-" for letter, bit in (("R", 4), ("W", 2), ("X", 1)))


def _change(entry: dict[str, Any]) -> str:
    change = entry["change"]
    style = CHANGE_STYLE.get(change)
    return f"[{style}]{change}[/]" if style else change


def _title(category: str) -> str:
    return {
        "header": "ELF header",
        "segments": "Segments",
        "sections": "Sections",
        "xen_notes": "Xen notes",
        "other_notes": "Other notes",
        "verdicts": "PV/PVH verdicts",
        "shim_metadata": "Shim metadata",
        "shim_code": "Shim code",
        "bytes": "Changed bytes in segments (offsets from the segment's start)",
        "outside_bytes": "Changed bytes outside segments (offsets from the section's start)",
    }.get(category, category)


def _esc(text: str) -> str:
    """Text from an image, shown as it is, never read as rich markup."""
    from rich.markup import escape

    return escape(text)


def _item(entry: dict[str, Any]) -> str:
    """What a difference is about: a segment, section, note or mode (header and
    metadata differences are about the one header or note there is)."""
    for key in ("segment", "section", "note", "mode"):
        if entry.get(key):
            item = _esc(str(entry[key]))
            if entry.get("where"):
                item += f"\n[dim]{_esc(', '.join(entry['where']))}[/]"
            return item
    return ""


def _generic(category: str, items: list[dict[str, Any]]) -> list[Any]:
    """One row per difference: item (when there is one), field, change, A, B."""
    items_column = any(_item(entry) for entry in items)
    columns = (
        ("item", "field", "change", "A", "B") if items_column else ("field", "change", "A", "B")
    )
    table = _table(_title(category), *columns)
    for entry in items[:MAX_ROWS]:
        name = entry.get("field", "")
        row = [
            _esc(str(name)),
            _change(entry),
            _esc(_value(entry.get("a"), name)),
            _esc(_value(entry.get("b"), name)),
        ]
        table.add_row(*([_item(entry)] if items_column else []), *row)
    if len(items) > MAX_ROWS:
        table.add_row(f"[dim]… {len(items) - MAX_ROWS} more: see --json[/]")
    return [table]


def _shim_code(category: str, items: list[dict[str, Any]]) -> list[Any]:
    from rich.text import Text

    result: list[Any] = [Text(_title(category), style="bold")]
    for entry in items:
        if entry["change"] != "changed":
            side = entry["a"] or entry["b"]
            result.append(f"{_change(entry)}: {side['size']} bytes at {side['vaddr']:#x}")
            continue
        text = Text()
        for line in entry["diff"]:
            style = {"+": "green", "-": "red", "@": "cyan"}.get(line[:1], "")
            text.append(line + "\n", style=style)
        result.append(text)
    return result


def _bytes(category: str, items: list[dict[str, Any]]) -> list[Any]:
    table = _table(_title(category), "where", "ranges (offset +length, in)", "ranges", "bytes")
    for entry in items:
        shown = [
            f"{r['offset']:#x} +{r['length']:#x}"
            + (f" @ {r['vaddr']:#x}" if "vaddr" in r else "")
            + (f"  {_esc(str(r['in']))}" if r.get("in", "-") != "-" else "")
            for r in entry["ranges"][:SHOWN_RANGES]
        ]
        if entry["range_count"] > SHOWN_RANGES:
            shown.append(f"… {entry['range_count'] - SHOWN_RANGES} more")
        table.add_row(
            _esc(str(entry.get("segment") or entry.get("section", ""))),
            "\n".join(shown),
            str(entry["range_count"]),
            str(entry["bytes_changed"]),
        )
    return [table]


_RENDERERS: dict[str, Callable[[str, list[dict[str, Any]]], list[Any]]] = {
    "shim_code": _shim_code,
    "bytes": _bytes,
    "outside_bytes": _bytes,
}
