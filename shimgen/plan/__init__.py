"""Plan a patch: which handoff, where the shim goes, what it reserves, which notes it
writes.

The shim segment follows the image, virtually and physically, with the image's own
translation (p_paddr = p_vaddr - (VIRT_BASE - PADDR_OFFSET)) so a PV loader maps it
where it was linked and a PVH loader puts it where its page tables say. Layout of
the segment, from its start:

    code        the assembled shim
    notes       the exact bytes of the new PT_NOTE (4-aligned)
    tables      prebuilt page tables (page aligned; none for pvh-passthrough)
                                                               <- end of p_filesz
    reserved    one page each, per handoff (HandoffSpec.reserved):
                start-info: start_info (the synthesized start_info_t), scratch
                (hypercall arguments, XENMEM_memory_map buffer), shared_info (the
                frame Xen's shared_info is mapped into);
                hvm-start-info: hvm_info (the hvm_start_info v1 the PV path
                builds, with its module entry, memory map and command line),
                scratch;
                pvh-passthrough: scratch (saved esp, the fallback mode word)
    hypercall   the shim's own hypercall page, only for a PV handoff whose kernel
                has none
    stack       the shim's stack, rsp starts at its top          <- end of p_memsz

Handoffs (README.md, samples/README.md): ``start-info`` enters a kernel's 64-bit PV
entry; ``hvm-start-info`` enters a 64-bit entry that takes a struct hvm_start_info
(``entry64``); ``pvh-passthrough`` keeps a PVH-only kernel's own 32-bit entry and
gives it no PV entry, because a PV guest starts in long mode at CPL 3 and can never
reach 32-bit protected mode. Each is one HandoffSpec (handoffs.py).

The modules, in the order make_plan (planner.py) uses them: facts.py (what the
image is, what it refuses), handoffs.py (the handoff and its kernel entry),
notes.py (the shim's PT_NOTE), layout.py (where the shim goes, its offsets, its
page tables), metadata.py (the metadata note).
"""

from ..shim.values import IDENTITY_MAP_SIZE, PAGE
from .handoffs import AUTO, HANDOFF_SPECS, HANDOFFS, HandoffSpec, resolve_handoff
from .metadata import original_facts, plan_arguments
from .notes import NoteEntry
from .planner import Plan, make_plan

__all__ = [
    "AUTO",
    "HANDOFFS",
    "HANDOFF_SPECS",
    "IDENTITY_MAP_SIZE",
    "PAGE",
    "HandoffSpec",
    "NoteEntry",
    "Plan",
    "make_plan",
    "original_facts",
    "plan_arguments",
    "resolve_handoff",
]
