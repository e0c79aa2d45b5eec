"""Structure-aware mutations of a seed image, as a hypothesis strategy.

Most random bit flips land in code or padding and change nothing a reader looks
at, so the mutations here aim at what readers trust: the fields of the ELF header,
of the program and section headers and of the note headers the file points at
(`elf.field_spots`), set to boundary values (0, all ones, 2**32, the file size...).
Truncation, byte flips, splices, insertions and gzip wrapping cover the rest.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from .elf import FieldSpot, field_spots

BOUNDARY_VALUES = (
    0,
    1,
    2,
    3,
    4,
    8,
    0xC,
    0x10,
    0x34,
    0x38,
    0x40,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0xFFF,
    0x1000,
    0x7FFF,
    0x8000,
    0xFFFE,
    0xFFFF,
    0x10000,
    0x100000,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFF0,
    0xFFFFFFFC,
    0xFFFFFFFF,
    1 << 32,
    1 << 47,
    0xFFFFFFFF80000000,
    1 << 63,
    (1 << 64) - 0x1000,
    (1 << 64) - 1,
)
MAX_MUTATIONS = 4

Draw = Callable[[st.SearchStrategy], object]
Mutator = Callable[[Draw, bytearray, list[FieldSpot]], bytearray]


def _offset(draw: Draw, data: bytearray, spots: list[FieldSpot]) -> int:
    """An offset, half the time at a header field (where readers look)."""
    if spots and draw(st.booleans()):
        return draw(st.sampled_from(spots)).offset
    return draw(st.integers(0, max(0, len(data) - 1)))


def set_field(draw: Draw, data: bytearray, spots: list[FieldSpot]) -> bytearray:
    if not spots:
        return flip_byte(draw, data, spots)
    spot = draw(st.sampled_from(spots))
    current = int.from_bytes(data[spot.offset : spot.offset + spot.size], "little")
    value = draw(
        st.one_of(
            st.sampled_from(BOUNDARY_VALUES),
            st.sampled_from((len(data) - 1, len(data), len(data) + 1, len(data) // 2)),
            st.integers(-16, 16).map(lambda delta: current + delta),
            st.integers(0, (1 << (8 * spot.size)) - 1),
        )
    )
    value &= (1 << (8 * spot.size)) - 1
    data[spot.offset : spot.offset + spot.size] = value.to_bytes(spot.size, "little")
    return data


def flip_byte(draw: Draw, data: bytearray, spots: list[FieldSpot]) -> bytearray:
    if data:
        offset = min(_offset(draw, data, spots), len(data) - 1)
        data[offset] ^= draw(st.integers(1, 255))
    return data


def truncate(draw: Draw, data: bytearray, spots: list[FieldSpot]) -> bytearray:
    cut = draw(
        st.one_of(
            st.integers(0, len(data)),
            st.sampled_from([spot.offset + spot.size // 2 for spot in spots] or [0]),
        )
    )
    return data[:cut]


def splice(draw: Draw, data: bytearray, spots: list[FieldSpot]) -> bytearray:
    """Copy up to 256 bytes from one place of the file over another."""
    if not data:
        return data
    source = _offset(draw, data, spots)
    target = _offset(draw, data, spots)
    size = draw(st.integers(1, 256))
    chunk = data[source : source + size]
    data[target : target + len(chunk)] = chunk
    return data


def insert_or_delete(draw: Draw, data: bytearray, spots: list[FieldSpot]) -> bytearray:
    """Shift everything after an offset: every table behind it moves."""
    offset = _offset(draw, data, spots)
    if draw(st.booleans()):
        return data[:offset] + draw(st.binary(min_size=1, max_size=64)) + data[offset:]
    return data[:offset] + data[offset + draw(st.integers(1, 64)) :]


def gzip_wrap(draw: Draw, data: bytearray, spots: list[FieldSpot]) -> bytearray:
    return bytearray(gzip.compress(bytes(data), compresslevel=1, mtime=0))


# Field writes first: hypothesis shrinks towards the first choice.
MUTATORS: tuple[Mutator, ...] = (
    set_field,
    flip_byte,
    truncate,
    splice,
    insert_or_delete,
    gzip_wrap,
)
WEIGHTS = (8, 3, 2, 2, 1, 1)
_WEIGHTED = tuple(m for m, weight in zip(MUTATORS, WEIGHTS, strict=True) for _ in range(weight))


class Mutant:
    """A mutated seed; its repr stays short (hypothesis prints failing examples,
    and a 5 MB bytes literal helps nobody: the oracle saves the input instead)."""

    def __init__(self, seed: str, data: bytes, steps: tuple[str, ...]) -> None:
        self.seed, self.data, self.steps = seed, data, steps

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def __repr__(self) -> str:
        return (
            f"Mutant(seed={self.seed!r}, steps={list(self.steps)}, "
            f"size={len(self.data)}, sha256={self.sha256[:16]})"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


@st.composite
def mutants(draw: Draw, seeds: dict[str, bytes], by_kind: bool = False) -> Mutant:
    """A seed with 1 to MAX_MUTATIONS mutations. ``by_kind``: pick the kind of seed
    (the name's prefix before ":") first, so that a kind with few seeds (two patched
    images among dozens of hostile ones) is mutated as often as any other."""
    names = sorted(seeds)
    if by_kind:
        kind = draw(st.sampled_from(sorted({name.split(":")[0] for name in names})))
        names = [name for name in names if name.split(":")[0] == kind]
    name = draw(st.sampled_from(names))
    data = bytearray(seeds[name])
    steps = []
    for _ in range(draw(st.integers(1, MAX_MUTATIONS))):
        mutator = draw(st.sampled_from(_WEIGHTED))
        data = mutator(draw, data, field_spots(bytes(data)))
        steps.append(mutator.__name__)
    return Mutant(name, bytes(data), tuple(steps))
