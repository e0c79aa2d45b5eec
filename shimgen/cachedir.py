"""The one folder shimgen caches things in, for the CLI, the tests and make alike.

``$SHIMGEN_CACHE`` when set, else the XDG cache folder: ``$XDG_CACHE_HOME/shimgen``,
or ``~/.cache/shimgen`` without XDG_CACHE_HOME. It holds Debian packages unpacked
for the real boots (debs/), decompressed hypervisors (xen/), the libxenguest helper
(native/) and assembled shim templates (asm/). Anything in it can be deleted: it is
fetched or rebuilt when next needed.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "SHIMGEN_CACHE"


def cache_dir() -> Path:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "shimgen"


def describe_cache() -> str:
    """Where the cache is and why there, for messages about something missing from it."""
    if os.environ.get(CACHE_ENV):
        return f"the shimgen cache {cache_dir()} (from ${CACHE_ENV})"
    default = "$XDG_CACHE_HOME/shimgen" if os.environ.get("XDG_CACHE_HOME") else "~/.cache/shimgen"
    return f"the shimgen cache {cache_dir()} ({default}; set ${CACHE_ENV} to use another)"
