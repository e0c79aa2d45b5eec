"""Debian packages fetched with ``apt-get download`` and unpacked into a cache folder.

Real Xen, Xen's readnotes and third-party Xen kernels come from Debian packages that
must never be installed into /: they are downloaded and unpacked with ``dpkg -x``
into ``$SHIMGEN_CACHE`` (default ``$XDG_CACHE_HOME/shimgen``, i.e. ~/.cache/shimgen).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import MissingTool


def cache_dir() -> Path:
    configured = os.environ.get("SHIMGEN_CACHE")
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "shimgen"


def is_cached(package: str) -> bool:
    """Whether unpacked_package(package) answers without downloading anything."""
    return (cache_dir() / "debs" / package / ".unpacked").exists()


def unpacked_package(package: str) -> Path:
    """Folder holding the unpacked files of a Debian package, downloading it once."""
    root = cache_dir() / "debs" / package
    if is_cached(package):
        return root
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise MissingTool(f"{tool} not found: fetch Debian package {package} by hand")
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent) as scratch:
        download = subprocess.run(
            ["apt-get", "download", package],
            cwd=scratch,
            capture_output=True,
            text=True,
        )
        debs = list(Path(scratch).glob("*.deb"))
        if download.returncode != 0 or not debs:
            reason = (download.stderr.strip().splitlines() or ["no .deb fetched"])[-1]
            raise MissingTool(
                f"cannot download Debian package {package} ({reason}); run 'apt-get update' first"
            )
        staging = Path(scratch) / "root"
        subprocess.run(["dpkg", "-x", str(debs[0]), str(staging)], check=True)
        (staging / ".unpacked").write_text(debs[0].name + "\n")
        if root.exists():
            shutil.rmtree(root)
        staging.rename(root)
    return root


def main(argv: list[str] | None = None) -> int:
    """`python -m shimgen.verify.debcache PKG...`: fetch packages into the cache (used by make)."""
    import sys

    from ..errors import ShimgenError

    packages = sys.argv[1:] if argv is None else argv
    try:
        for package in packages:
            print(f"{package}: {unpacked_package(package)}")
    except ShimgenError as error:
        print(f"shimgen: error: {error}", file=sys.stderr)
        return int(error.exit_code)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
