"""shimgen: one x86-64 unikernel image that boots under Xen as PV and as PVH.

The public Python API lives in :mod:`shimgen.api` and its names are available here
too (``shimgen.patch``, ``shimgen.inspect``, ...), imported on first use so that
``import shimgen`` and the command line start fast.
"""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:  # no typing import: it costs the CLI 7 ms
    import importlib

    api = importlib.import_module("shimgen.api")  # not `from . import`: that asks __getattr__
    if name in api.__all__:
        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    import importlib

    api = importlib.import_module("shimgen.api")
    return sorted([*globals(), *api.__all__])
