"""`shimgen inspect` and `shimgen check`: what an image holds and whether it boots."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import ExitCode
from .render import console, hex_or_none, print_json


def register(commands: Any) -> None:
    inspect = commands.add_parser(
        "inspect",
        help="show segments, Xen notes and PV/PVH capability of an image",
        description=(
            "Show an image's segments, every Xen note with where it came from, and "
            "whether Xen (and QEMU, Firecracker, Cloud Hypervisor) would boot it as "
            "PV and as PVH, with the reasons. gzip-compressed images are read too. "
            "Exit 0 whenever the image could be read."
        ),
    )
    inspect.add_argument("image", help="ELF image (optionally gzip-compressed)")
    inspect.add_argument("--json", action="store_true", help="print the facts as JSON")
    inspect.set_defaults(handler=run_inspect)

    check = commands.add_parser(
        "check",
        help="check that an image boots as PV and/or PVH; exit 1 when it does not",
        description=(
            "Validate an image as Xen's libelf and libxenguest would, plus QEMU's and "
            "linux-loader's PVH rules. One line per problem. Exit 0 when bootable in "
            "the asked mode(s), 1 when not, 3 when the image cannot be read."
        ),
    )
    check.add_argument("image", help="ELF image (optionally gzip-compressed)")
    check.add_argument(
        "--mode",
        choices=("pv", "pvh", "both"),
        default="both",
        help="which boot mode(s) must work (default: both)",
    )
    check.add_argument(
        "--strict",
        action="store_true",
        help="also fail on loader warnings (QEMU, Firecracker, Cloud Hypervisor) in PVH",
    )
    check.add_argument(
        "--xen-parser",
        action="store_true",
        help=(
            "also ask Xen's own toolstack parser (libxenguest, the code `xl create` runs) "
            "for its verdict; needs gcc and libxen-dev"
        ),
    )
    check.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    check.set_defaults(handler=run_check)


def _read(path: str) -> tuple[Any, Any]:
    from ..check import evaluate
    from ..image import read_image

    image = read_image(path)
    return image, evaluate(image)


# --- check ---------------------------------------------------------------------


def _modes(choice: str) -> tuple[str, ...]:
    return ("pv", "pvh") if choice == "both" else (choice,)


def run_check(args: argparse.Namespace) -> int:
    image, verdicts = _read(args.image)
    failed = False
    lines = []
    for mode in _modes(args.mode):
        verdict = getattr(verdicts, mode)
        problems = list(verdict.reasons)
        if args.strict and mode == "pvh":
            problems += verdict.warnings
        failed |= bool(problems) or not verdict.ok
        if problems:
            lines += [f"{args.image}: {mode}: {problem}" for problem in problems]
        else:
            lines.append(f"{args.image}: {mode}: ok ({_describe_ok(verdict)})")
            if mode == "pvh":
                lines += [f"{args.image}: {mode}: warning: {w}" for w in verdict.warnings]
    xen_answers = _xen_parser_answers(args) if args.xen_parser else {}
    for mode, answer in xen_answers.items():
        failed |= not answer.accepted_by_elf_loader
        lines.append(f"{args.image}: {mode}: libxenguest: {_describe_xen_answer(answer)}")
    if args.json:
        print_json(
            {
                "image": args.image,
                "modes": list(_modes(args.mode)),
                "ok": not failed,
                **{mode: getattr(verdicts, mode).to_json() for mode in _modes(args.mode)},
                "libxenguest": {
                    mode: {
                        "ok": answer.accepted_by_elf_loader,
                        "loader": answer.loader,
                        "guest_type": answer.guest_type,
                        "error": answer.error,
                    }
                    for mode, answer in xen_answers.items()
                },
                "findings": [f.__dict__ for f in image.findings],
            }
        )
    else:
        print("\n".join(lines))
    return int(ExitCode.FAILED if failed else ExitCode.OK)


def _xen_parser_answers(args: argparse.Namespace) -> dict[str, Any]:
    from .. import xenparser

    return {mode: xenparser.parse(args.image, mode) for mode in _modes(args.mode)}


def _describe_xen_answer(answer: Any) -> str:
    if answer.accepted_by_elf_loader:
        return f"ok ({answer.guest_type})"
    if answer.ok:
        # libxenguest's HVM firmware loader takes ELF32 images without a PVH entry.
        return f"no: taken only as HVM firmware by the {answer.loader} loader, not as PVH"
    return f"no: {answer.error or 'rejected'}"


def _describe_ok(verdict: Any) -> str:
    details = verdict.details
    entry = details.get("virt_entry")
    return f"{details.get('guest_type', '?')}, entry {hex_or_none(entry)}"


# --- inspect ---------------------------------------------------------------------


def run_inspect(args: argparse.Namespace) -> int:
    image, verdicts = _read(args.image)
    if args.json:
        print_json(image.to_json() | {"verdicts": verdicts.to_json()})
        return int(ExitCode.OK)
    out = console()
    out.print(_summary(image))
    out.print(_segments_table(image))
    out.print(_xen_notes_table(image))
    other = [note for note in image.notes if not note.is_xen]
    if other:
        out.print(_other_notes_table(other))
    if image.findings:
        out.print(_findings_table(image))
    for verdict in (verdicts.pv, verdicts.pvh):
        out.print(_verdict_panel(verdict))
    types = ", ".join(f'type = "{t}"' for t in verdicts.xl_types) or "none"
    out.print(f"[bold]xl configs this image runs with:[/] {types}")
    return int(ExitCode.OK)


def _summary(image: Any) -> str:
    compressed = " (gzip-compressed)" if image.compressed else ""
    return (
        f"[bold]{image.path}[/]{compressed}: ELF{image.elf_class} {image.machine_name}, "
        f"e_entry {image.entry:#x}, {image.size} bytes, sha256 {image.sha256[:16]}…"
    )


def _table(title: str, *columns: str) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left", title_style="bold")
    for column in columns:
        justify = "right" if column in ("offset", "vaddr", "paddr", "filesz", "memsz") else "left"
        table.add_column(column, justify=justify)
    return table


def _segments_table(image: Any) -> Any:
    table = _table(
        "Segments", "#", "type", "offset", "vaddr", "paddr", "filesz", "memsz", "flags", "align"
    )
    for s in image.segments:
        table.add_row(
            str(s.index),
            s.type_name,
            f"{s.offset:#x}",
            f"{s.vaddr:#x}",
            f"{s.paddr:#x}",
            f"{s.filesz:#x}",
            f"{s.memsz:#x}",
            s.flags_text,
            f"{s.align:#x}",
        )
    return table


def _note_value(note: Any) -> str:
    value = note.value
    if isinstance(value, int):
        return f"{value:#x} ({note.width} bytes)"
    if isinstance(value, list):
        return "[" + ", ".join(f"{v:#x}" for v in value) + "]"
    return repr(value) if isinstance(value, str) else str(value)


def _xen_notes_table(image: Any) -> Any:
    origin = image.note_origin
    title = "Xen notes" + (f" (Xen reads the {origin})" if origin else " (none)")
    table = _table(title, "note", "value", "source", "used")
    for group, notes in (
        ("segments", image.segment_xen_notes),
        ("sections", image.section_xen_notes),
        ("legacy", image.legacy_xen_notes),
    ):
        for note in notes:
            used = "yes" if group == origin else "[dim]no[/]"
            table.add_row(note.name, _note_value(note), note.source, used)
    return table


def _other_notes_table(notes: list[Any]) -> Any:
    table = _table("Other notes", "owner", "type", "descsz", "source")
    for note in notes:
        table.add_row(note.owner or "(empty)", f"{note.type:#x}", str(note.descsz), note.source)
    return table


def _findings_table(image: Any) -> Any:
    table = _table("Findings", "severity", "where", "message")
    colours = {"error": "red", "warning": "yellow", "info": "blue"}
    for finding in image.findings:
        colour = colours.get(finding.severity, "white")
        table.add_row(f"[{colour}]{finding.severity}[/]", finding.where, finding.message)
    return table


def _verdict_panel(verdict: Any) -> Any:
    from rich.panel import Panel

    name = {"pv": "Xen PV", "pvh": "PVH (Xen, QEMU, Firecracker, Cloud Hypervisor)"}[verdict.mode]
    if verdict.ok:
        body = [f"[green]bootable[/]: {_describe_ok(verdict)}"]
    else:
        body = ["[red]not bootable[/]"] + [f"  {reason}" for reason in verdict.reasons]
    body += [f"[yellow]warning[/]: {warning}" for warning in verdict.warnings]
    return Panel("\n".join(body), title=name, title_align="left", expand=False)
