"""Xen's own readers as oracles: libxenguest's image parser and `readnotes`.

Three layers, so a failure says which side is wrong:

1. libxenguest (the C helper) gives the verdicts pinned in EXPECTED on the images of
   tests/imagegen.py and on Debian's grub-xen-host kernels: these pin Xen 4.17's
   behaviour, including where it departs from a plain reading of the note rules
   (see shimgen/xenparser.py's module docstring).
2. readnotes prints exactly the notes imagegen wrote (modelled from the image
   description, not from shimgen), and the GRUB kernels' notes.
3. shimgen agrees with both: its notes with readnotes, its PV verdict with
   libxenguest in a PV container, its PVH verdict with libxenguest in an HVM
   container. Skipped only while shimgen.read.image / shimgen.read.check do not exist.

Needs gcc + libxen-dev (tests skip with the reason if absent) and network access
once, for the Debian packages grub-xen-host and xen-utils-4.17.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imagegen
import pytest
from shimgen.structs import xen_abi

from shimgen.errors import MissingTool
from shimgen.read import check as shimgen_check
from shimgen.read import image as shimgen_image
from shimgen.verify import xenparser
from shimgen.verify.debcache import unpacked_package
from shimgen.verify.xenparser import ReadNote, XenParse

# --- the error lines (Xen's libelf-dominfo.c and xg_dom_*.c, checked against libxenguest 4.17)

NO_NOTES = "Not a Xen-ELF image: No ELF notes or '__xen_guest' section found"
NOT_GENERIC = "Will only load images built for the generic loader or Linux images"
NOT_XEN_3 = "Xen will only load images built for Xen v3.0"
OUT_OF_BOUNDS = "ELF start or entries are out of bounds"
NOT_HVM = "image not capable of booting inside a HVM container"
NO_LOADER = "xc_dom_find_loader: no loader found"
DOMU = "Kernel does not support unprivileged (DomU) operation"
NO_PV32 = "guest type xen-3.0-x86_32p not supported by xen kernel"  # Debian's Xen lacks it
NOT_32BIT = "ELF image is not 32bit"

ELF = "ELF-generic"
FIRMWARE = "HVM-generic"  # hvmloader's loader: takes ELF32 images it finds no Xen notes in


@dataclass(frozen=True)
class Expect:
    ok: bool
    error: str | None = None  # a substring of XenParse.error
    guest_type: str | None = None
    loader: str | None = None
    load_error: str | None = None  # a substring of XenParse.load_error


PV64_OK = Expect(True, guest_type="xen-3.0-x86_64", loader=ELF)
PVH_OK = Expect(True, guest_type="hvm-3.0-x86_32", loader=ELF)
AS_FIRMWARE = Expect(True, guest_type="hvm-3.0-x86_32", loader=FIRMWARE)


def rejected(error: str, load_error: str | None = None) -> Expect:
    return Expect(False, error, load_error=load_error)


# A PV-only image in an HVM container: libelf (hvm=true) forces VIRT_BASE to 0 and
# judges e_entry against the p_paddr range; a Linux-style high e_entry fails that,
# so the firmware loader takes the ELF64 and then refuses it.
PV_ONLY_IN_HVM = rejected(OUT_OF_BOUNDS, load_error=NOT_32BIT)

# image name -> (PV container, HVM container)
EXPECTED: dict[str, tuple[Expect, Expect]] = {
    "pv64": (PV64_OK, PV_ONLY_IN_HVM),
    "pvh64": (rejected(NOT_GENERIC, NO_LOADER), PVH_OK),
    "pv_and_pvh": (PV64_OK, PVH_OK),
    "no_notes": (rejected(NO_NOTES, NO_LOADER), rejected(NO_NOTES, NOT_32BIT)),
    "no_notes_elf32": (rejected(NO_NOTES, NO_LOADER), AS_FIRMWARE),
    "loader_not_generic": (
        rejected(NOT_GENERIC, NO_LOADER),
        rejected(NOT_GENERIC, NOT_32BIT),
    ),
    "guest_os_linux": (PV64_OK, PV_ONLY_IN_HVM),
    "xen_version_bad": (rejected(NOT_XEN_3, NO_LOADER), rejected(NOT_XEN_3, NOT_32BIT)),
    "entry_out_of_bounds": (rejected(OUT_OF_BOUNDS, NO_LOADER), PV_ONLY_IN_HVM),
    "entry_at_kend": (PV64_OK, PV_ONLY_IN_HVM),
    "notes_in_sections_only": (PV64_OK, PV_ONLY_IN_HVM),
    # __xen_guest is read for PV only: in HVM the image has no notes at all.
    "xen_guest_only": (PV64_OK, rejected(NO_NOTES, NOT_32BIT)),
    "phys32_outside": (rejected(NOT_GENERIC, NO_LOADER), rejected(OUT_OF_BOUNDS, NOT_32BIT)),
    "phys32_below": (rejected(NOT_GENERIC, NO_LOADER), rejected(OUT_OF_BOUNDS, NOT_32BIT)),
    # libelf's check is entry > kend: pend itself passes.
    "phys32_at_end": (rejected(NOT_GENERIC, NO_LOADER), PVH_OK),
    "phys32_last_byte": (rejected(NOT_GENERIC, NO_LOADER), PVH_OK),
    "foreign_pt_note_xen_section": (PV64_OK, PV_ONLY_IN_HVM),
    "two_pt_notes_last_foreign": (PV64_OK, PV_ONLY_IN_HVM),
    "gnu_property_after_xen": (PV64_OK, PV_ONLY_IN_HVM),
    "gnu_property_first": (PV64_OK, PV_ONLY_IN_HVM),
    "repeated_notes": (PV64_OK, PVH_OK),
    # libelf refuses an unknown required feature without a word.
    "features_unknown_required": (
        rejected(NO_LOADER, NO_LOADER),
        rejected(NOT_32BIT, NOT_32BIT),
    ),
    "features_dom0_required": (rejected(DOMU, DOMU), PV_ONLY_IN_HVM),
    # The PV guest type must be one the host offers: Debian's Xen has no 32-bit PV.
    "pv32_pae": (rejected(NO_PV32, NO_PV32), AS_FIRMWARE),
    # libxenguest picks the PV guest type from e_machine alone, not the ELF class.
    "elf32_em_x86_64": (PV64_OK, AS_FIRMWARE),
    "pv64_gzip": (PV64_OK, PV_ONLY_IN_HVM),
}

GRUB_DIR = "usr/lib/grub-xen"
GRUB_IMAGES: dict[str, tuple[Expect, Expect]] = {
    # VIRT_BASE 0 and ENTRY 0: libelf (hvm=true) accepts the addresses, so the ELF
    # loader takes the image and xc_dom_guest_type refuses it for HVM.
    "grub-x86_64-xen.bin": (PV64_OK, rejected(NOT_HVM, NOT_HVM)),
    "grub-i386-xen.bin": (rejected(NO_PV32, NO_PV32), rejected(NOT_HVM, NOT_HVM)),
    "grub-i386-xen_pvh.bin": (rejected(NOT_GENERIC, NO_LOADER), PVH_OK),
}

GRUB_NOTES: dict[str, list[ReadNote]] = {
    "grub-x86_64-xen.bin": [
        ReadNote("GUEST_OS", "GRUB", None),
        ReadNote("LOADER", "generic", None),
        ReadNote("XEN_VERSION", "xen-3.0", None),
        ReadNote("ENTRY", 0, 8),
        ReadNote("VIRT_BASE", 0, 8),
    ],
    "grub-i386-xen.bin": [
        ReadNote("GUEST_OS", "GRUB", None),
        ReadNote("LOADER", "generic", None),
        ReadNote("XEN_VERSION", "xen-3.0", None),
        ReadNote("ENTRY", 0, 4),
        ReadNote("VIRT_BASE", 0, 4),
        ReadNote("PAE_MODE", "yes", None),
    ],
    "grub-i386-xen_pvh.bin": [ReadNote("PHYS32_ENTRY", 0x100000, 4)],
}

CASE_NAMES = [c.name for c in imagegen.cases()]
CONTAINERS = ("pv", "pvh")


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def helper() -> Path:
    try:
        return xenparser.helper_binary()
    except MissingTool as missing:
        pytest.skip(str(missing))


@pytest.fixture(scope="session")
def readnotes_tool() -> Path:
    try:
        return xenparser.readnotes_binary()
    except MissingTool as missing:
        pytest.skip(str(missing))


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return imagegen.build_all(tmp_path_factory.mktemp("imagegen"))


@pytest.fixture(scope="session")
def grub_dir() -> Path:
    try:
        return unpacked_package("grub-xen-host") / GRUB_DIR
    except MissingTool as missing:
        pytest.skip(str(missing))


_parse_cache: dict[tuple[str, str], XenParse] = {}


def oracle(path: Path, container: xenparser.Container) -> XenParse:
    """libxenguest's verdict, once per image and container in a session."""
    key = (str(path), container)
    if key not in _parse_cache:
        _parse_cache[key] = xenparser.parse(path, container)
    return _parse_cache[key]


