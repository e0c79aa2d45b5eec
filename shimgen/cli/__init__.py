"""Command line: parse arguments, call one pipeline stage, render its result.

Each command lives in its own module with ``register(subparsers)``; the module sets
``handler`` on its parser. Handlers return an exit status. Errors the user can cause
are :class:`shimgen.errors.ShimgenError` and end as one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import ExitCode, ShimgenError, exit_status_help

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on the patch path
if TYPE_CHECKING:
    from typing import Any

# Command modules, in the order --help lists them, with the commands each registers.
_COMMAND_MODULES = {
    "layout_cmd": ("layout", "decode"),
    "inspect_cmd": ("inspect", "check"),
    "patch_cmd": ("patch",),
    "emulate_cmd": ("emulate",),
    "boot_cmd": ("boot",),
    "xlcfg_cmd": ("xlcfg",),
    "diff_cmd": ("diff",),
}


FALLBACK_COLUMNS = 80  # shutil.get_terminal_size's fallback width


def terminal_columns() -> int:
    """The width shutil.get_terminal_size() gives argparse (COLUMNS, else the
    terminal's, else 80), without importing shutil (and the bz2 and lzma it imports):
    argparse builds a formatter, asking the width, for every argument added."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or FALLBACK_COLUMNS
    except (AttributeError, ValueError, OSError):
        return FALLBACK_COLUMNS


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, its default width found without shutil."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        if width is None:
            width = terminal_columns() - 2  # as argparse takes it from shutil
        super().__init__(prog, indent_increment, max_help_position, width)


class ArgumentParser(argparse.ArgumentParser):
    """Each command's parser too (add_subparsers makes them of the parent's class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for every command, or, when argv names a command, for that one
    (building all eight subparsers costs a few milliseconds of every run)."""
    parser = ArgumentParser(
        prog="shimgen",
        description=(
            "Turn an x86-64 unikernel ELF into one image that boots under Xen as PV "
            "and as PVH (and through PVH under QEMU; for Firecracker and Cloud "
            "Hypervisor, their loader's rules are checked)."
        ),
        epilog=exit_status_help(),
    )
    parser.add_argument("--version", action="version", version=f"shimgen {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    import importlib

    for name in _modules_for(argv):
        module = importlib.import_module(f"{__name__}.{name}")
        module.register(commands)
    return parser


def _modules_for(argv: Sequence[str] | None) -> list[str]:
    """The module registering the command argv names; every module when it names none
    (``shimgen --help``) or one that does not exist (argparse lists the choices)."""
    words = [word for word in (sys.argv[1:] if argv is None else argv) if word[:1] != "-"]
    if words:
        for module, commands in _COMMAND_MODULES.items():
            if words[0] in commands:
                return [module]
    return list(_COMMAND_MODULES)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except ShimgenError as error:
        _fail(str(error))
        return int(error.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted")
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error worth a message.
        sys.stderr.close()
        return int(ExitCode.OK)
    except Exception as error:  # a bug: still one line, the traceback on request
        if os.environ.get("SHIMGEN_DEBUG"):
            raise
        _fail(
            f"internal error: {type(error).__name__}: {error} (set SHIMGEN_DEBUG=1 for a traceback)"
        )
        return int(ExitCode.INTERNAL)


def _fail(message: str) -> None:
    first_line = " ".join(message.split())
    print(f"shimgen: error: {first_line}", file=sys.stderr)
