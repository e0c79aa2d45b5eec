"""Hypothesis round trips of every boot structure through its construct.

build then parse gives back the values; parse then build gives back the bytes (with
padding, which carries no field, built as zeros). start_info's console union is built
through each of its members, and every member of the parsed union must read the same
bytes the layout engine says it covers.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shimgen.structs import Record, boot_structures
from shimgen.structs.clayout import CharArray
from shimgen.structs.decode import decode, default_version
from valuetree import leaf_paths

from shimgen.errors import BadInput

NAMES = list(boot_structures())


def values_for(record: Record) -> st.SearchStrategy[dict[str, Any]]:
    """Any value of every member; a union gets exactly one member, as C writes one."""
    options = {member.name: _member_values(member.type) for member in record.fields}
    if record.kind == "union":
        alternatives = [st.fixed_dictionaries({name: each}) for name, each in options.items()]
        return st.one_of(*alternatives)
    return st.fixed_dictionaries(options)


def _member_values(kind: Any) -> st.SearchStrategy[Any]:
    if isinstance(kind, Record):
        return values_for(kind)
    if isinstance(kind, CharArray):
        return st.binary(min_size=kind.length, max_size=kind.length)
    return st.integers(min_value=0, max_value=(1 << (8 * kind.size)) - 1)


def _leaf(container: Any, path: str) -> Any:
    for part in path.split("."):
        container = container[part]
    return container


def _covered(record: Record) -> bytearray:
    """1 for every byte some leaf occupies, 0 for padding."""
    mask = bytearray(record.size)
    for leaf in record.layout():
        mask[leaf.offset : leaf.offset + leaf.size] = b"\1" * leaf.size
    return mask


def _check_build_then_parse(record: Record, values: dict[str, Any]) -> None:
    built = record.build(values)
    assert len(built) == record.size
    parsed = record.parse(built)
    for path in leaf_paths(values):
        assert _leaf(parsed, path) == _leaf(values, path), path
    # Every leaf, the other union members included, reads the bytes at its offset.
    for leaf in record.layout():
        raw = built[leaf.offset : leaf.offset + leaf.size]
        expected = (
            raw if isinstance(_leaf(parsed, leaf.path), bytes) else (int.from_bytes(raw, "little"))
        )
        assert _leaf(parsed, leaf.path) == expected, leaf.path


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_build_then_parse(name: str, data: st.DataObject) -> None:
    record = boot_structures()[name]
    _check_build_then_parse(record, data.draw(values_for(record)))


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_parse_then_build(name: str, data: st.DataObject) -> None:
    record = boot_structures()[name]
    raw = data.draw(st.binary(min_size=record.size, max_size=record.size))
    rebuilt = record.build(record.parse(raw))
    mask = _covered(record)
    assert rebuilt == bytes(byte if keep else 0 for byte, keep in zip(raw, mask, strict=True))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_console_union_both_members(data: st.DataObject) -> None:
    """start_info's console union, built through domU and through dom0 explicitly."""
    record = boot_structures()["start_info"]
    values = data.draw(values_for(record))
    members = _console(record).fields
    assert [member.name for member in members] == ["domU", "dom0"]
    for member in members:
        console = {member.name: data.draw(_member_values(member.type))}
        _check_build_then_parse(record, {**values, "console": console})
    # The views alias: dom0.info_off is the low half of domU.mfn on x86_64.
    mfn = data.draw(st.integers(min_value=0, max_value=(1 << 64) - 1))
    built = record.build({**values, "console": {"domU": {"mfn": mfn, "evtchn": 0}}})
    dom0 = record.parse(built).console.dom0
    assert (dom0.info_off, dom0.info_size) == (mfn & 0xFFFFFFFF, mfn >> 32)


def _console(record: Record) -> Record:
    member = next(member for member in record.fields if member.name == "console")
    assert isinstance(member.type, Record) and member.type.kind == "union"
    return member.type


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_decode_never_crashes(name: str, data: st.DataObject) -> None:
    """Any bytes decode to fields plus findings, or a BadInput when too short."""
    raw = data.draw(st.binary(max_size=boot_structures()[name].size + 16))
    offset = data.draw(st.integers(min_value=0, max_value=len(raw)))
    try:
        decoded = decode(name, raw, offset)
    except BadInput as error:
        assert "too short" in str(error)
        return
    assert [field.path for field in decoded.fields] == [
        leaf.path for leaf in decoded.record.layout()
    ]


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_decode_reads_what_build_wrote(name: str, data: st.DataObject) -> None:
    record = boot_structures()[name]
    values = data.draw(values_for(record))
    built = record.build(values)
    pad = data.draw(st.binary(max_size=8))
    decoded = decode(name, pad + built, len(pad), version=_own_version(name))
    assert decoded.record is record
    for path in leaf_paths(values):
        assert decoded.field(path).value == _leaf(values, path), path


def _own_version(name: str) -> int | None:
    # Decode with the layout the name stands for, whatever the random version field says.
    return default_version(name)
