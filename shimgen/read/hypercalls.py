"""Which hypercalls a kernel makes through its hypercall page, found in its code.

PV kernels call hypercall N as ``call hypercall_page + N*32`` (the page holds one
32-byte stub per hypercall, xen/include/public/xen.h), so every direct call or jump
whose target is a stub boundary inside the HYPERCALL_PAGE names a hypercall. Under
PVH, Xen refuses the hypercalls that exist only for PV guests (the hvm64 column of
Xen's xen/include/hypercall-defs.c): a PV kernel that makes one cannot run as PVH
unless something answers it in Xen's place. This module finds those call sites so
that ``inspect`` and ``check`` can say so before anything boots.

The search reads the bytes of every executable loadable segment for the two
rel32 forms (E8 call, E9 jmp). A byte pattern that is not an instruction would have
to land exactly on a stub boundary of a 4 KiB page to be counted; calls through a
register are not seen.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field

from ..structs import XenNote
from ..structs import xen_abi as abi
from ..structs.clayout import MASK64
from ..structs.elf import SegmentFlags
from .image import Buffer, Image

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on the patch path
if TYPE_CHECKING:
    from typing import Any

REL32_OPCODES = {0xE8: "call", 0xE9: "jmp"}
REL32_SIZE = 5  # opcode + rel32
SCAN_CHUNK = 1 << 22  # bytes of a mapped input looked at before its pages are let go


@dataclass
class HypercallUse:
    """One hypercall the kernel makes, with where it makes it."""

    number: int
    sites: list[int] = field(default_factory=list)  # virtual addresses of the calls
    shim_answers: bool = False  # a patched image's PV ABI layer answers it under PVH

    @property
    def name(self) -> str:
        if self.number in abi.Hypercall._value2member_map_:
            return abi.Hypercall(self.number).name.lower()
        return f"hypercall_{self.number}"

    @property
    def under_pvh(self) -> str:
        """What Xen does with it for a PVH guest: "xen" (answers it as for PV),
        "pv-only" (refuses it: -ENOSYS) or "restricted" (some sub-operations only)."""
        if self.number in abi.PV_ONLY_HYPERCALLS:
            return "pv-only"
        if self.number in abi.PVH_RESTRICTED_HYPERCALLS:
            return "restricted"
        return "xen"

    @property
    def note(self) -> str:
        return abi.PVH_RESTRICTED_HYPERCALLS.get(self.number, "")

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "name": self.name,
            "under_pvh": self.under_pvh,
            "note": self.note,
            "shim_answers": self.shim_answers,
            "sites": self.sites,
        }


@dataclass
class HypercallScan:
    """The kernel's calls into its hypercall page, by hypercall."""

    page: int | None  # virtual address of the HYPERCALL_PAGE, None without one
    uses: list[HypercallUse]

    @property
    def pv_only(self) -> list[HypercallUse]:
        """The calls Xen refuses (or restricts) under PVH."""
        return [use for use in self.uses if use.under_pvh != "xen"]

    def pvh_warning(self, shim_handoff: str | None) -> str | None:
        """One line for ``check``: what the PV-only calls mean for a PVH boot, given
        the handoff of the image's shim (None: not patched) and what its PV ABI layer
        answers (``shim_answers`` of each use)."""
        refused = [use.name for use in self.pv_only if use.under_pvh == "pv-only"]
        restricted = [use.name for use in self.pv_only if use.under_pvh == "restricted"]
        if not refused and not restricted:
            return None
        named = ", ".join(refused) or "none"
        text = f"the kernel calls hypercalls Xen refuses under PVH: {named}"
        if restricted:
            text += f" (and, with fewer sub-operations under PVH: {', '.join(restricted)})"
        answered = [use.name for use in self.pv_only if use.shim_answers]
        if answered:
            text += f"; the shim's PV ABI layer answers {', '.join(answered)}"
        unanswered = [name for name in refused if name not in answered]
        if shim_handoff == "start-info" and unanswered:
            return text + (
                f"; nothing answers {', '.join(unanswered)}, so the kernel fails as PVH"
                if answered
                else "; the shim does not answer them, so the kernel fails as PVH"
            )
        if shim_handoff == "start-info" and refused:
            return text + ", so the kernel's PV-only calls are all answered under PVH"
        return text + "; fine only if the kernel makes them when booted as PV"

    def to_json(self) -> dict[str, Any]:
        return {"page": self.page, "calls": [use.to_json() for use in self.uses]}


