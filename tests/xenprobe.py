"""Numbers from Xen's public headers (Debian libxen-dev), as gcc compiles them: the
tests' independent source for every value shimgen takes from those headers."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

# A current interface version: older ones map sched_op, event_channel_op and
# physdev_op to their compat numbers (xen/include/public/xen.h).
INTERFACE_VERSION = "0x00040e00"
PROBE = """#define __XEN_INTERFACE_VERSION__ {version}
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
{includes}
int main(void) {{
{prints}
    return 0;
}}
"""


def xen_values(
    workdir: Path, expressions: Mapping[str, str], headers: Sequence[str] = ("xen/xen.h",)
) -> dict[str, int]:
    """name -> the value of its C expression, with headers included (paths under
    /usr/include). Fails the test with what to install when gcc or the headers are
    missing."""
    if shutil.which("gcc") is None or not Path("/usr/include/xen/xen.h").exists():
        pytest.fail("gcc and libxen-dev are needed: apt-get install gcc libxen-dev")
    source = PROBE.format(
        version=INTERFACE_VERSION,
        includes="\n".join(f"#include <{header}>" for header in headers),
        prints="\n".join(
            f'    printf("%s %lu\\n", "{name}", (unsigned long)({expression}));'
            for name, expression in expressions.items()
        ),
    )
    (workdir / "probe.c").write_text(source)
    subprocess.run(["gcc", "-o", str(workdir / "probe"), str(workdir / "probe.c")], check=True)
    out = subprocess.run([str(workdir / "probe")], capture_output=True, text=True, check=True)
    return {name: int(value) for name, value in (line.split() for line in out.stdout.splitlines())}