def check(result: XenParse, expect: Expect) -> None:
    context = "\n".join(result.messages)
    assert result.ok == expect.ok, context
    if expect.ok:
        assert result.error is None, context
        assert result.guest_type == expect.guest_type, context
        assert result.loader == expect.loader, context
        return
    assert result.guest_type is None or result.loader == ELF, context
    assert result.error is not None and expect.error in result.error, context
    if expect.load_error is not None:
        assert result.load_error is not None, context
        assert expect.load_error in result.load_error, context


# --- 1. libxenguest on generated and third-party images ------------------------------


def test_every_case_has_an_expectation() -> None:
    assert sorted(EXPECTED) == sorted(CASE_NAMES)


def test_helper_builds_and_rebuilds_from_cache(helper: Path) -> None:
    assert helper.exists() and helper.stat().st_mode & 0o111
    assert xenparser.helper_binary() == helper  # keyed by source hash: no rebuild
    assert xenparser.available()


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("name", CASE_NAMES)
def test_libxenguest_verdict(
    helper: Path, images: dict[str, Path], name: str, container: xenparser.Container
) -> None:
    pv, pvh = EXPECTED[name]
    check(oracle(images[name], container), pv if container == "pv" else pvh)


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("name", sorted(GRUB_IMAGES))
def test_libxenguest_verdict_grub(
    helper: Path, grub_dir: Path, name: str, container: xenparser.Container
) -> None:
    pv, pvh = GRUB_IMAGES[name]
    check(oracle(grub_dir / name, container), pv if container == "pv" else pvh)


