"""Errors users see, each with its own exit status.

Every failure a user can cause or meet ends as one line on stderr and one of these
statuses; the CLI maps exceptions to them and never shows a traceback.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Each status with the words ``shimgen --help`` gives it (empty: not listed there)."""

    summary: str

    def __new__(cls, value: int, summary: str) -> ExitCode:
        member = int.__new__(cls, value)
        member._value_ = value
        member.summary = summary
        return member

    OK = 0, "ok"
    # images differ: diff; the guest failed: boot
    FAILED = 1, "the answer is no (not bootable, different, guest failed)"
    USAGE = 2, "usage"  # bad command line (argparse's own status)
    BAD_INPUT = 3, "unreadable or malformed input"  # truncated counts as malformed
    MISSING_TOOL = 4, "a needed tool is missing"  # QEMU, Xen, gcc or libxen-dev
    OUTPUT = 5, "output cannot be written"
    REFUSED = 6, "refused for this image"  # e.g. PV without a 64-bit entry
    INTERRUPTED = 130, ""  # Ctrl-C, as a shell reports SIGINT
    INTERNAL = 70, ""  # a bug in shimgen


def exit_status_help() -> str:
    """The exit statuses for --help, from :class:`ExitCode` itself."""
    listed = [f"{int(code)} {code.summary}" for code in ExitCode if code.summary]
    return f"Exit status: {'; '.join(listed)}."


class ShimgenError(Exception):
    """Base of the errors shimgen reports as one line."""

    exit_code = ExitCode.INTERNAL


class BadInput(ShimgenError):
    exit_code = ExitCode.BAD_INPUT


class MissingTool(ShimgenError):
    exit_code = ExitCode.MISSING_TOOL


class OutputError(ShimgenError):
    exit_code = ExitCode.OUTPUT


class Refused(ShimgenError):
    exit_code = ExitCode.REFUSED


class UsageError(ShimgenError):
    """A command line argparse accepted but the command cannot use (exit 2, as argparse)."""

    exit_code = ExitCode.USAGE
