"""ELF32 containers of x86 code, rewritten as ELF64 before a patch.

Two kinds of ELF32 kernel reach the patch:

- EM_X86_64: 64-bit code in an ELFCLASS32 file (XTF's hvm64 tests, ``objcopy -O
  elf32-x86-64`` builds). Xen reads it as a 64-bit guest.
- EM_386: 32-bit PVH kernels (XTF's hvm32 and hvm32pse tests) and Mini-OS's PVH
  build (64-bit code behind a 32-bit PHYS32_ENTRY). Only the pvh-passthrough
  handoff takes them (the planner refuses the others): their PVH entry is kept.

linux-loader (Firecracker, Cloud Hypervisor) takes ELF64 only and the patch writes
ELF64 program headers, so the container is converted first. e_machine is kept:
Xen's PVH loaders (libxenguest's and the PVH dom0 builder) and QEMU's PVH loader do
not look at it, while Xen's PV loader takes the guest type from it alone
(libxenguest's xc_dom_guest_type), so an EM_386 kernel stays a 32-bit PV guest and
is never mistaken for a 64-bit one. The converted file:

    0         Elf64_Ehdr, then the Elf64_Phdr table (same segments, same order)
    ...       zero padding up to ``offset`` (a multiple of every PT_LOAD's p_align)
    offset    the ELF32 file, byte for byte
    ...       the symbol tables again, as Elf64_Sym (they change size), then the
              Elf64_Shdr table (same sections, same order)

Every segment and section keeps its bytes, now ``offset`` further into the file
(p_offset stays congruent to p_vaddr), so what a loader places in memory does not
change, the headers included for a PT_LOAD that covers them. The ELF32 input is
``converted[offset : offset + len(input)]``: the patch records ``offset`` and
recovers the input from the output that way (patch.original_bytes).

Only static images are converted: sections whose entries differ between the
classes (relocations, dynamic linking tables) are refused rather than carried
over in a format the new header would misdescribe.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import Refused
from ..structs import round_up
from ..structs.elf import (
    ELFCLASS64,
    PN_XNUM,
    SHT_DYNSYM,
    SHT_SYMTAB,
    Machine,
    SegmentType,
    elf_header,
    program_header,
    section_header,
    symbol,
)
from ..structs.xen_abi import LARGE_PAGE_SIZE, PAGE_SIZE
from .image import Image, image_from_bytes

# Section types whose entries are laid out per class and that a static kernel has
# no use for (gABI: SHT_RELA 4, SHT_HASH 5, SHT_DYNAMIC 6, SHT_REL 9, GNU hash and
# version tables); symbol tables are converted instead.
CLASS_DEPENDENT_SECTIONS = {
    4: "SHT_RELA",
    5: "SHT_HASH",
    6: "SHT_DYNAMIC",
    9: "SHT_REL",
    0x6FFFFFF6: "SHT_GNU_HASH",
    0x6FFFFFFE: "SHT_GNU_verneed",
    0x6FFFFFFF: "SHT_GNU_versym",
}
SYMBOL_ALIGN = 8  # Elf64_Sym and Elf64_Shdr tables
EI_CLASS_OFFSET = 4


@dataclass(frozen=True)
class Converted:
    """The ELF64 image a patch works on, and how it came from the input."""

    image: Image  # the ELF64 image the patch works on
    form: str | None  # "elf32" when converted, None when the input was ELF64 already
    offset: int  # where the input's bytes start in image.data (0 when not converted)


CONVERTED_MACHINES = (Machine.X86_64, Machine.X86)


def needs_conversion(image: Image) -> bool:
    return image.elf_class == 32 and image.machine in CONVERTED_MACHINES


def normalize(image: Image) -> Converted:
    """The image as ELF64: converted when it is an ELF32 container of x86 code."""
    if not needs_conversion(image):
        return Converted(image=image, form=None, offset=0)
    data, offset = to_elf64(image)
    return Converted(image=image_from_bytes(data, image.path), form="elf32", offset=offset)


def _load_alignment(phdrs: list[dict[str, int]]) -> int:
    """The file offset shift that keeps every PT_LOAD congruent to its p_vaddr modulo
    its p_align: the largest power-of-two p_align, at least a page and at most a
    large page (no loader maps more coarsely; a hostile p_align must not make the
    file gigabytes long)."""
    align = PAGE_SIZE
    for phdr in phdrs:
        wanted = phdr["p_align"]
        if phdr["p_type"] == SegmentType.LOAD and wanted & (wanted - 1) == 0:
            align = max(align, min(wanted, LARGE_PAGE_SIZE))
    return align


def _check_convertible(image: Image, header: dict[str, int]) -> None:
    if image.header_overflow:
        raise Refused(f"{image.path}: {image.header_overflow[0]}: not converted to ELF64")
    if header["e_phnum"] == PN_XNUM or (header["e_shoff"] and not header["e_shnum"]):
        raise Refused(f"{image.path}: extended ELF numbering: not converted to ELF64")
    for section in image.sections:
        kind = CLASS_DEPENDENT_SECTIONS.get(section.type)
        if kind is not None:
            raise Refused(
                f"{image.path}: section {section.name or section.index} is {kind}: only "
                "static ELF32 containers of x86 code are converted to ELF64"
            )


def to_elf64(image: Image) -> tuple[bytes, int]:
    """(the ELF64 bytes, the offset of the original bytes in them)."""
    data = image.data
    h32, h64 = elf_header(32), elf_header(64)
    p32, p64 = program_header(32), program_header(64)
    s32, s64 = section_header(32), section_header(64)
    header = h32.unpack_from(data, 0)
    _check_convertible(image, header)
    phdrs = [
        p32.unpack_from(data, header["e_phoff"] + n * header["e_phentsize"])
        for n in range(header["e_phnum"])
    ]
    shdrs = [
        s32.unpack_from(data, header["e_shoff"] + n * header["e_shentsize"])
        for n in range(header["e_shnum"] if header["e_shoff"] else 0)
    ]
    offset = round_up(h64.size + p64.size * len(phdrs), _load_alignment(phdrs))
    tail = bytearray()
    body_end = offset + len(data)
    for shdr in shdrs:
        if shdr["sh_type"] != 0:  # SHT_NULL keeps its zeros
            shdr["sh_offset"] += offset
    for shdr in shdrs:
        if shdr["sh_type"] in (SHT_SYMTAB, SHT_DYNSYM):
            tail += b"\0" * (-(body_end + len(tail)) % SYMBOL_ALIGN)
            table = _symbols_as_elf64(data, shdr, offset)
            shdr.update(
                sh_offset=body_end + len(tail),
                sh_size=len(table),
                sh_entsize=symbol(64).size,
                sh_addralign=SYMBOL_ALIGN,
            )
            tail += table
    tail += b"\0" * (-(body_end + len(tail)) % SYMBOL_ALIGN)
    shoff = body_end + len(tail) if shdrs else 0
    new_header = dict(header)
    ident = bytearray(header["e_ident"])
    ident[EI_CLASS_OFFSET] = ELFCLASS64
    new_header.update(
        e_ident=bytes(ident),
        e_phoff=h64.size if phdrs else 0,
        e_shoff=shoff,
        e_ehsize=h64.size,
        e_phentsize=p64.size,
        e_shentsize=s64.size if shdrs else 0,
    )
    out = bytearray(h64.build(new_header))
    for phdr in phdrs:
        out += p64.build(phdr | {"p_offset": phdr["p_offset"] + offset})
    out += b"\0" * (offset - len(out))
    out += data
    out += tail
    for shdr in shdrs:
        out += s64.build(shdr)
    return bytes(out), offset


def _symbols_as_elf64(data: bytes, shdr: dict[str, int], shift: int) -> bytes:
    """The Elf32_Sym entries of a symbol table (sh_offset already shifted) as Elf64_Sym."""
    sym32, sym64 = symbol(32), symbol(64)
    start = shdr["sh_offset"] - shift
    count = min(shdr["sh_size"], max(0, len(data) - start)) // sym32.size
    return b"".join(
        sym64.build(sym32.unpack_from(data, start + n * sym32.size)) for n in range(count)
    )