def test_parms_of_pv64(helper: Path, images: dict[str, Path]) -> None:
    """The mirrored elf_dom_parms layout reads what the notes say."""
    result = oracle(images["pv64"], "pv")
    base = imagegen.PV64_VIRT_BASE
    assert result.parms_error is None
    assert result.parms["loader"] == "generic"
    assert result.parms["xen_ver"] == "xen-3.0"
    assert result.parms["guest_os"] == "imagegen"
    assert result.parms["virt_base"] == base
    assert result.parms["elf_paddr_offset"] == 0
    assert result.parms["virt_kstart"] == base + imagegen.PHYS_BASE
    assert result.parms["virt_kend"] == base + imagegen.PHYS_BASE + imagegen.PV64.text_size
    assert result.parms["virt_entry"] == base + imagegen.PHYS_BASE
    assert result.parms["virt_hypercall"] == base + imagegen.PHYS_BASE + 0x1000
    assert result.parms["phys_entry"] == 0xFFFFFFFF  # libelf's "unset"


def test_parms_in_hvm_force_virt_base_to_zero(helper: Path, images: dict[str, Path]) -> None:
    result = oracle(images["pv_and_pvh"], "pvh")
    assert result.parms["virt_base"] == 0
    assert result.parms["elf_paddr_offset"] == 0
    assert result.parms["virt_kstart"] == imagegen.PHYS_BASE
    assert result.parms["phys_entry"] == imagegen.PVH_ENTRY
    assert result.parms["virt_entry"] == imagegen.PVH_ENTRY  # PHYS32_ENTRY replaces it


def test_repeated_notes_last_wins(helper: Path, images: dict[str, Path]) -> None:
    pv = oracle(images["repeated_notes"], "pv")
    assert pv.parms["loader"] == "generic"
    assert pv.parms["virt_entry"] == imagegen.PV64_VIRT_BASE + imagegen.PHYS_BASE
    assert oracle(images["repeated_notes"], "pvh").parms["phys_entry"] == imagegen.PVH_ENTRY


