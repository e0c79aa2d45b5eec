"""Shared rendering helpers: one rich console, JSON output for scripts."""

from __future__ import annotations

import json
import sys
from typing import Any


def console():  # -> rich.console.Console, imported lazily to keep start-up fast
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


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
