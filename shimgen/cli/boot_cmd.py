"""`shimgen boot IMAGE --loader ...`: boot for real and report what the kernel printed."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ExitCode
from .argtypes import unsigned

if TYPE_CHECKING:
    from ..verify.boot import BootResult

# Kept in step with shimgen.verify.boot (not imported here: start-up speed).
_XL_LOADERS = ("xl-pv", "xl-pvh", "xl-pvshim")
_LOADERS = ("qemu-pvh", "xen-pv", "xen-pvh", *_XL_LOADERS)
_MACHINES = ("q35", "pc", "microvm")

_VERDICT_STYLE = {"ok": "bold green", "timeout": "bold yellow"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "boot",
        help="boot an image under QEMU (PVH) or Xen inside QEMU, report what it printed",
        description=(
            "Boot IMAGE for real: under QEMU's PVH loader (-kernel), as dom0 of "
            "Debian's Xen 4.17 running inside QEMU (TCG), or as a domU that `xl create` "
            "starts in a Debian Linux dom0 there (xl-pv, xl-pvh, xl-pvshim: PV in a PVH "
            "container through Xen's pv-shim). Captures the guest's console, "
            "ends QEMU when the guest halts, shuts down, crashes or times out. Exit 0 "
            "only when the guest ended well (and --expect matched)."
        ),
    )
    parser.add_argument("image", type=Path, metavar="IMAGE", help="ELF kernel to boot")
    parser.add_argument("--loader", required=True, choices=_LOADERS, help="how to boot it")
    parser.add_argument(
        "--machine", choices=_MACHINES, help="QEMU machine for qemu-pvh (default q35)"
    )
    parser.add_argument("--cmdline", default="", metavar="S", help="kernel command line")
    parser.add_argument(
        "--expect", metavar="REGEX", help="also require this regex in the guest's output"
    )
    parser.add_argument(
        "--exit-on",
        metavar="REGEX",
        help="end the boot as soon as the guest printed this regex (verdict ok)",
    )
    parser.add_argument(
        "--shutdown-on",
        metavar="REGEX",
        help=(
            "xl loaders: ask the guest to power off (xl shutdown) once its output matches "
            "this regex (grep -E over its whole output: '.' crosses lines)"
        ),
    )
    parser.add_argument(
        "--exit-ok",
        type=unsigned,
        metavar="VALUE",
        help=(
            "the isa-debug-exit value that means success (default 0x10, the samples'); "
            "qemu-pvh, xen-pv, xen-pvh"
        ),
    )
    parser.add_argument(
        "--memory",
        type=int,
        metavar="MIB",
        help="the domU's memory for xl loaders (default 32)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help=(
            "seconds before giving up (30); for xl loaders, seconds the guest may run "
            "after xl started it (the rig's own start comes on top)"
        ),
    )
    parser.add_argument("--log", type=Path, metavar="FILE", help="save the raw console log")
    parser.add_argument(
        "--initrd",
        type=Path,
        metavar="FILE",
        help=(
            "a module for the kernel: QEMU's -initrd (hvm_start_info module 0), or dom0's "
            "initrd under Xen (start_info mod_start/mod_len for PV), or the domU's "
            "ramdisk under xl loaders"
        ),
    )
    parser.add_argument(
        "--xen",
        type=Path,
        metavar="PATH",
        help="Xen hypervisor (xen-*.gz or plain); default: Debian's 4.17, fetched once",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=_run, boot_parser=parser)


def _check_options(args: argparse.Namespace) -> None:
    """What argparse cannot check alone, reported the way it reports (usage, exit 2)."""
    parser: argparse.ArgumentParser = args.boot_parser
    if args.machine is not None and args.loader != "qemu-pvh":
        parser.error("--machine applies to --loader qemu-pvh only (Xen runs on 'pc')")
    if args.xen is not None and args.loader == "qemu-pvh":
        parser.error("--xen applies to the xen-* and xl-* loaders only")
    xl = args.loader in _XL_LOADERS
    if args.exit_ok is not None and xl:
        parser.error(
            "--exit-ok: a domU cannot reach QEMU's isa-debug-exit device; under xl "
            "loaders the verdict comes from the shutdown reason (poweroff = ok)"
        )
    if args.memory is not None and not xl:
        parser.error("--memory applies to the xl-* loaders only")
    if args.memory is not None and args.memory < 1:
        parser.error("--memory must be at least 1 MiB")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    if args.shutdown_on is not None and not xl:
        parser.error("--shutdown-on applies to the xl-* loaders only")
    regexes = (("--expect", args.expect), ("--exit-on", args.exit_on))
    for flag, regex in (*regexes, ("--shutdown-on", args.shutdown_on)):
        if regex is not None:
            try:
                re.compile(regex)
            except re.error as error:
                parser.error(f"{flag}: bad regex: {error}")


def _run(args: argparse.Namespace) -> int:
    _check_options(args)
    # No spinner with --json: scripts read stdout, and stderr stays quiet for them.
    result = _boot(args) if args.json else _boot_with_spinner(args)
    if args.json:
        from .render import print_json

        print_json(result.to_json())
    else:
        _render(result)
    return int(ExitCode.OK if result.ok else ExitCode.FAILED)


def _boot(args: argparse.Namespace, on_progress: Callable[[str], None] | None = None) -> BootResult:
    from ..api import boot

    return boot(
        args.image,
        args.loader,
        machine=args.machine,
        cmdline=args.cmdline,
        initrd=args.initrd,
        expect=args.expect,
        timeout=args.timeout,
        log=args.log,
        xen=args.xen,
        exit_on=args.exit_on,
        exit_ok=args.exit_ok,
        memory=args.memory,
        on_progress=on_progress,
        shutdown_on=args.shutdown_on,
    )


def _boot_with_spinner(args: argparse.Namespace) -> BootResult:
    from rich.console import Console

    label = f"{args.loader}: {args.image.name}"
    with Console(stderr=True).status(f"{label}: starting QEMU") as status:
        return _boot(args, on_progress=lambda stage: status.update(f"{label}: {stage}"))


def _render(result: BootResult) -> None:
    from rich.panel import Panel
    from rich.text import Text

    from .render import console

    out = console()
    style = _VERDICT_STYLE.get(str(result.verdict), "bold red")
    title = Text.assemble(
        (str(result.verdict), style), f"  {result.loader}  {Path(result.image).name}"
    )
    facts = _key_value_table(None, _facts(result))
    out.print(Panel(facts, title=title, title_align="left", expand=False))
    if result.report:
        out.print(_key_value_table("guest report", result.report.items()))
    elif result.guest_lines:
        out.print(_lines_table("guest output", result.guest_lines[-40:]))
    if result.xenstore:
        out.print(_key_value_table("xenstore (what libxl gave the domU)", result.xenstore.items()))
    if result.timings:
        out.print(_key_value_table("timings (s since QEMU started)", _timing_rows(result)))
    if result.xl_messages and result.verdict != "ok":
        out.print(_lines_table("xl create", result.xl_messages))
    if result.xen_build:
        out.print(_lines_table("Xen dom0 build", result.xen_build))
    if result.xen_errors:
        out.print(_lines_table("Xen errors", result.xen_errors, style="red"))
    if result.qemu_messages:
        out.print(_lines_table("QEMU", result.qemu_messages, style="red"))


def _facts(result: BootResult) -> list[tuple[str, str]]:
    rows = [
        ("reason", result.reason),
        ("ended by", str(result.end)),
        ("machine", result.machine),
        ("cmdline", repr(result.cmdline)),
        *([("initrd", result.initrd)] if result.initrd else []),
        (
            "qemu status",
            "ended by shimgen" if result.qemu_status is None else str(result.qemu_status),
        ),
        ("wall time", f"{result.wall_time:.2f} s"),
        ("guest lines", str(len(result.guest_lines))),
    ]
    if result.shutdown_reason is not None:
        rows.append(("shutdown reason", result.shutdown_reason))
    if result.domain_memory_mib is not None:
        rows.append(("domU memory", f"{result.domain_memory_mib} MiB (xl list)"))
    if result.host_memory_mib is not None:
        rows.append(("host memory", f"{result.host_memory_mib} MiB taken from Xen's free memory"))
    if result.debug_exit is not None:
        rows.append(("isa-debug-exit", f"{result.debug_exit:#x}"))
    if result.expect is not None:
        rows.append(
            ("expect", f"{result.expect!r}: {'matched' if result.expect_matched else 'no match'}")
        )
    return rows


def _timing_rows(result: BootResult) -> list[tuple[str, str]]:
    rows = [(stage.replace("_", " "), f"{value:.2f}") for stage, value in result.timings.items()]
    started, ended = result.timings.get("started"), result.timings.get("ended")
    if started is not None and ended is not None:
        rows.append(("guest ran", f"{ended - started:.2f}"))
    return rows


# Cells are Text, never markup: guest output and regexes may hold "[...]".
def _key_value_table(title: str | None, rows: Iterable[tuple[str, str]]):  # -> rich Table
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left", show_header=False, box=None, pad_edge=False)
    table.add_column(style="cyan", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(Text(key), Text(value))
    return table


def _lines_table(title: str, lines: list[str], style: str = ""):  # -> rich Table
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left", show_header=False, box=None, pad_edge=False)
    table.add_column(overflow="fold", style=style)
    for line in lines:
        table.add_row(Text(line))
    return table
