"""Shared rendering helpers: one rich console, JSON output for scripts."""

from __future__ import annotations

import json
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on the patch path
if TYPE_CHECKING:
    from typing import Any

# Output to a file, a pipe or a CI log has no width to fit: rich would take 80
# columns and cut what does not fit ("0x4dd…"). Lines that wide are never reached.
UNBOUNDED_WIDTH = 1 << 16


def console():  # -> rich.console.Console, imported lazily to keep start-up fast
    """rich's console for stdout: fitted to a terminal; at full width to anything else,
    so that no number or digest is cut or folded."""
    from rich.console import Console

    if sys.stdout.isatty():
        return Console(highlight=False, soft_wrap=False)
    return Console(highlight=False, soft_wrap=False, width=UNBOUNDED_WIDTH)


def digest_text(hexdigest: str, out: Any) -> str:
    """A digest for a human: its first 16 digits in a terminal, whole anywhere else."""
    return f"{hexdigest[:16]}…" if out.is_terminal else hexdigest


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=_jsonable)
    sys.stdout.write("\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if hasattr(value, "to_json"):
        return value.to_json()
    raise TypeError(f"cannot render {type(value).__name__} as JSON")


def hex_or_none(value: int | None) -> str:
    return "-" if value is None else f"{value:#x}"
