"""What a patch writes without importing construct gives the construct's bytes: the
metadata note's encoder (structs/shim_meta.py, made from the same FIELDS list) and
Record.pack for the ELF tables of scalars. Anything they cannot write goes through
construct, so its errors stay construct's."""

from __future__ import annotations

from dataclasses import replace

import construct as cs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shimgen.structs.elf import program_header
from shimgen.structs.notes import ELF_NOTE_HEADER
from shimgen.structs.shim_meta import SHIM_META_FORMATS, ShimMeta, _encode, shim_meta_struct

U64_MAX = (1 << 64) - 1

NUMBERS = {
    name: st.integers(0, 0xFFFF if name == "original_e_phnum" else U64_MAX)
    for name, kind in ShimMeta.__annotations__.items()
    if kind == "int" and name != "format"
}
LABELS = st.dictionaries(
    st.text(alphabet="abcz_01", min_size=1, max_size=40), st.integers(0, 0xFFFF), max_size=12
)


@st.composite
def metas(draw: st.DrawFn) -> ShimMeta:
    return ShimMeta(
        tool_version=draw(st.text(max_size=12)),
        handoff=draw(st.sampled_from(["start-info", "hvm-start-info", "pvh-passthrough"])),
        original_sha256=draw(st.binary(min_size=32, max_size=32)),
        options=draw(st.dictionaries(st.text(max_size=8), st.none() | st.text(max_size=8))),
        code_regions=draw(
            st.lists(st.tuples(st.integers(0, 0xFFFFFFFF), st.sampled_from([0, 32, 64])))
        ),
        labels=draw(LABELS),
        format=draw(st.sampled_from(SHIM_META_FORMATS)),
        **{name: draw(values) for name, values in NUMBERS.items()},
    )


def _construct_bytes(meta: ShimMeta) -> bytes:
    return shim_meta_struct().build(meta.field_values())


@settings(max_examples=150, deadline=None)
@given(metas())
def test_the_encoder_writes_the_constructs_bytes(meta: ShimMeta) -> None:
    built = meta.build()
    assert built == _construct_bytes(meta)
    assert ShimMeta.parse(built) == replace(
        meta,
        labels=meta.labels if meta.format >= 3 else {},
        code_regions=meta.code_regions if meta.format >= 2 else [],
    )


@pytest.mark.parametrize(
    "change",
    [
        {"labels": {"x" * 256: 0}},  # a name longer than its length byte says
        {"labels": {"a": 0x10000}},  # an offset past 16 bits
        {"labels": {"é": 0}},  # not ASCII
        {"shim_vaddr": 1 << 64},
        {"original_e_phnum": -1},
        {"format": 4},
        {"original_sha256": bytes(31)},
        {"original_sha256": None},
        {"tool_version": None},
    ],
)
def test_what_the_encoder_cannot_write_fails_as_construct_fails(change: dict) -> None:
    meta = replace(ShimMeta("t", "start-info", 0, bytes(32), *[0] * 12), **change)
    assert _encode(meta.field_values()) is None
    with pytest.raises((cs.ConstructError, UnicodeError)):
        meta.build()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, U64_MAX), min_size=8, max_size=8), st.integers(0, 0xFFFFFFFF))
def test_pack_builds_what_construct_builds(words: list[int], word32: int) -> None:
    phdr = program_header(64)
    values = {member.name: words[n] for n, member in enumerate(phdr.fields)}
    values["p_type"] = values["p_flags"] = word32
    assert phdr.pack(values) == phdr.build(values)
    note = {"namesz": word32, "descsz": word32 >> 3, "type": word32 >> 7}
    assert ELF_NOTE_HEADER.pack(note) == ELF_NOTE_HEADER.build(note)


def test_pack_leaves_errors_to_construct() -> None:
    with pytest.raises(cs.ConstructError):
        ELF_NOTE_HEADER.pack({"namesz": 1 << 32, "descsz": 0, "type": 0})