def test_unknown_required_feature_is_the_last_thing_libelf_read(
    helper: Path, images: dict[str, Path]
) -> None:
    result = oracle(images["features_unknown_required"], "pv")
    diagnosis = [line.text for line in result.log if line.phase == "diagnosis"]
    assert diagnosis[-1] == 'ELF: note: FEATURES = "!foo"'


@pytest.mark.parametrize("name", ["pv32_pae", "grub-i386-xen.bin"])
def test_pv32_boots_where_the_host_offers_x86_32p(
    helper: Path, images: dict[str, Path], grub_dir: Path, name: str
) -> None:
    """Both sides take the host's guest types: with 32-bit PV offered, both accept."""
    path = grub_dir / name if name in GRUB_IMAGES else images[name]
    caps = (*xen_abi.DEBIAN_XEN_CAPS, xen_abi.GUEST_PV32_PAE)
    result = xenparser.parse(path, "pv", xen_caps=" ".join(caps))
    assert result.ok and result.guest_type == xen_abi.GUEST_PV32_PAE, result.messages
    verdict = shimgen_check.evaluate(shimgen_image.read_image(path), caps).pv
    assert verdict.ok and verdict.details["guest_type"] == xen_abi.GUEST_PV32_PAE
    refused = shimgen_check.evaluate(shimgen_image.read_image(path)).pv
    assert not refused.ok and xen_abi.GUEST_PV32_PAE in refused.reasons[0]


def test_gzip_is_unpacked_before_the_loaders(helper: Path, images: dict[str, Path]) -> None:
    result = oracle(images["pv64_gzip"], "pv")
    assert any(text.startswith("xc_dom_do_gunzip: unzip ok") for text in result.messages)


def test_loaders_are_tried_in_a_fixed_order(helper: Path, images: dict[str, Path]) -> None:
    order = ["multiboot-binary", "HVM-generic", "Linux bzImage", "ELF-generic"]
    assert oracle(images["pv64"], "pv").loaders_tried == order


def test_not_an_elf_is_rejected(helper: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\0" * 4096)
    result = xenparser.parse(junk, "pv")
    assert not result.ok and result.error is not None


def test_missing_gcc_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xenparser.shutil, "which", lambda _name: None)
    with pytest.raises(MissingTool, match="gcc not found"):
        xenparser.helper_binary()
    assert not xenparser.available()


@pytest.mark.parametrize(
    "stderr",
    [
        "xenparse.c:34:10: fatal error: xenctrl.h: No such file or directory",
        "xenparse.c:33:10: fatal error: xen/elfnote.h: No such file or directory",
        "/usr/bin/ld: cannot find -lxenguest: No such file or directory",
    ],
)
def test_missing_libxen_dev_is_a_missing_tool(stderr: str) -> None:
    error = xenparser._compile_error(stderr)
    assert isinstance(error, MissingTool)
    assert "libxen-dev" in str(error) and "\n" not in str(error)


