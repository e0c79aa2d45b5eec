"""xl domain configurations for an image: what `shimgen xlcfg` prints and the xl rig uses.

The format is xl's own (xl.cfg(5), parsed by libxlutil): `KEY = VALUE` lines, strings in
double quotes. libxlutil's string reader takes backslash escapes, so a backslash and a
double quote are escaped; a line break cannot be carried at all and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

XL_TYPES = ("pv", "pvh")
DEFAULT_MEMORY_MIB = 32
# xl keeps a stopped domain with these, so its shutdown reason can still be read.
PRESERVE = "preserve"
LIFECYCLE_KEYS = ("on_poweroff", "on_reboot", "on_crash")


@dataclass(frozen=True)
class XlConfig:
    kernel: Path
    type: str = "pvh"  # "pv" or "pvh"
    memory: int = DEFAULT_MEMORY_MIB  # MiB
    maxmem: int | None = None  # MiB the domain may balloon up to (above memory)
    cmdline: str = ""
    ramdisk: Path | None = None
    # run a PV kernel inside a PVH container through Xen's pv-shim (type must be "pvh")
    pvshim: bool = False
    name: str = "shimgen"
    vcpus: int = 1
    # on_poweroff/on_reboot/on_crash; None leaves xl's defaults (destroy, restart, destroy)
    lifecycle: str | None = None

    def __post_init__(self) -> None:
        if self.type not in XL_TYPES:
            raise UsageError(f"xl type must be one of {', '.join(XL_TYPES)}, not {self.type!r}")
        if self.pvshim and self.type != "pvh":
            raise UsageError("pvshim runs a PV kernel in a PVH container: it needs type pvh")
        if self.memory < 1:
            raise UsageError("memory must be at least 1 MiB")
        if self.maxmem is not None and self.maxmem < self.memory:
            raise UsageError("maxmem must not be below memory")


def render(config: XlConfig) -> str:
    """The config file's text, one setting a line, ending with a newline."""
    lines = [
        f"name = {_string(config.name)}",
        f"type = {_string(config.type)}",
        f"kernel = {_string(str(config.kernel))}",
        f"memory = {config.memory}",
        *([f"maxmem = {config.maxmem}"] if config.maxmem is not None else []),
        f"vcpus = {config.vcpus}",
    ]
    if config.pvshim:
        lines.append("pvshim = 1")
    if config.cmdline:
        lines.append(f"cmdline = {_string(config.cmdline)}")
    if config.ramdisk is not None:
        lines.append(f"ramdisk = {_string(str(config.ramdisk))}")
    if config.lifecycle is not None:
        lines += [f"{key} = {_string(config.lifecycle)}" for key in LIFECYCLE_KEYS]
    return "\n".join(lines) + "\n"


def _string(value: str) -> str:
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        raise UsageError(f"an xl config string cannot hold control characters: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def types_for(pv_ok: bool, pvh_ok: bool) -> list[str]:
    """The xl configurations an image with these verdicts can run as."""
    types = []
    if pv_ok:
        types.append("pv")
    if pvh_ok:
        types.append("pvh")
    if pv_ok:
        types.append("pvh+pvshim")
    return types
