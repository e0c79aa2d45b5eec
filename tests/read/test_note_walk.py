"""The note walk and payload decoding, on hand-made note bytes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from shimgen.structs import ELF_NOTE_HEADER, XenNote

from shimgen.read.image import (
    Finding,
    _decode_xen_note,
    _strtoull,
    _walk_notes,
    parse_legacy_guest,
)


def note(owner: bytes, kind: int, desc: bytes, pad: int = 4) -> bytes:
    name = owner + b"\0"

    def padded(blob: bytes) -> bytes:
        return blob + b"\0" * (-len(blob) % pad)

    header = ELF_NOTE_HEADER.build({"namesz": len(name), "descsz": len(desc), "type": kind})
    return header + padded(name) + padded(desc)


def walk(blob: bytes) -> tuple[list, list[Finding]]:
    findings: list[Finding] = []
    return _walk_notes(blob, 0, len(blob), "test", findings), findings


def decoded(blob: bytes):
    notes, findings = walk(blob)
    return [_decode_xen_note(blob, n, findings) for n in notes if n.is_xen], findings


def test_numbers_of_every_width_and_bad_width():
    blob = b"".join(
        note(b"Xen", XenNote.VIRT_BASE, (0x12).to_bytes(width, "little")) for width in (1, 2, 4, 8)
    )
    blob += note(b"Xen", XenNote.ENTRY, b"\x01\x02\x03")
    records, findings = decoded(blob)
    assert [(r.value, r.width) for r in records] == [
        (0x12, 1),
        (0x12, 2),
        (0x12, 4),
        (0x12, 8),
        (0, 3),
    ]
    assert any("3-byte payload" in f.message for f in findings)


def test_strings_stop_at_nul_and_unterminated_strings_are_flagged():
    blob = note(b"Xen", XenNote.LOADER, b"generic\0junk") + note(b"Xen", XenNote.GUEST_OS, b"Mini")
    records, findings = decoded(blob)
    assert records[0].value == "generic"
    assert records[1].value == "Mini"  # the padding NUL after the desc ends it, as in libelf
    assert any("not NUL-terminated" in f.message for f in findings)


def test_non_xen_owners_are_kept_apart():
    blob = note(b"GNU", 5, b"\0" * 16) + note(b"Xen", XenNote.PHYS32_ENTRY, b"\0\0\x10\0")
    notes, _ = walk(blob)
    assert [(n.owner, n.is_xen) for n in notes] == [("GNU", False), ("Xen", True)]


def test_phys32_entry_keeps_32_bits():
    records, findings = decoded(
        note(b"Xen", XenNote.PHYS32_ENTRY, (0x1_0010_0000).to_bytes(8, "little"))
    )
    assert records[0].value == 0x0010_0000
    assert any("does not fit 32 bits" in f.message for f in findings)


def test_note_running_past_the_container_is_read_and_flagged():
    blob = note(b"Xen", XenNote.LOADER, b"generic\0")
    findings: list[Finding] = []
    notes = _walk_notes(blob, 0, 12, "test", findings)  # container holds only the header
    assert len(notes) == 1
    assert any("past the end of its container" in f.message for f in findings)


def test_stray_bytes_and_huge_sizes_do_not_crash():
    header = ELF_NOTE_HEADER.build({"namesz": 0xFFFFFFFF, "descsz": 0xFFFFFFFF, "type": 1})
    notes, findings = walk(header + b"Xen\0")
    assert any(f.severity == "error" for f in findings)
    notes, findings = walk(b"\x01\x02\x03")
    assert notes == [] and any("cut by the end of the file" in f.message for f in findings)


@given(st.binary(max_size=256))
def test_walk_never_raises_on_garbage(blob):
    notes, _ = walk(blob)
    for found in notes:
        assert 0 <= found.offset < len(blob)


def test_legacy_guest_text():
    pairs = parse_legacy_guest("GUEST_OS=linux,XEN_VER=xen-3.0,VIRT_BASE=0xC0000000,,PAE=yes")
    assert pairs == [
        ("GUEST_OS", "linux"),
        ("XEN_VER", "xen-3.0"),
        ("VIRT_BASE", "0xC0000000"),
        ("PAE", "yes"),
    ]


def test_strtoull_matches_c():
    assert _strtoull("0x10") == 16
    assert _strtoull("010") == 8
    assert _strtoull("12abc") == 12
    assert _strtoull("zz") == 0
    assert _strtoull("0") == 0


def test_number_size_is_descsz_not_what_the_file_holds():
    """libelf's elf_note_numeric switches on descsz: a huge descsz whose payload the
    end of the file cuts to 4 bytes reads as 0 (found by tests/read/test_xen_differential.py)."""
    blob = bytearray(note(b"Xen", XenNote.PHYS32_ENTRY, (0x100000).to_bytes(4, "little")))
    blob[4:8] = (0xFFFFFFF8).to_bytes(4, "little")  # descsz
    records, findings = decoded(bytes(blob))
    assert [r.value for r in records] == [0]
    assert any("4294967288-byte payload (4 in the file)" in f.message for f in findings)


def test_owner_is_read_up_to_its_nul_whatever_namesz_says():
    """libelf compares the C string at the name field with "Xen" (elf_note_name)."""
    blob = bytearray(note(b"Xen", XenNote.VIRT_BASE, bytes(8)))
    blob[0:4] = (1).to_bytes(4, "little")  # namesz 1: name padded to 4 as before
    notes, findings = walk(bytes(blob))
    assert notes[0].is_xen
    assert any("namesz 1" in f.message for f in findings)
