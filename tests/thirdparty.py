"""Third-party kernels for tests, built once from pinned source archives.

The archives (XTF, Mini-OS: `git archive` snapshots, unmodified) live outside the
project in ``../shared/thirdparty`` seen from the main checkout (a git worktree
finds it through its main checkout), or wherever ``SHIMGEN_THIRDPARTY`` points.
Each is unpacked into ``$SHIMGEN_CACHE/thirdparty/<archive>-<sha256 prefix>/<tree>``
and built there by its own Makefile; a build is incremental, so asking for a
second XTF test group compiles only that group.

A user's clone has no archives: the tests that need them skip, saying so. In CI
(``CI`` set) they fail instead, because CI must run them (tests/conftest.py turns
every skip into a failure there; `Unavailable` says why).

Several test sessions may share the cache: unpacking and building hold an
exclusive lock on the tree, and a tree appears under its final name only once it
is complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from shimgen.verify.debcache import cache_dir

REPO_ROOT = Path(__file__).resolve().parent.parent
ARCHIVES = {"xtf": "xtf-453490df.tar.gz", "mini-os": "mini-os-2d3b22f8.tar.gz"}
BUILD_SECONDS = 600  # a test group builds in seconds; generous for a loaded machine
XEN_HEADERS = Path("/usr/include/xen")  # Debian's libxen-dev: Mini-OS builds against them
MINI_OS_CONFIGS = {
    # Mini-OS's own console (console_io for dom0, the ring for a domU).
    "pv": ("CONFIG_USE_XEN_CONSOLE=y",),
    # Its PV build with its test application (test.c): a periodic thread prints the
    # time every second (msleep: set_timer_op and SCHEDOP_block), then xenbus tests.
    "pv-test": ("CONFIG_USE_XEN_CONSOLE=y", "CONFIG_TEST=y"),
    # Its PVH build: an ELF32 EM_386 container of 64-bit code.
    "pvh": ("CONFIG_USE_XEN_CONSOLE=y", "CONFIG_PARAVIRT=n"),
}


class Unavailable(Exception):
    """The archives or the tools to build them are missing (a skip, or in CI a failure)."""


def _main_checkout() -> Path:
    """The main checkout of the repository this file is in (itself, unless a worktree)."""
    dot_git = REPO_ROOT / ".git"
    if dot_git.is_file():  # a worktree: "gitdir: <main>/.git/worktrees/<name>"
        gitdir = Path(dot_git.read_text().split(":", 1)[1].strip())
        common = gitdir / "commondir"
        if common.exists():
            return (gitdir / common.read_text().strip()).resolve().parent
    return REPO_ROOT


def archive_dir() -> Path:
    configured = os.environ.get("SHIMGEN_THIRDPARTY")
    if configured:
        return Path(configured)
    for root in (REPO_ROOT, _main_checkout()):
        candidate = root.parent / "shared" / "thirdparty"
        if candidate.is_dir():
            return candidate
    return REPO_ROOT.parent / "shared" / "thirdparty"


def archive(name: str) -> Path:
    path = archive_dir() / ARCHIVES[name]
    if not path.is_file():
        raise Unavailable(
            f"{ARCHIVES[name]} not found in {archive_dir()} (third-party sources are not "
            "part of the project; set SHIMGEN_THIRDPARTY to the folder holding them)"
        )
    return path


def _require_tools(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            raise Unavailable(f"{tool} not found: it builds the third-party test kernels")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Tree:
    """One unpacked source tree in the cache."""

    name: str  # key of ARCHIVES
    variant: str  # trees built with different configurations never share objects

    @property
    def source(self) -> Path:
        return archive(self.name)

    @property
    def root(self) -> Path:
        digest = hashlib.sha256(self.source.read_bytes()).hexdigest()[:12]
        stem = self.source.name.removesuffix(".tar.gz")
        return cache_dir() / "thirdparty" / f"{stem}-{digest}" / self.variant

    @property
    def top(self) -> Path:
        """The archive's top folder (xtf/, mini-os/) inside root."""
        return self.root / self.name

    @contextlib.contextmanager
    def held(self) -> Iterator[Path]:
        """The unpacked tree, locked against other sessions while the caller builds."""
        root = self.root
        with _locked(root.with_name(root.name + ".lock")):
            if not root.exists():
                root.parent.mkdir(parents=True, exist_ok=True)
                staging = Path(tempfile.mkdtemp(dir=root.parent, prefix=".unpack-"))
                try:
                    with tarfile.open(self.source) as tar:
                        tar.extractall(staging, filter="data")
                    staging.rename(root)
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
            yield self.top


def _make(directory: Path, *arguments: str) -> None:
    _require_tools("make", "gcc")
    done = subprocess.run(
        ["make", "-j2", *arguments],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=BUILD_SECONDS,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise RuntimeError(f"make {' '.join(arguments)} in {directory} failed:\n{tail}")


def xtf_group(group: str) -> Path:
    """XTF's tests/<group> built for every environment it supports; the folder holding
    test-<env>-<group> (e.g. test-hvm32-example, test-pv64-example)."""
    with Tree("xtf", "default").held() as top:
        directory = top / "tests" / group
        if not directory.is_dir():
            raise ValueError(f"XTF has no test group {group!r}")
        _make(top, f"TESTS={directory}")
        return directory


def xtf_test(group: str, environment: str) -> Path:
    path = xtf_group(group) / f"test-{environment}-{group}"
    if not path.exists():
        raise ValueError(f"XTF test group {group!r} has no {environment} build")
    return path


def mini_os(config: str = "pv") -> Path:
    """Mini-OS built with MINI_OS_CONFIGS[config]: the path of its `mini-os` ELF."""
    if not XEN_HEADERS.is_dir():
        raise Unavailable(f"{XEN_HEADERS} not found: Mini-OS needs libxen-dev's headers")
    with Tree("mini-os", config).held() as top:
        # As Mini-OS's README says (`ln -sfn`: into include/xen when that is a folder).
        subprocess.run(["ln", "-sfn", str(XEN_HEADERS), "include/xen"], cwd=top, check=True)
        _make(top, *MINI_OS_CONFIGS[config])
        return top / "mini-os"


def require(build: object) -> None:
    """Turn Unavailable into a skip (a user's clone) or a failure (CI)."""
    import pytest

    message = f"third-party kernels unavailable: {build}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must run these tests)")
    pytest.skip(message)
