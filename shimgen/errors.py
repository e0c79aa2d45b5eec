"""Errors users see, each with its own exit status.

Every failure a user can cause or meet ends as one line on stderr and one of these
statuses; the CLI maps exceptions to them and never shows a traceback.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1  # the answer is "no": not bootable, images differ, the guest failed
    USAGE = 2  # bad command line (argparse's own status)
    BAD_INPUT = 3  # unreadable, truncated or malformed input file
    MISSING_TOOL = 4  # QEMU, Xen, gcc or libxen-dev not available
    OUTPUT = 5  # the output cannot be written
    REFUSED = 6  # the request cannot be honoured for this image (e.g. PV without a 64-bit entry)
    INTERRUPTED = 130
    INTERNAL = 70  # a bug in shimgen


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
