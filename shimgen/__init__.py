"""shimgen: one x86-64 unikernel image that boots under Xen as PV and as PVH.

The public Python API lives in :mod:`shimgen.api` and its names are available here
too (``shimgen.patch``, ``shimgen.inspect``, ...), imported on first use so that
``import shimgen`` and the command line start fast.
"""

import os as _os

__version__ = "0.1.0"

# structs/ and asm_templates/ sit at the top of a checkout and are installed inside
# the package (pyproject.toml's package-dir). Imported from a checkout without an
# editable install (`python -m shimgen` in the repository's root, where the
# checkout's shimgen/ shadows an installed one), they are found beside it instead.
_here = _os.path.dirname(__file__)
_beside = _os.path.dirname(_here)
if not _os.path.isdir(_os.path.join(_here, "structs")) and _os.path.isfile(
    _os.path.join(_beside, "structs", "__init__.py")
):
    __path__.append(_beside)
del _os, _here, _beside


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
