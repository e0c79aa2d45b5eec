"""What a booted kernel and shimgen's boot harness (shimgen/verify/boot.py) agree on.

A kernel reports how it booted as console lines, each ``REPORT_PREFIX`` then
``key=value``, and ends the report with ``REPORT_PREFIX + REPORT_DONE``. Under QEMU it
ends the run by writing ``DEBUG_EXIT_OK`` or ``DEBUG_EXIT_FAIL`` to the isa-debug-exit
device the harness places at ``DEBUG_EXIT_PORT``; QEMU then exits with status 2*V+1
(QEMU's hw/misc/debugexit.c).

These are defined here once: the harness reads them, and ``shimgen layout --format c``
writes them into the C header the sample kernels include (structs/cheader.py).
"""

from __future__ import annotations

REPORT_PREFIX = "shimgen-sample: "
REPORT_DONE = "done"

DEBUG_EXIT_PORT = 0xF4
DEBUG_EXIT_OK = 0x10
DEBUG_EXIT_FAIL = 0x11
