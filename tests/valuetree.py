"""Nested dicts of field values, as the tests build structures from them."""

from __future__ import annotations

from typing import Any


def leaf_paths(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of the non-dict values, depth first (e.g. "console.domU.mfn")."""
    paths = []
    for name, value in tree.items():
        if isinstance(value, dict):
            paths += leaf_paths(value, f"{prefix}{name}.")
        else:
            paths.append(f"{prefix}{name}")
    return paths
