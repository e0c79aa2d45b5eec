"""The image's own facts the plan stands on, and the images it refuses.

Everything here reads the (ELF64) image and libelf's verdicts on it; nothing
depends on the handoff chosen.
"""

from __future__ import annotations

from ..errors import Refused
from ..read.check import Verdicts
from ..read.image import Image
from ..shim.values import PAGE
from ..structs import XenNote
from ..structs import xen_abi as abi
from ..structs.clayout import MASK64
from ..structs.elf import Machine


def require_x86(image: Image, handoff: str, takes_32bit: bool) -> None:
    """x86-64 code in ELF64 (converted from ELF32 by container.py); 32-bit x86
    (EM_386) only for a handoff that ``takes_32bit`` kernels (pvh-passthrough, whose
    shim runs in the PVH entry's 32-bit mode and hands over to the kernel's own
    32-bit entry)."""
    if image.elf_class == 64 and image.machine == Machine.X86_64:
        return
    if image.elf_class == 64 and image.machine == Machine.X86:
        if takes_32bit:
            return
        raise Refused(
            f"{image.path}: a 32-bit x86 kernel (e_machine EM_386) has no 64-bit entry for "
            f"the {handoff} handoff; a PVH kernel keeps its own 32-bit entry with "
            "--handoff pvh-passthrough (PVH only). If it holds 64-bit code (as Mini-OS's "
            "PVH build does), convert it first: objcopy -I elf32-i386 -O elf64-x86-64 "
            f"{image.path} {image.path}.elf64"
        )
    raise Refused(
        f"{image.path}: shimgen patches x86 kernels (EM_X86_64, or EM_386 with "
        f"--handoff pvh-passthrough) in an ELF64 or ELF32 container; this is "
        f"ELF{image.elf_class} {image.machine_name}"
    )


def require_mappable_segments(image: Image) -> None:
    """Segments the shim's page tables can map: at least one, inside the 64-bit
    address space, and p_vaddr and p_paddr at the same offset in their page."""
    if not image.loadable_segments:
        raise Refused(f"{image.path}: no loadable segment")
    for segment in image.loadable_segments:
        where = f"{image.path}: segment {segment.index}"
        if max(segment.vaddr, segment.paddr) + segment.memsz > MASK64 + 1:
            raise Refused(f"{where} runs past the end of the 64-bit address space")
        if (segment.vaddr - segment.paddr) % PAGE:
            raise Refused(
                f"{where}: p_vaddr {segment.vaddr:#x} and p_paddr {segment.paddr:#x} differ "
                "inside a page: no page table maps one to the other"
            )


def translation(image: Image, verdicts: Verdicts) -> int:
    """VIRT_BASE - PADDR_OFFSET as libelf computes them for PV: what the shim
    segment's p_vaddr - p_paddr is too."""
    details = verdicts.pv.details
    if "virt_base" in details:
        delta = (details["virt_base"] - details["elf_paddr_offset"]) & MASK64
    else:
        loads = image.loadable_segments
        delta = (loads[0].vaddr - loads[0].paddr) & MASK64 if loads else 0
    if delta % PAGE:
        raise Refused(
            f"{image.path}: VIRT_BASE - PADDR_OFFSET is {delta:#x}, not page aligned: "
            "no page table maps the image"
        )
    return delta


def already_universal(image: Image) -> bool:
    """The kernel has its own PV entry and its own PVH entry, in the notes Xen reads:
    like Linux's vmlinux, it boots both ways without a shim."""
    present = {note.type for note in image.xen_notes}
    return XenNote.ENTRY in present and XenNote.PHYS32_ENTRY in present


def pvh_only(image: Image, verdicts: Verdicts) -> int | None:
    """The PHYS32_ENTRY of a kernel that boots as PVH and has no PV entry, else None."""
    if verdicts.pv.ok or any(n.type == XenNote.ENTRY for n in image.xen_notes):
        return None
    if not verdicts.pvh.ok:
        return None
    return verdicts.pvh.details.get("phys_entry")


def symbol_or_address(image: Image, value: str, option: str) -> int:
    if value in image.symbols:
        return image.symbols[value]
    try:
        return int(value, 0)
    except ValueError:
        raise Refused(f"{option} {value}: no such symbol and not an address") from None


def require_executable(image: Image, vaddr: int, what: str, hint: str) -> int:
    segment = image.segment_of(vaddr)
    if segment is None or not segment.executable:
        raise Refused(
            f"{image.path}: {what} {vaddr:#x} is not in an executable loadable segment; {hint}"
        )
    return vaddr


def boot_mode_symbol(image: Image, warnings: list[str]) -> int | None:
    """The kernel's shimgen_boot_mode (virtual), when it is loaded."""
    boot_mode = image.symbols.get(abi.BOOT_MODE_SYMBOL)
    if boot_mode is not None and image.segment_of(boot_mode) is None:
        warnings.append(f"{abi.BOOT_MODE_SYMBOL} at {boot_mode:#x} is not loaded: not written")
        return None
    return boot_mode


def pseudo_physical_base(image: Image, delta: int, verdicts: Verdicts, handoff: str) -> int:
    """What a PV path subtracts from a virtual address to get the pseudo-physical
    one. Xen's initial mapping puts pfn N at VIRT_BASE + N pages, so pseudo-physical
    = virtual - VIRT_BASE; that equals p_paddr only when PADDR_OFFSET is 0."""
    details = verdicts.pv.details
    if any(n.type == XenNote.VIRT_BASE for n in image.xen_notes) and "virt_base" in details:
        if details["elf_paddr_offset"]:
            raise Refused(
                f"{image.path}: PADDR_OFFSET {details['elf_paddr_offset']:#x} is not 0: under "
                "PV its pseudo-physical addresses would differ from its p_paddr, and "
                f"{handoff} gives the kernel one physical address space in both modes"
            )
        return details["virt_base"]
    return delta  # VIRT_BASE = delta is added as a note (notes.translation_notes)
