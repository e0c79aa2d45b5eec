"""`shimgen inspect` and `shimgen check`: what an image holds and whether it boots."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import ExitCode, UsageError
from ..structs.xen_abi import DEBIAN_XEN_CAPS
from .render import console, digest_text, hex_or_none, print_json


def register(commands: Any) -> None:
    inspect = commands.add_parser(
        "inspect",
        help="show segments, Xen notes and PV/PVH capability of an image",
        description=(
            "Show an image's segments, every Xen note with where it came from, and "
            "whether Xen (and QEMU, Firecracker, Cloud Hypervisor) would boot it as "
            "PV and as PVH, with the reasons. gzip-compressed images are read too. "
            "Exit 0 when the image could be read whole; 3 when it is not an image, or is "
            "truncated or malformed (every finding is still shown, and one line on stderr "
            "says how many errors there were)."
        ),
    )
    inspect.add_argument("image", help="ELF image (optionally gzip-compressed)")
    inspect.add_argument("--json", action="store_true", help="print the facts as JSON")
    inspect.add_argument(
        "--no-disasm",
        action="store_true",
        help="for a patched image, show the shim metadata but not its disassembly",
    )
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
    check.add_argument(
        "--xen-caps",
        metavar="CAPS",
        help=(
            "the guest types the hypervisor offers, as Xen lists them (`xl info`'s "
            'xen_caps), e.g. "xen-3.0-x86_64 xen-3.0-x86_32p hvm-3.0-x86_32"; default: '
            f'Debian\'s 64-bit Xen 4.17 without 32-bit PV, "{" ".join(DEBIAN_XEN_CAPS)}"'
        ),
    )
    check.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    check.set_defaults(handler=run_check)


def _caps(args: argparse.Namespace) -> tuple[str, ...]:
    text = getattr(args, "xen_caps", None)
    if text is None:
        return DEBIAN_XEN_CAPS
    caps = tuple(text.split())
    if not caps:
        raise UsageError("--xen-caps: give at least one guest type, e.g. xen-3.0-x86_64")
    return caps


# --- check ---------------------------------------------------------------------


def run_check(args: argparse.Namespace) -> int:
    from ..api import check

    verdicts = check(
        args.image,
        args.mode,
        strict=args.strict,
        xen_parser=args.xen_parser,
        xen_caps=_caps(args),
    )
    if args.json:
        print_json(verdicts.to_json())
    else:
        print("\n".join(_check_lines(args.image, verdicts)))
    return int(ExitCode.OK if verdicts.ok else ExitCode.FAILED)


def _check_lines(image: str, verdicts: Any) -> list[str]:
    lines = []
    for mode in verdicts.modes:
        problems = verdicts.problems(mode)
        if problems:
            lines += [f"{image}: {mode}: {problem}" for problem in problems]
        else:
            verdict = verdicts.verdict(mode)
            lines.append(f"{image}: {mode}: ok ({_describe_ok(verdict)})")
            if mode == "pvh":
                lines += [f"{image}: {mode}: warning: {w}" for w in verdicts.pvh_warnings()]
    for mode, answer in verdicts.libxenguest.items():
        lines.append(f"{image}: {mode}: libxenguest: {_describe_xen_answer(answer)}")
    return lines


def _describe_xen_answer(answer: Any) -> str:
    if answer.accepted_by_elf_loader:
        return f"ok ({answer.guest_type})"
    if answer.ok:
        # libxenguest's HVM firmware loader takes ELF32 images without a PVH entry.
        return f"no: taken only as HVM firmware by the {answer.loader} loader, not as PVH"
    return f"no: {answer.error or 'rejected'}"


def _describe_ok(verdict: Any) -> str:
    """The guest type is the capability the image needs from the hypervisor."""
    details = verdict.details
    entry = details.get("virt_entry")
    guest_type = details.get("guest_type", "?")
    return f"{guest_type}, entry {hex_or_none(entry)}; the host must offer {guest_type}"


# --- inspect ---------------------------------------------------------------------


def run_inspect(args: argparse.Namespace) -> int:
    from ..api import inspect

    report = inspect(args.image, disassemble=not args.no_disasm)
    if args.json:
        print_json(report.to_json())
    else:
        _show(report)
    return _malformed_status(args.image, report.image, report.shim_error)


def _malformed_status(path: str, image: Any, shim_error: str | None) -> int:
    """Like readelf, exit non-zero when the image is malformed (after all of it was
    shown): error findings, tables cut by the end of the file, a corrupt shimgen note."""
    errors = [f"{f.where}: {f.message}" for f in image.findings if f.severity == "error"]
    errors += image.header_overflow + ([shim_error] if shim_error else [])
    if not errors:
        return int(ExitCode.OK)
    first = errors[0].removeprefix(f"{path}: ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    print(f"shimgen: error: {path}: malformed: {first}{more}", file=sys.stderr)
    return int(ExitCode.BAD_INPUT)


def _show(report: Any) -> None:
    image, verdicts, shim, shim_error = (
        report.image,
        report.verdicts,
        report.shim,
        report.shim_error,
    )
    out = console()
    out.print(_summary(image, out))
    out.print(_segments_table(image))
    out.print(_xen_notes_table(image))
    other = [note for note in image.notes if not note.is_xen]
    if other:
        out.print(_other_notes_table(other))
    if image.findings:
        out.print(_findings_table(image))
    for verdict in (verdicts.pv, verdicts.pvh):
        out.print(_verdict_panel(verdict))
    if report.hypercalls.uses:
        out.print(_hypercalls_table(report.hypercalls))
    types = ", ".join(f'type = "{t}"' for t in verdicts.xl_types)
    if verdicts.pv.ok:  # Xen's pv-shim runs a PV kernel in a PVH container
        types += ', type = "pvh" + pvshim = 1'
    types = types or "none"
    out.print(f"[bold]xl configs this image runs with:[/] {types}")
    if shim_error:
        out.print(f"[red]shim metadata unreadable[/]: {_esc(shim_error)}")
    if shim is not None:
        out.print(_shim_panel(shim, out))
        if shim.disassembly is not None:
            out.print(_disasm_table(shim))
        elif shim.disasm_error:
            out.print(f"[yellow]shim disassembly unavailable[/]: {shim.disasm_error}")


MAX_ROWS = 200  # per table: a hostile image can hold 65536 notes; --json lists them all


def _esc(text: object) -> str:
    """Text from the image, shown as it is, never read as rich markup."""
    from rich.markup import escape

    return escape(str(text))


def _capped(items: list[Any]) -> tuple[list[Any], int]:
    return items[:MAX_ROWS], max(0, len(items) - MAX_ROWS)


def _note_more(table: Any, left_out: int) -> None:
    if left_out:
        table.add_row("…", f"[dim]{left_out} more rows: see --json[/]")


def _summary(image: Any, out: Any) -> str:
    compressed = " (gzip-compressed)" if image.compressed else ""
    return (
        f"[bold]{_esc(image.path)}[/]{compressed}: ELF{image.elf_class} {image.machine_name}, "
        f"e_entry {image.entry:#x}, {image.size} bytes, sha256 {digest_text(image.sha256, out)}"
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
    shown, left_out = _capped(image.segments)
    for s in shown:
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
    _note_more(table, left_out)
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
    shown, left_out = _capped(image.note_uses())
    for note, used, overridden_by in shown:
        if used:
            status = "yes"
        elif overridden_by:
            status = f"[dim]no: overridden by {_esc(overridden_by)}[/]"
        else:
            status = "[dim]no[/]"
        table.add_row(note.name, _esc(_note_value(note)), _esc(note.source), status)
    _note_more(table, left_out)
    return table


def _other_notes_table(notes: list[Any]) -> Any:
    table = _table("Other notes", "owner", "type", "descsz", "source")
    shown, left_out = _capped(notes)
    for note in shown:
        owner = _esc(note.owner) if note.owner else "(empty)"
        table.add_row(owner, f"{note.type:#x}", str(note.descsz), _esc(note.source))
    _note_more(table, left_out)
    return table


def _findings_table(image: Any) -> Any:
    table = _table("Findings", "severity", "where", "message")
    colours = {"error": "red", "warning": "yellow", "info": "blue"}
    shown, left_out = _capped(image.findings)
    for finding in shown:
        colour = colours.get(finding.severity, "white")
        table.add_row(
            f"[{colour}]{finding.severity}[/]", _esc(finding.where), _esc(finding.message)
        )
    _note_more(table, left_out)
    return table


def _hypercalls_table(scan: Any) -> Any:
    table = _table(
        f"Hypercalls the kernel calls through its page at {scan.page:#x}",
        "slot",
        "hypercall",
        "calls",
        "under PVH",
    )
    colours = {"xen": "green", "pv-only": "red", "restricted": "yellow"}
    for use in scan.uses:
        under = f"[{colours[use.under_pvh]}]{use.under_pvh}[/]"
        if use.shim_answers:
            under = f"[green]answered by the shim's PV ABI layer[/] (Xen: {use.under_pvh})"
        elif use.note:
            under += f": {use.note}"
        table.add_row(str(use.number), use.name, str(len(use.sites)), under)
    return table


def _verdict_panel(verdict: Any) -> Any:
    from rich.panel import Panel

    name = {"pv": "Xen PV", "pvh": "PVH (Xen, QEMU, Firecracker, Cloud Hypervisor)"}[verdict.mode]
    if verdict.ok:
        body = [f"[green]bootable[/]: {_describe_ok(verdict)}"]
    else:
        body = ["[red]not bootable[/]"] + [f"  {_esc(reason)}" for reason in verdict.reasons]
    body += [f"[yellow]warning[/]: {_esc(warning)}" for warning in verdict.warnings]
    return Panel("\n".join(body), title=name, title_align="left", expand=False)


# --- shim (patched images) ------------------------------------------------------------


def _shim_panel(shim: Any, out: Any) -> Any:
    from rich.panel import Panel

    meta = shim.meta
    options = ", ".join(f"{k}={v}" for k, v in sorted(meta.options.items())) or "none"
    phys32 = hex_or_none(meta.original_phys32_entry or None)
    body = [
        f"shimgen {meta.tool_version}, handoff [bold]{meta.handoff}[/], options: {options}",
        f"shim        vaddr {meta.shim_vaddr:#x}  paddr {meta.shim_paddr:#x}  "
        f"filesz {meta.shim_filesz:#x}  memsz {meta.shim_memsz:#x}  code {meta.shim_code_size:#x}",
        f"entries     PV {meta.pv_entry:#x} (virtual)  PVH {meta.pvh_entry:#x} (physical)",
        f"original    PV entry {meta.original_pv_entry:#x}  PHYS32_ENTRY {phys32}  "
        f"e_entry {meta.original_e_entry:#x}",
        f"            {meta.original_size} bytes, "
        f"sha256 {digest_text(meta.original_sha256.hex(), out)}, "
        f"e_phoff {meta.original_e_phoff:#x}, e_phnum {meta.original_e_phnum}",
        f"labels from {shim.labels_source}",
    ]
    return Panel("\n".join(body), title="Shim (shimgen metadata)", title_align="left", expand=False)


def _disasm_table(shim: Any) -> Any:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Shim disassembly", title_justify="left", title_style="bold", box=None)
    for column in ("address", "label", "bits", "bytes", "instruction"):
        table.add_column(column, justify="right" if column == "address" else "left")
    for insn in shim.disassembly:
        table.add_row(
            f"{insn.address:#x}",
            f"[cyan]{insn.label}:[/]" if insn.label else "",
            str(insn.bits) if insn.bits else "data",
            insn.bytes,
            escape(f"{insn.mnemonic} {insn.operands}".rstrip()),
        )
    return table
