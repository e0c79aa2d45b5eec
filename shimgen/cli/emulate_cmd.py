"""`shimgen emulate`: run the shim in Unicorn up to the kernel entry and show the handoff."""

from __future__ import annotations

import argparse
from typing import Any

from .argtypes import u64
from .render import console, print_json


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "emulate",
        help="run a patched image's shim in an emulator and show the kernel handoff",
        description=(
            "Run the shim of a patched IMAGE in Unicorn from the start state Xen (or QEMU "
            "with --no-xen) builds, playing the hypervisor's cpuid leaves, MSR and "
            "hypercalls, until the kernel's entry. Shows registers, instructions executed "
            "and the boot structure the kernel gets: the synthesized start_info "
            "(start-info), the hvm_start_info with its command line, modules and memory "
            "map (hvm-start-info, pvh-passthrough). Exit 0 when the kernel entry was "
            "reached, 1 when the shim halted or faulted, 6 for --mode pv on an image "
            "without a PV entry."
        ),
    )
    parser.add_argument("image", help="an image patched by `shimgen patch`")
    parser.add_argument("--mode", choices=("pv", "pvh"), required=True)
    parser.add_argument("--cmdline", default="", help="command line the loader passes")
    parser.add_argument(
        "--no-xen",
        action="store_true",
        help="PVH without Xen (QEMU, Firecracker): no Xen cpuid leaves",
    )
    parser.add_argument(
        "--hvm-version",
        type=int,
        choices=(0, 1),
        default=1,
        help="hvm_start_info version (0: no memory map)",
    )
    parser.add_argument(
        "--bad-magic",
        action="store_true",
        help="corrupt the boot structure's magic (the shim must halt)",
    )
    hostile = parser.add_argument_group(
        "hostile loaders",
        "What a broken loader could hand over. RAM is 128 MiB (--memory); past it and below 4 GiB "
        "reads see open bus (0xff); at or above 4 GiB nothing is mapped.",
    )
    hostile.add_argument(
        "--set",
        metavar="FIELD=VALUE",
        action="append",
        default=[],
        type=_field_value,
        help=(
            "PVH: overwrite an hvm_start_info field the loader wrote (e.g. "
            "memmap_entries=0xffffffff, cmdline_paddr=0x100000000); repeatable"
        ),
    )
    hostile.add_argument(
        "--info-at",
        metavar="ADDR",
        type=u64,
        help="PVH: put hvm_start_info at this physical address (cut off at 4 GiB)",
    )
    hostile.add_argument(
        "--cmdline-unterminated",
        action="store_true",
        help="PVH: put the command line in the last bytes of RAM with no NUL",
    )
    hostile.add_argument(
        "--wrong-mode",
        action="store_true",
        help="enter the PV entry in 32-bit mode, or the PVH entry in long mode",
    )
    hostile.add_argument(
        "--other-hypervisor",
        action="store_true",
        help=(
            "another hypervisor's cpuid leaves (Viridian's) at 0x40000000: Xen's move to "
            "0x40000100; with --no-xen, KVM or Hyper-V alone"
        ),
    )
    parser.add_argument(
        "--run-kernel",
        action="store_true",
        help=(
            "go on past the kernel's entry up to its hlt (the kernel's hypercalls through "
            "the shim's PV ABI layer run too); registers are the kernel's at the end"
        ),
    )
    parser.add_argument(
        "--memory",
        metavar="MIB",
        type=int,
        help="the guest's RAM in MiB (default 128; xl's domUs often get 32)",
    )
    parser.add_argument("--trace", action="store_true", help="list every instruction run")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=run_emulate)


def run_emulate(args: argparse.Namespace) -> int:
    from ..api import EMULATED_MEMORY_RANGE_MIB, emulate
    from ..errors import UsageError

    low, high = EMULATED_MEMORY_RANGE_MIB
    if args.memory is not None and not low <= args.memory <= high:
        raise UsageError(f"--memory must be {low} to {high} MiB, not {args.memory}")
    try:
        result = emulate(
            args.image,
            args.mode,
            cmdline=args.cmdline,
            xen=not args.no_xen,
            hvm_version=args.hvm_version,
            bad_magic=args.bad_magic,
            other_hypervisor=args.other_hypervisor,
            hvm_fields=dict(args.set),
            info_at=args.info_at,
            cmdline_unterminated=args.cmdline_unterminated,
            wrong_mode=args.wrong_mode,
            run_kernel=args.run_kernel,
            trace=args.trace,
            memory_mib=args.memory,
        )
    except UsageError as error:  # argparse checked the rest: a --set field was refused
        raise UsageError(f"--set: {error}") from None
    if args.json:
        print_json(result.to_json())
    else:
        _show(result, args)
    return 0 if result.reached_kernel else 1


def _field_value(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    try:
        return name.strip(), u64(value.strip())
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"{name.strip()}: {error}") from None


def _show(result: Any, args: argparse.Namespace) -> None:
    from rich.table import Table

    out = console()
    if args.trace:
        for line in result.trace:
            out.print(line, markup=False)
    where = (
        "PVH under Xen"
        if result.mode == "pvh" and result.xen
        else ("PVH without Xen" if result.mode == "pvh" else "Xen PV")
    )
    out.print(f"{where}: {result.outcome} after {result.instructions} instructions", markup=False)
    if result.kernel_instructions:
        out.print(f"  of which the kernel's: {result.kernel_instructions}", markup=False)
    if result.debug_output:
        out.print(f"guest output: {result.debug_output.decode('latin-1')!r}", markup=False)
    if result.console_output:
        text = result.console_output.decode("latin-1")
        out.print(f"console ring: {text!r}", markup=False)
    regs = Table(title="registers")
    regs.add_column("register")
    regs.add_column("value")
    for name, value in result.registers.items():
        regs.add_row(name, f"{value:#x}")
    out.print(regs)
    if result.start_info is not None:
        out.print(_fields("start_info at rsi", result.start_info))
    if result.hvm_start_info is not None:
        where = "ebx" if result.handoff == "pvh-passthrough" else "rsi"
        out.print(_fields(f"hvm_start_info at {where}", result.hvm_start_info))
    if result.boot_mode_var is not None:
        out.print(f"shimgen_boot_mode = {result.boot_mode_var}", markup=False)
    for line in result.hypercalls:
        out.print(f"hypervisor: {line}", markup=False)


def _fields(title: str, data: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("field")
    table.add_column("value")
    for name, value in _flatten(data):
        table.add_row(name, f"{value:#x}" if isinstance(value, int) else repr(value))
    return table


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows = []
    for key, value in data.items():
        if isinstance(value, dict):
            rows += _flatten(value, f"{prefix}{key}.")
        elif isinstance(value, list):  # module list, memory map
            for index, item in enumerate(value):
                rows += _flatten(item, f"{prefix}{key}[{index}].")
        else:
            rows.append((f"{prefix}{key}", value))
    return rows