def hypercall_page(image: Image) -> int | None:
    """The HYPERCALL_PAGE virtual address Xen reads (the last note wins; the legacy
    ``__xen_guest`` key is a page number relative to VIRT_BASE there)."""
    for note in reversed(image.xen_notes):
        if note.type == XenNote.HYPERCALL_PAGE and isinstance(note.value, int):
            if note.source.startswith("__xen_guest"):
                return (note.value << abi.PAGE_SHIFT) + legacy_virt_base(image)
            return note.value
    return None


def legacy_virt_base(image: Image) -> int:
    """VIRT_BASE from the legacy ``__xen_guest`` section (0 when it names none)."""
    return next((int(n.value) for n in image.legacy_xen_notes if n.type == XenNote.VIRT_BASE), 0)


def scan_hypercalls(
    image: Image,
    skip: tuple[int, int] | None = None,
    shim_answers: frozenset[str] = frozenset(),
) -> HypercallScan:
    """Every direct call or jump into a stub of the hypercall page, by hypercall.

    ``skip``: a [start, end) virtual range whose calls are not the kernel's (a
    patched image's shim makes calls of its own). ``shim_answers``: the names of
    the hypercalls a patched image's PV ABI layer answers (its metadata option)."""
    page = hypercall_page(image)
    if page is None:
        return HypercallScan(None, [])
    found: dict[int, HypercallUse] = {}
    for segment in image.loadable_segments:
        if not segment.flags & SegmentFlags.X or not segment.filesz:
            continue
        size = len(image.data)  # a hostile header may point past the file
        span = (min(segment.offset, size), min(segment.offset + segment.filesz, size))
        for site, target in _rel32_targets(image.data, span, segment.vaddr, page):
            if skip is not None and skip[0] <= site < skip[1]:
                continue
            slot, rest = divmod(target - page, abi.HYPERCALL_STUB_SIZE)
            if not rest:
                found.setdefault(slot, HypercallUse(slot)).sites.append(site)
    for use in found.values():
        use.shim_answers = use.name in shim_answers
    return HypercallScan(page, [found[number] for number in sorted(found)])


def _rel32_targets(
    data: Buffer, span: tuple[int, int], base: int, page: int
) -> list[tuple[int, int]]:
    """(site, target) of every E8/E9 rel32 encoding in data[span] linked at base whose
    target lies in the page at ``page``, by site. The opcodes are found with find
    (memchr), neither copying the bytes nor visiting each one in Python, and only the
    hits are kept: patch scans inputs of any size, held mapped. A mapped input's
    pages are let go chunk by chunk, so the scan does not hold the image in memory."""
    start, end = span
    out = []
    for chunk in range(start, end, SCAN_CHUNK):
        last = min(chunk + SCAN_CHUNK, end - REL32_SIZE + 1)  # an encoding ends in the span
        for opcode in REL32_OPCODES:
            needle = bytes([opcode])
            at = data.find(needle, chunk, last)
            while at != -1:
                rel = int.from_bytes(data[at + 1 : at + REL32_SIZE], "little", signed=True)
                site = base + at - start
                target = (site + REL32_SIZE + rel) & MASK64
                if 0 <= target - page < abi.PAGE_SIZE:
                    out.append((site, target))
                at = data.find(needle, at + 1, last)
        _let_go(data, chunk, min(chunk + SCAN_CHUNK + REL32_SIZE, end))
    return sorted(out)


def _let_go(data: Buffer, start: int, end: int) -> None:
    """Drop a mapped file's pages in [start, end) from this process (they stay in the
    page cache); nothing for bytes in memory."""
    if isinstance(data, mmap.mmap):
        first = start - start % mmap.PAGESIZE
        data.madvise(mmap.MADV_DONTNEED, first, end - first)