def test_edited_source_rebuilds(
    helper: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SHIMGEN_CACHE", str(tmp_path))
    original = xenparser._helper_source()
    monkeypatch.setattr(xenparser, "_helper_source", lambda: original + b"\n/* edited */\n")
    rebuilt = xenparser.helper_binary()
    assert rebuilt != helper and rebuilt.parent == tmp_path / "native"
    assert rebuilt.exists()


# --- 2. readnotes ----------------------------------------------------------------------

# How readnotes 4.17 prints note types: numbers with their width, the rest as text.
READNOTES_NUMBERS = {
    imagegen.XEN_ENTRY: "ENTRY",
    imagegen.XEN_HYPERCALL_PAGE: "HYPERCALL_PAGE",
    imagegen.XEN_VIRT_BASE: "VIRT_BASE",
    imagegen.XEN_PADDR_OFFSET: "PADDR_OFFSET",
    12: "HV_START_LOW",
    imagegen.XEN_SUSPEND_CANCEL: "SUSPEND_CANCEL",
    imagegen.XEN_PHYS32_ENTRY: "PHYS32_ENTRY",
}
READNOTES_TEXTS = {
    0: "INFO",
    imagegen.XEN_XEN_VERSION: "XEN_VERSION",
    imagegen.XEN_GUEST_OS: "GUEST_OS",
    imagegen.XEN_GUEST_VERSION: "GUEST_VERSION",
    imagegen.XEN_LOADER: "LOADER",
    imagegen.XEN_PAE_MODE: "PAE_MODE",
    imagegen.XEN_FEATURES: "FEATURES",
}


def as_readnotes(note: imagegen.Note) -> ReadNote:
    if note.type in READNOTES_NUMBERS:
        width = len(note.desc)
        value = int.from_bytes(note.desc, "little") if width in (1, 2, 4, 8) else 0
        return ReadNote(READNOTES_NUMBERS[note.type], value, width)
    if note.type in READNOTES_TEXTS:
        return ReadNote(READNOTES_TEXTS[note.type], note.desc.split(b"\0")[0].decode(), None)
    return ReadNote(f"UNKNOWN({note.type})", "", None)


def readnotes_model(spec: imagegen.Spec) -> list[ReadNote]:
    """What readnotes prints for an imagegen image, following its main loop.

    It prints the Xen notes of every PT_NOTE, but only the count of the *last*
    PT_NOTE decides whether it also walks the SHT_NOTE sections (libelf sums them),
    and it prints __xen_guest whether or not notes exist.
    """
    out: list[ReadNote] = []
    found = 0
    for group in spec.note_segments:
        xen = [n for section in group for n in section.notes if n.owner == b"Xen"]
        found = len(xen)
        out += map(as_readnotes, xen)
    if found == 0:
        sections = [s for group in spec.note_segments for s in group]
        for section in (*sections, *spec.loose_note_sections):
            out += [as_readnotes(n) for n in section.notes if n.owner == b"Xen"]
    if spec.xen_guest is not None:
        out.append(ReadNote("__xen_guest", spec.xen_guest, None))
    return out


@pytest.mark.parametrize("name", CASE_NAMES)
def test_readnotes_on_generated_images(readnotes_tool: Path, images: dict[str, Path], name: str):
    assert xenparser.readnotes(images[name]) == readnotes_model(imagegen.case(name).spec)


@pytest.mark.parametrize("name", sorted(GRUB_NOTES))
def test_readnotes_on_grub(readnotes_tool: Path, grub_dir: Path, name: str) -> None:
    assert xenparser.readnotes(grub_dir / name) == GRUB_NOTES[name]


def test_readnotes_reports_the_fallback_to_sections(
    readnotes_tool: Path, images: dict[str, Path]
) -> None:
    assert xenparser.run_readnotes(images["notes_in_sections_only"]).used_sections
    assert not xenparser.run_readnotes(images["pv64"]).used_sections


def test_parse_readnotes_lines() -> None:
    text = (
        "ENTRY:                  0 (8 bytes)\n"
        "PHYS32_ENTRY:   0x100000 (4 bytes)\n"
        "LOADER: generic\n"
        "unknown note type 0xf\n"
        "__xen_guest: LOADER=generic,XEN_VER=xen-3.0\n"
    )
    assert xenparser.parse_readnotes(text) == [
        ReadNote("ENTRY", 0, 8),
        ReadNote("PHYS32_ENTRY", 0x100000, 4),
        ReadNote("LOADER", "generic", None),
        ReadNote("UNKNOWN(15)", "", None),
        ReadNote("__xen_guest", "LOADER=generic,XEN_VER=xen-3.0", None),
    ]


# --- 3. shimgen against the oracles ---------------------------------------------------


def _shimgen_modules() -> tuple[Any, Any]:
    return shimgen_image, shimgen_check


ALL_NAMES = CASE_NAMES + sorted(GRUB_IMAGES)


@pytest.fixture()
def image_path(request: pytest.FixtureRequest, images: dict[str, Path]) -> Path:
    name = request.param
    if name in GRUB_IMAGES:
        return request.getfixturevalue("grub_dir") / name
    return images[name]


def _readnotes_value(record: Any) -> int | str:
    """A shimgen XenNoteRecord value as readnotes prints it."""
    value = record.value
    if isinstance(value, list):  # L1_MFN_VALID: readnotes shows the first pair only
        words = (
            value[:2]
            if record.width == 8
            else [value[0] | value[1] << 32, value[2] | value[3] << 32]
        )
        return f"mask={words[0]:#x} value={words[1]:#x}"
    return value if value is not None else ""


def shimgen_as_readnotes(img: Any) -> list[ReadNote]:
    """shimgen's notes, arranged the way readnotes walks the file (see readnotes_model)."""
    out: list[ReadNote] = []
    found = 0
    for segment in img.note_segments():
        if segment.offset == 0:
            continue
        where = f"PT_NOTE[{segment.index}]"
        records = [r for r in img.segment_xen_notes if r.source == where]
        found = len(records)
        out += [_record_as_readnotes(r) for r in records]
    if found == 0:
        out += [_record_as_readnotes(r) for r in img.section_xen_notes]
    if img.legacy_guest_text is not None:
        out.append(ReadNote("__xen_guest", img.legacy_guest_text, None))
    return out


def _record_as_readnotes(record: Any) -> ReadNote:
    if record.type in READNOTES_NUMBERS:
        return ReadNote(READNOTES_NUMBERS[record.type], record.value, record.width)
    if record.type in READNOTES_TEXTS or record.type == 13:
        name = READNOTES_TEXTS.get(record.type, "L1_MFN_VALID")
        return ReadNote(name, _readnotes_value(record), None)
    return ReadNote(f"UNKNOWN({record.type})", "", None)


@pytest.mark.parametrize("image_path", ALL_NAMES, indirect=True)
def test_shimgen_notes_match_readnotes(readnotes_tool: Path, image_path: Path) -> None:
    image, _ = _shimgen_modules()
    img = image.read_image(image_path)
    assert shimgen_as_readnotes(img) == xenparser.readnotes(image_path)


def _pvh_oracle(result: XenParse) -> bool:
    """PVH-capable means accepted through the Xen notes.

    libxenguest's firmware loader also accepts any ELF32 it finds no valid Xen notes
    in (hvmloader's path) and would start it at e_entry; that is not the PVH boot
    protocol shimgen judges, so it does not count as PVH-capable here.
    """
    return result.accepted_by_elf_loader


@pytest.mark.parametrize("image_path", ALL_NAMES, indirect=True)
def test_shimgen_pv_verdict_matches_libxenguest(helper: Path, image_path: Path) -> None:
    image, check_mod = _shimgen_modules()
    verdicts = check_mod.evaluate(image.read_image(image_path))
    oracle_pv = oracle(image_path, "pv")
    assert verdicts.pv.ok == oracle_pv.ok, (verdicts.pv.reasons, oracle_pv.error)


@pytest.mark.parametrize("image_path", ALL_NAMES, indirect=True)
def test_shimgen_pvh_verdict_matches_libxenguest(helper: Path, image_path: Path) -> None:
    image, check_mod = _shimgen_modules()
    verdicts = check_mod.evaluate(image.read_image(image_path))
    oracle_pvh = oracle(image_path, "pvh")
    assert verdicts.pvh.ok == _pvh_oracle(oracle_pvh), (verdicts.pvh.reasons, oracle_pvh.error)


LIBELF_WORDS = (NO_NOTES, NOT_GENERIC, NOT_XEN_3, OUT_OF_BOUNDS, DOMU, NO_PV32)
# Images on which libxenguest names the broken PV rule in libelf's words.
PV_WORDED = sorted(
    name
    for name, (pv, _) in (EXPECTED | GRUB_IMAGES).items()
    if not pv.ok and pv.error in LIBELF_WORDS
)


@pytest.mark.parametrize("image_path", PV_WORDED, indirect=True)
def test_shimgen_pv_reasons_use_libelf_words(helper: Path, image_path: Path) -> None:
    """When libelf names the broken PV rule, shimgen's reasons name it too."""
    image, check_mod = _shimgen_modules()
    verdicts = check_mod.evaluate(image.read_image(image_path))
    oracle_pv = oracle(image_path, "pv")
    words = [w for w in LIBELF_WORDS if oracle_pv.error and w in oracle_pv.error]
    assert words, oracle_pv.error
    assert any(words[0] in reason for reason in verdicts.pv.reasons), verdicts.pv.reasons
