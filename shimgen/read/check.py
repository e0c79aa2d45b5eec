"""Decide whether an image boots as PV and as PVH, with the reasons Xen would give.

The PV and PVH verdicts follow Xen 4.17's libelf (elf_xen_parse, elf_xen_note_check,
elf_xen_addr_calc_check) and libxenguest's guest-type choice, step by step, so that
they agree with `xl create`; the error texts are Xen's own. Loaders without Xen
(QEMU's PVH loader, rust-vmm linux-loader used by Firecracker and Cloud Hypervisor)
add their own rules; those are reported as warnings against the PVH verdict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..structs import XenNote
from ..structs import xen_abi as abi
from ..structs.clayout import MASK64
from ..structs.elf import (
    LINUX_LOADER_MIN_ENTRY,
    MULTIBOOT_HEADER_MAGIC,
    MULTIBOOT_SEARCH_BYTES,
    SHT_NOTE,
    Machine,
    SegmentType,
)
from .image import Image, XenNoteRecord

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on the patch path
if TYPE_CHECKING:
    from typing import Any

# Feature names libelf knows (xen/include/public/features.h order); FEATURES
# naming an unknown *required* feature makes libelf reject the image.
KNOWN_FEATURES = (
    "writable_page_tables",
    "writable_descriptor_tables",
    "auto_translated_physmap",
    "supervisor_mode_kernel",
    "pae_pgdir_above_4gb",
    "hvm_callback_vector",
    "dom0",
)
STRING_FIELD_CHARS = 15  # libelf's parms->loader etc. are char[16], NUL included
DEFAULT_XEN_CAPS = abi.DEBIAN_XEN_CAPS
UNSET_ADDR, UNSET_ADDR32 = MASK64, (1 << 32) - 1  # libelf.h
# libelf's XEN_PAE_* (libelf.h): how a 32-bit kernel's PAE_MODE was read.
PAE_NO, PAE_YES, PAE_EXTCR3, PAE_BIMODAL = "no", "yes", "extended-cr3", "bimodal"
# What each guest type is, for the sentence naming a capability the host lacks.
GUEST_TYPE_MEANING = {
    abi.GUEST_PV64: "a 64-bit PV guest",
    abi.GUEST_PV32_PAE: "a 32-bit PAE PV guest (needs a Xen built with 32-bit PV support)",
    abi.GUEST_PV32: "a 32-bit non-PAE PV guest (no Xen since 4.3 runs these)",
    abi.GUEST_HVM32: "a PVH or HVM guest started in 32-bit protected mode",
}


@dataclass
class Verdict:
    """Whether one mode (PV or PVH) boots the image, and why not."""

    mode: str  # "pv" | "pvh"
    ok: bool
    reasons: list[str] = field(default_factory=list)  # why not (Xen's words first)
    warnings: list[str] = field(default_factory=list)  # bootable, but a loader may object
    details: dict[str, Any] = field(default_factory=dict)  # what libelf computed

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Verdicts:
    """The PV and the PVH verdict of one image."""

    pv: Verdict
    pvh: Verdict

    @property
    def xl_types(self) -> list[str]:
        """The `type =` values of an xl config this image can run with."""
        return [v.mode for v in (self.pv, self.pvh) if v.ok]

    def to_json(self) -> dict[str, Any]:
        return {"pv": self.pv.to_json(), "pvh": self.pvh.to_json(), "xl_types": self.xl_types}


def evaluate(image: Image, xen_caps: tuple[str, ...] = DEFAULT_XEN_CAPS) -> Verdicts:
    """Both verdicts, for a hypervisor offering the guest types xen_caps (Xen's own
    strings, as `xl info` lists them; default: Debian's Xen 4.17)."""
    return Verdicts(
        pv=_libelf_verdict(image, hvm=False, xen_caps=xen_caps),
        pvh=_pvh_verdict(image, xen_caps),
    )


# --- libelf, step by step ---------------------------------------------------------


@dataclass
class _Parms:
    """The slice of libelf's struct elf_dom_parms the checks use."""

    notes_scanned: bool = False  # elf_note_start valid: some note container was walked
    guest_info: bool = False  # __xen_guest used
    loader: str = ""
    guest_os: str = ""
    xen_ver: str = ""
    pae: str = PAE_NO
    virt_base: int | None = None
    virt_entry: int | None = None
    elf_paddr_offset: int | None = None
    virt_hypercall: int | None = None
    p2m_base: int | None = None
    phys_entry: int | None = None
    bad_required_feature: str | None = None
    requires_dom0: bool = False


def _collect_parms(image: Image, hvm: bool) -> tuple[_Parms, list[XenNoteRecord]]:
    parms = _Parms()
    has_segment_container = any(s.offset != 0 for s in image.note_segments())
    has_section_container = any(s.type == SHT_NOTE and s.index > 0 for s in image.sections)
    if image.segment_xen_notes:
        used, parms.notes_scanned = image.segment_xen_notes, True
    elif image.section_xen_notes:
        used, parms.notes_scanned = image.section_xen_notes, True
    else:
        used = []
        # elf_note_start is set by every walked container, Xen notes or not.
        parms.notes_scanned = has_segment_container or has_section_container
        if not hvm and image.legacy_guest_text is not None:
            used = image.legacy_xen_notes
            parms.guest_info, parms.notes_scanned = True, False
    for note in used:
        _apply_note(parms, note)
    if parms.guest_info and parms.virt_base is not None and parms.virt_hypercall is not None:
        # __xen_guest gives HYPERCALL_PAGE as a page number relative to VIRT_BASE.
        parms.virt_hypercall = (parms.virt_hypercall << 12) + parms.virt_base
    elif parms.guest_info and parms.virt_hypercall is not None:
        parms.virt_hypercall <<= 12
    return parms, used


def _apply_note(parms: _Parms, note: XenNoteRecord) -> None:
    if not note.known:
        return
    kind = XenNote(note.type)
    value = note.value
    strings = {
        XenNote.LOADER: "loader",
        XenNote.GUEST_OS: "guest_os",
        XenNote.XEN_VERSION: "xen_ver",
    }
    numbers = {
        XenNote.VIRT_BASE: "virt_base",
        XenNote.ENTRY: "virt_entry",
        XenNote.PADDR_OFFSET: "elf_paddr_offset",
        XenNote.HYPERCALL_PAGE: "virt_hypercall",
        XenNote.INIT_P2M: "p2m_base",
        XenNote.PHYS32_ENTRY: "phys_entry",
    }
    if kind in strings:
        setattr(parms, strings[kind], str(value)[:STRING_FIELD_CHARS])
    elif kind is XenNote.PAE_MODE:
        parms.pae = _pae_mode(str(value), parms.pae, note.source.startswith("__xen_guest"))
    elif kind in numbers and isinstance(value, int):
        # libelf marks an address it has not been given with all ones (UNSET_ADDR,
        # UNSET_ADDR32 for PHYS32_ENTRY): a note holding that value unsets it.
        unset = UNSET_ADDR32 if kind is XenNote.PHYS32_ENTRY else UNSET_ADDR
        setattr(parms, numbers[kind], None if value == unset else value)
    elif kind is XenNote.FEATURES:
        features = str(value).split("|")
        parms.requires_dom0 |= "!dom0" in features
        if parms.bad_required_feature is None:
            parms.bad_required_feature = _unknown_required_feature(features)


def _pae_mode(text: str, current: str, legacy: bool) -> str:
    """libelf's reading of PAE_MODE: a note says exactly "yes" (taken as extended-cr3)
    or holds "bimodal"; __xen_guest's PAE= says "yes[extended-cr3]" or starts "yes".
    Anything else leaves the mode as it was."""
    if legacy:
        if text == "yes[extended-cr3]":
            return PAE_EXTCR3
        return PAE_YES if text.startswith("yes") else current
    mode = PAE_EXTCR3 if text == "yes" else current
    return PAE_BIMODAL if "bimodal" in text else mode


def _unknown_required_feature(features: list[str]) -> str | None:
    for item in features:
        if item.startswith("!") and item[1:] not in KNOWN_FEATURES:
            return item[1:]
    return None


def _libelf_verdict(image: Image, hvm: bool, xen_caps: tuple[str, ...]) -> Verdict:
    mode = "pvh" if hvm else "pv"
    verdict = Verdict(mode, ok=False)
    for problem in image.header_overflow:
        verdict.reasons.append(f"ELF: {problem}")
    if verdict.reasons:
        return verdict
    parms, used = _collect_parms(image, hvm)
    verdict.details["notes_from"] = (
        "__xen_guest" if parms.guest_info else (image.note_origin if used else None)
    )
    if parms.bad_required_feature and not parms.guest_info:
        verdict.reasons.append(
            f"FEATURES requires '{parms.bad_required_feature}', a feature Xen does not know"
        )
        return verdict
    problem = _note_check(image, parms, hvm)
    if problem is None:
        problem = _addr_calc_check(image, parms, hvm, verdict.details)
    if problem is None and parms.requires_dom0:
        # libxenguest builds domUs; Xen's own dom0 builder would take this image.
        problem = (
            "Kernel does not support unprivileged (DomU) operation "
            "(FEATURES requires dom0: it boots only as dom0)"
        )
    if problem is None:
        problem = _guest_type(image, parms, hvm, verdict.details, xen_caps)
    if problem is None:
        problem = _compat_check(verdict.details, xen_caps)
    if problem is not None:
        verdict.reasons += [*_in_plain_words(problem, parms), problem]
        return verdict
    verdict.ok = True
    return verdict


# libelf's words when neither LOADER nor GUEST_OS allows a PV boot, and the plain
# line shown before them when the image names no loader at all.
NOT_GENERIC = "Will only load images built for the generic loader or Linux images"
NOT_A_PV_KERNEL = "not a PV kernel: no Xen notes saying it runs as PV"


def _in_plain_words(problem: str, parms: _Parms) -> list[str]:
    """A line saying what Xen's message means, for a message that does not say it."""
    if problem.startswith(NOT_GENERIC) and not parms.loader and not parms.guest_os:
        return [NOT_A_PV_KERNEL + ("; PVH only" if parms.phys_entry is not None else "")]
    return []


def _note_check(image: Image, parms: _Parms, hvm: bool) -> str | None:
    if not parms.notes_scanned and not parms.guest_info:
        return "Not a Xen-ELF image: No ELF notes or '__xen_guest' section found"
    if hvm and parms.phys_entry is not None:
        return None
    if not parms.loader.startswith("generic") and not parms.guest_os.startswith("linux"):
        return f"{NOT_GENERIC} (Not '{parms.loader}' and '{parms.guest_os}')"
    if not parms.xen_ver.startswith("xen-3.0"):
        return f"Xen will only load images built for Xen v3.0 (Not '{parms.xen_ver}')"
    return None


def _addr_calc_check(image: Image, parms: _Parms, hvm: bool, details: dict[str, Any]) -> str | None:
    if parms.elf_paddr_offset is not None and parms.virt_base is None and not hvm:
        return "ELF_PADDR_OFFSET set, VIRT_BASE unset"
    virt_base = 0 if hvm or parms.virt_base is None else parms.virt_base
    if hvm or parms.elf_paddr_offset is None:
        paddr_offset = 0 if (parms.notes_scanned or hvm) else virt_base
    else:
        paddr_offset = parms.elf_paddr_offset
    pstart, pend = image.paddr_range or (0, 0)
    if image.paddr_range is None:
        # libelf starts pstart at ~0 and pend at 0 when nothing is loadable.
        pstart, pend = MASK64, 0
    virt_offset = (virt_base - paddr_offset) & MASK64
    kstart = (pstart + virt_offset) & MASK64
    kend = (pend + virt_offset) & MASK64
    if parms.virt_entry is None or hvm:
        entry = parms.phys_entry if (hvm and parms.phys_entry is not None) else image.entry
    else:
        entry = parms.virt_entry
    details.update(
        virt_base=virt_base,
        elf_paddr_offset=paddr_offset,
        virt_kstart=kstart,
        virt_kend=kend,
        virt_entry=entry,
        phys_entry=parms.phys_entry,
        virt_hypercall=parms.virt_hypercall,
    )
    if kstart > kend or entry < kstart or entry > kend or virt_base > kstart:
        return (
            "ELF start or entries are out of bounds "
            f"(entry {entry:#x}, image {kstart:#x}-{kend:#x}, virt_base {virt_base:#x})"
        )
    if parms.p2m_base is not None and kstart <= parms.p2m_base < kend:
        return "P->M table base is out of bounds"
    return None


def _guest_type(
    image: Image, parms: _Parms, hvm: bool, details: dict[str, Any], xen_caps: tuple[str, ...]
) -> str | None:
    """libxenguest's xc_dom_guest_type: which kind of guest the parsed image is. In
    a PV container it depends on e_machine alone (and, for a bimodal 32-bit kernel,
    on whether the host offers 32-bit PAE PV)."""
    if hvm:
        if parms.phys_entry is not None:
            details["guest_type"] = abi.GUEST_HVM32
            return None
        return "image not capable of booting inside a HVM container (no PHYS32_ENTRY note)"
    if image.machine == Machine.X86_64:
        details["guest_type"] = abi.GUEST_PV64
    elif image.machine == Machine.X86:
        pae_guest = parms.pae in (PAE_YES, PAE_EXTCR3) or (
            parms.pae == PAE_BIMODAL and abi.GUEST_PV32_PAE in " ".join(xen_caps)
        )
        details["guest_type"] = abi.GUEST_PV32_PAE if pae_guest else abi.GUEST_PV32
    else:
        return f"xc_dom_guest_type: unknown image type {image.machine} (e_machine)"
    return None


def _compat_check(details: dict[str, Any], xen_caps: tuple[str, ...]) -> str | None:
    """libxenguest's xc_dom_compat_check: the host must offer the guest type, so
    details["guest_type"] is the capability the image needs (set even when refused)."""
    needed = details["guest_type"]
    if needed in xen_caps:
        return None
    meaning = GUEST_TYPE_MEANING.get(needed, needed)
    offered = " ".join(xen_caps) or "nothing"
    return (
        f"guest type {needed} not supported by xen kernel, sorry: the image is {meaning}, "
        f"and this Xen offers {offered} (--xen-caps)"
    )


# --- PVH: Xen plus the loaders without Xen ----------------------------------------------


def _pvh_verdict(image: Image, xen_caps: tuple[str, ...]) -> Verdict:
    verdict = _libelf_verdict(image, hvm=True, xen_caps=xen_caps)
    has_pvh_entry = any(
        note.type == XenNote.PHYS32_ENTRY
        for note in image.segment_xen_notes + image.section_xen_notes
    )
    if has_pvh_entry:
        # Without any PVH entry the loaders' own rules add nothing to Xen's "no".
        verdict.warnings.extend(_qemu_warnings(image))
        verdict.warnings.extend(_linux_loader_warnings(image))
    if not verdict.ok and _unused_phys32_entry(image):
        verdict.warnings.append(
            "a PHYS32_ENTRY note exists in the sections, but Xen reads only the "
            "PT_NOTE segments when they hold any Xen note"
        )
    return verdict


def _unused_phys32_entry(image: Image) -> bool:
    return bool(image.segment_xen_notes) and any(
        note.type == XenNote.PHYS32_ENTRY for note in image.section_xen_notes
    )


def _phys32_notes_in_segments(image: Image) -> list[tuple[int, XenNoteRecord]]:
    """(PT_NOTE index, note) for every PHYS32_ENTRY in a note segment."""
    found = []
    for note in image.segment_xen_notes:
        if note.type == XenNote.PHYS32_ENTRY:
            index = int(note.source.split("[", 1)[1].rstrip("]"))
            found.append((index, note))
    return found


def _qemu_warnings(image: Image) -> list[str]:
    warnings = []
    if _multiboot_header_offset(image.data) is not None:
        warnings.append(
            "QEMU: a multiboot header in the first 8 KiB makes -kernel boot it as "
            "multiboot and ignore the PVH note"
        )
    phys = _phys32_notes_in_segments(image)
    if not phys:
        warnings.append(
            "QEMU: no PHYS32_ENTRY note in a PT_NOTE segment: -kernel cannot boot it as PVH"
        )
        return warnings
    segments = {s.index: s for s in image.segments}
    for index, note in phys:
        segment = segments[index]
        if segment.align > 4 and any(
            n.source == note.source and n.owner != "Xen" for n in image.notes
        ):
            warnings.append(
                f"QEMU: PT_NOTE[{index}] has p_align {segment.align} and mixes non-Xen notes: "
                "QEMU pads notes by p_align and may misread PHYS32_ENTRY"
            )
        if note.width not in (4, 8):
            warnings.append(f"QEMU: PHYS32_ENTRY payload is {note.width} bytes; QEMU reads 4 or 8")
    return warnings


def _linux_loader_warnings(image: Image) -> list[str]:
    warnings = []
    prefix = "linux-loader (Firecracker, Cloud Hypervisor)"
    if image.elf_class != 64:
        warnings.append(f"{prefix}: ELF32 images are refused, ELF64 only")
    if image.entry < LINUX_LOADER_MIN_ENTRY:
        warnings.append(f"{prefix}: e_entry {image.entry:#x} is below 1 MiB and is refused")
    note_segments = [s for s in image.segments if s.type == SegmentType.NOTE]
    if not note_segments:
        warnings.append(f"{prefix}: no PT_NOTE segment, so no PVH entry is found")
        return warnings
    last = note_segments[-1]
    in_last = [
        n
        for n in image.notes
        if n.source == f"PT_NOTE[{last.index}]" and n.is_xen and n.type == XenNote.PHYS32_ENTRY
    ]
    if not in_last:
        warnings.append(
            f"{prefix}: only the last PT_NOTE (PT_NOTE[{last.index}]) is read and it holds "
            "no Xen PHYS32_ENTRY note"
        )
    elif in_last[0].descsz < 4:
        warnings.append(f"{prefix}: PHYS32_ENTRY payload shorter than 4 bytes")
    return warnings


def _multiboot_header_offset(data: bytes) -> int | None:
    """Offset of a valid multiboot v1 header (magic, flags, checksum sum to 0)."""
    window = data[:MULTIBOOT_SEARCH_BYTES]
    magic = MULTIBOOT_HEADER_MAGIC.to_bytes(4, "little")
    start = 0
    while (found := window.find(magic, start)) != -1:
        if found % 4 == 0 and found + 12 <= len(window):
            flags = int.from_bytes(window[found + 4 : found + 8], "little")
            checksum = int.from_bytes(window[found + 8 : found + 12], "little")
            if (MULTIBOOT_HEADER_MAGIC + flags + checksum) & 0xFFFFFFFF == 0:
                return found
        start = found + 1
    return None
