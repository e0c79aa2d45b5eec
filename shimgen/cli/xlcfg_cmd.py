"""`shimgen xlcfg IMAGE`: print an xl config that boots the image as a domU."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import ExitCode


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "xlcfg",
        help="print an xl domain config that boots IMAGE (the one `boot --loader xl-*` uses)",
        description=(
            "Print an xl config (xl.cfg(5)) for IMAGE. The type defaults to pvh when the "
            "image can boot as PVH, else pv; --pvshim runs a PV kernel in a PVH container "
            "through Xen's pv-shim. Exit 1 when the image cannot boot as the type asked, "
            "with Xen's reason."
        ),
    )
    parser.add_argument("image", type=Path, metavar="IMAGE", help="ELF kernel")
    parser.add_argument("--type", choices=("pv", "pvh"), help="xl type (default: pvh if it can)")
    parser.add_argument(
        "--pvshim", action="store_true", help="type pvh with pvshim = 1 (needs a PV-capable image)"
    )
    parser.add_argument("--memory", type=int, default=None, metavar="MIB", help="memory (32)")
    parser.add_argument(
        "--maxmem", type=int, default=None, metavar="MIB", help="memory it may balloon up to"
    )
    parser.add_argument("--cmdline", default="", metavar="S", help="kernel command line")
    parser.add_argument("--ramdisk", type=Path, metavar="FILE", help="a module for the kernel")
    parser.add_argument("--name", default=None, metavar="NAME", help="domain name (the image's)")
    parser.set_defaults(handler=run_xlcfg)


def run_xlcfg(args: argparse.Namespace) -> int:
    from ..read.check import evaluate
    from ..read.image import read_image
    from ..verify.xlcfg import DEFAULT_MEMORY_MIB, XlConfig, render

    verdicts = evaluate(read_image(args.image))
    needed = "pv" if args.pvshim else args.type or ("pvh" if verdicts.pvh.ok else "pv")
    verdict = getattr(verdicts, needed)
    if not verdict.ok:
        what = "a PV kernel (pvshim)" if args.pvshim else f"type {needed}"
        reason = verdict.reasons[0] if verdict.reasons else "not bootable"
        print(f"shimgen: error: {args.image}: cannot boot as {what}: {reason}", file=sys.stderr)
        return int(ExitCode.FAILED)
    if args.pvshim and args.type == "pv":
        print("shimgen: error: --pvshim runs in a PVH container: drop --type pv", file=sys.stderr)
        return int(ExitCode.USAGE)
    config = XlConfig(
        kernel=args.image.resolve(),
        type="pvh" if args.pvshim else needed,
        pvshim=args.pvshim,
        memory=args.memory if args.memory is not None else DEFAULT_MEMORY_MIB,
        maxmem=args.maxmem,
        cmdline=args.cmdline,
        ramdisk=None if args.ramdisk is None else args.ramdisk.resolve(),
        name=args.name or args.image.name,
    )
    sys.stdout.write(render(config))
    return int(ExitCode.OK)
