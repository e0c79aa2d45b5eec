"""`shimgen diff A B`: what differs between two images, as their loaders see them."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import ExitCode
from .render import console, print_json


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "diff",
        help="structural difference of two images; exit 1 when they differ",
        description=(
            "Compare two images as loaders see them: ELF header, segments, sections, Xen "
            "and other notes, PV/PVH verdicts, shimgen metadata, the shim's code "
            "(disassembled) and the changed byte ranges of every segment. File layout "
            "that no loader sees (where tables sit, p_offset of identical contents, "
            "padding) is listed as ignored. Exit 0 when equal, 1 when different, 3 when "
            "an image cannot be read."
        ),
    )
    parser.add_argument("a", metavar="A", help="first image (optionally gzip-compressed)")
    parser.add_argument("b", metavar="B", help="second image")
    parser.add_argument("--json", action="store_true", help="print the differences as JSON")
    parser.set_defaults(handler=run_diff)


def run_diff(args: argparse.Namespace) -> int:
    from ..api import diff

    report = diff(args.a, args.b)
    if args.json:
        print_json(report.to_json())
    else:
        from ..verify.diff_text import show

        show(report, console())
    return int(ExitCode.OK if report.equal else ExitCode.FAILED)
