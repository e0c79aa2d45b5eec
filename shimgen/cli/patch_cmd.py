"""`shimgen patch`: produce the universal image (or show the plan with --dry-run)."""

from __future__ import annotations

import argparse

from .render import console, print_json

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on the patch path
if TYPE_CHECKING:
    from typing import Any

# plan.HANDOFFS, spelled out so that --help does not import the planner
# (tests/plan/test_plan.py checks they are the same)
HANDOFFS = ("start-info", "hvm-start-info", "pvh-passthrough")


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "patch",
        help="add the boot shim: one image that boots as Xen PV and as PVH",
        description=(
            "Write IMAGE plus a boot shim to OUT: a new PT_LOAD (shim code, page tables, "
            "reserved memory) and a last PT_NOTE with ENTRY and PHYS32_ENTRY pointing into "
            "the shim, the PV notes a loader needs, and a 'shimgen' metadata note. The input "
            "is never modified (unless --in-place); the output is written atomically and is "
            "byte-identical for the same input and options. gzip-compressed input and ELF32 "
            "containers of x86 code are accepted (32-bit EM_386 kernels with pvh-passthrough "
            "only); the output is always ELF64. Exit 6 when the image cannot be patched as "
            "asked (a PV boot of a PVH-only kernel, --single-entry on an image not linked "
            "virtual == physical...), is already patched (without --force), or already "
            "boots both ways (its own ENTRY and PHYS32_ENTRY; with --handoff auto)."
        ),
    )
    parser.add_argument("image", help="x86-64 kernel ELF (PV, PVH-only, or hvm_start_info)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("-o", "--output", help="where to write the result")
    where.add_argument(
        "--in-place",
        action="store_true",
        help=(
            "patch IMAGE itself: append the shim and program headers, then switch the ELF "
            "header in one write, so that a crash leaves the original or the patched image "
            "(a plain ELF64 only; the same bytes as -o)"
        ),
    )
    parser.add_argument(
        "--handoff",
        choices=("auto", *HANDOFFS),
        default="auto",
        help=(
            "what the kernel's entry expects: start-info (a PV entry taking start_info_t), "
            "hvm-start-info (a 64-bit entry taking struct hvm_start_info, with --entry64), "
            "pvh-passthrough (a PVH-only kernel keeps its 32-bit entry; no PV). Default "
            "auto: pvh-passthrough for a PVH-only kernel, hvm-start-info with --entry64, "
            "start-info otherwise"
        ),
    )
    parser.add_argument(
        "--entry",
        metavar="SYMBOL|ADDR",
        help="start-info: the kernel's 64-bit PV entry (default: ENTRY note, else e_entry)",
    )
    parser.add_argument(
        "--entry64",
        metavar="SYMBOL|ADDR",
        help="hvm-start-info: the kernel's 64-bit entry that takes a struct hvm_start_info",
    )
    parser.add_argument(
        "--single-entry",
        action="store_true",
        help=(
            "one polyglot entry for ENTRY, PHYS32_ENTRY and e_entry (needs virtual == "
            "physical and the shim below 4 GiB)"
        ),
    )
    parser.add_argument(
        "--replace-pvh-entry",
        action="store_true",
        help=(
            "for a kernel that already boots both ways (its own ENTRY and PHYS32_ENTRY): "
            "point PHYS32_ENTRY at the shim; without it an explicit --handoff keeps the "
            "kernel's own PVH entry (and auto refuses such a kernel: it needs no shim)"
        ),
    )
    layer = parser.add_mutually_exclusive_group()
    layer.add_argument(
        "--pv-abi",
        dest="pv_abi",
        action="store_const",
        const=True,
        help=(
            "start-info: put in the PV ABI layer, which answers PV-only hypercalls in the "
            "shim under PVH (docs/pv-abi.md); default: in when the kernel calls any "
            "hypercall Xen refuses under PVH"
        ),
    )
    layer.add_argument(
        "--no-pv-abi",
        dest="pv_abi",
        action="store_const",
        const=False,
        help="leave the PV ABI layer out",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    parser.add_argument(
        "--force",
        action="store_true",
        help="re-patch an already patched image from its original bytes",
    )
    parser.add_argument(
        "--no-digest",
        action="store_true",
        help=(
            "do not hash the input: the metadata records no sha256 (and says so), and a "
            "re-patch rebuilds the original unchecked"
        ),
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.set_defaults(handler=run_patch)


def run_patch(args: argparse.Namespace) -> int:
    from ..api import patch

    result = patch(
        args.image,
        None if args.in_place else args.output,
        handoff=args.handoff,
        entry=args.entry,
        entry64=args.entry64,
        single_entry=args.single_entry,
        force=args.force,
        dry_run=args.dry_run,
        replace_pvh_entry=args.replace_pvh_entry,
        in_place=args.in_place,
        digest=not args.no_digest,
        pv_abi=args.pv_abi,
    )
    args.output = result.output or args.output
    facts = result.to_json()
    if args.json:
        print_json(facts)
    else:
        _show(result.plan, facts, args)
    return 0


def _show(plan: Any, facts: dict[str, Any], args: argparse.Namespace) -> None:
    from rich.table import Table

    out = console()
    table = Table(title=f"shimgen patch plan ({plan.handoff})", show_header=True)
    table.add_column("item")
    table.add_column("value")
    rows = [
        (plan.spec.entry_title, f"{plan.kernel_entry:#x}"),
        ("VIRT_BASE - PADDR_OFFSET", f"{plan.delta:#x}"),
        ("shim segment", f"vaddr {plan.shim_vaddr:#x}  paddr {plan.shim_paddr:#x}"),
        (
            "shim size",
            f"code {len(plan.shim.code)} B, filesz {plan.filesz:#x}, memsz {plan.memsz:#x}",
        ),
        (
            "page tables",
            f"{plan.tables.frames} frames at {plan.tables.base:#x} "
            f"({plan.tables.large_pages} x 2 MiB, {plan.tables.small_pages} x 4 KiB)",
        ),
        ("PV entry (ENTRY)", "- (no PV boot)" if plan.pv_entry is None else f"{plan.pv_entry:#x}"),
        (
            "PVH entry (PHYS32_ENTRY)",
            f"{plan.pvh_entry:#x}" + (" (the kernel's own, kept)" if plan.kept_pvh_entry else ""),
        ),
        (
            "e_entry",
            f"{plan.e_entry:#x}" + (" (single polyglot entry)" if plan.single_entry else ""),
        ),
        (
            "hypercall page",
            "-"
            if plan.hypercall_page_virt is None
            else f"{plan.hypercall_page_virt:#x}"
            + (" (shim's own)" if plan.hypercall_page_own else " (kernel's)"),
        ),
        (
            "shimgen_boot_mode",
            "-" if plan.boot_mode_symbol is None else f"{plan.boot_mode_symbol:#x}",
        ),
        ("PV ABI layer", ("in: " if plan.pv_abi.on else "out: ") + plan.pv_abi.reason),
    ]
    for name, offset in plan.offsets.items():
        rows.append((f"  {name}", f"+{offset:#x} -> {plan.shim_vaddr + offset:#x}"))
    for index in plan.dropped_note_segments:
        rows.append((f"input PT_NOTE[{index}]", "left out (its Xen notes are copied)"))
    for note in plan.notes:
        rows.append(
            (f"note {note.owner.decode()} {note.label}", f"{note.action} ({len(note.desc)} bytes)")
        )
    for name, value in rows:
        table.add_row(name, value, style=None)
    out.print(table)
    for warning in plan.warnings:
        out.print(f"[yellow]warning:[/] {warning}")
    if args.dry_run:
        out.print("dry run: nothing written")
    else:
        what = "re-patched from the original bytes" if facts["repatched"] else "written"
        out.print(f"{args.output}: {what} ({facts['output_size']} bytes)")
