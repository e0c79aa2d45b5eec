"""argparse types the commands share: numbers as users write them (0x1000, 4096)."""

from __future__ import annotations

import argparse


def unsigned(text: str) -> int:
    """A non-negative integer, in any base Python reads (0x, 0o, 0b or decimal)."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def u64(text: str) -> int:
    """An unsigned integer that fits in 64 bits (an address, a u64 field)."""
    value = unsigned(text)
    if value >= 1 << 64:
        raise argparse.ArgumentTypeError(f"out of range for 64 bits: {text!r}")
    return value
