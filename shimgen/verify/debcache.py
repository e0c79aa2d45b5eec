"""Debian packages fetched with ``apt-get download`` and unpacked into a cache folder.

Real Xen, Xen's readnotes and third-party Xen kernels come from Debian packages that
must never be installed into /: they are downloaded and unpacked with ``dpkg -x``
into the shimgen cache (shimgen/cachedir.py: ``$SHIMGEN_CACHE``, else
``$XDG_CACHE_HOME/shimgen`` or ~/.cache/shimgen), the same folder for make and the CLI.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..cachedir import cache_dir, describe_cache
from ..errors import MissingTool

__all__ = ["cache_dir", "unpacked_package"]


def is_cached(package: str) -> bool:
    """Whether unpacked_package(package) answers without downloading anything."""
    return (cache_dir() / "debs" / package / ".unpacked").exists()


def unpacked_package(package: str) -> Path:
    """Folder holding the unpacked files of a Debian package, downloading it once."""
    root = cache_dir() / "debs" / package
    if is_cached(package):
        return root
    missing = f"Debian package {package} is not in {describe_cache()}"
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise MissingTool(f"{missing}, and {tool} is not there to fetch it")
    # Say so: a download nobody expected (another cache folder) is minutes and ~10 MB.
    print(f"shimgen: {missing}: downloading it with apt-get (once)", file=sys.stderr)
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise MissingTool(f"{missing}, and it cannot be created: {error.strerror}") from None
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
                f"{missing}, and apt-get cannot download it ({reason}): run 'apt-get update' "
                "first, or point SHIMGEN_CACHE at a cache that holds it"
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
