"""`shimgen patch` never corrupts anything: not the input, not an existing output.

Every scenario runs the real CLI and checks the same things: the exit status, one
line on stderr, the input's sha256 before and after, and what is left in the
output directory (the output on success; nothing, not even a temp file, on error).
Disk full and read-only filesystems are real: a small tmpfs mounted in a private
mount namespace (unshare), so nothing leaks onto the host even if a test dies.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from shimgen.errors import ExitCode, OutputError
from shimgen.read.image import read_image
from shimgen.read.shim_view import shim_meta
from shimgen.write import fileio
from shimgen.write import patch as patch_module
from shimgen.write.patch import patch_file


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(*args: str, prefix: tuple[str, ...] = (), cwd: Path | None = None):
    return subprocess.run(
        [*prefix, sys.executable, "-m", "shimgen", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=os.environ | {"PYTHONDONTWRITEBYTECODE": "1"},
    )


def assert_fails_cleanly(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("shimgen: error: "), result.stderr
    assert text in lines[0], lines[0]


@pytest.fixture
def work(tmp_path: Path, samples_build: Path) -> Path:
    """A directory holding only the input, `kernel` (the pv-hello sample)."""
    shutil.copyfile(samples_build / "pv-hello", tmp_path / "kernel")
    return tmp_path


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- success: atomic, the input untouched --------------------------------------------------


def test_patch_writes_only_the_output_and_keeps_the_input(work: Path) -> None:
    before = sha256(work / "kernel")
    result = run_cli("patch", str(work / "kernel"), "-o", str(work / "out"))
    assert result.returncode == 0, result.stderr
    assert sha256(work / "kernel") == before
    assert listing(work) == ["kernel", "out"]  # no temp file left
    assert shim_meta(read_image(work / "out")) is not None
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((work / "out").stat().st_mode) == 0o644 & ~umask


def test_existing_output_is_replaced_by_rename_not_rewritten(work: Path) -> None:
    """A reader holding the old output (here: a hard link) never sees a mixture."""
    out = work / "out"
    out.write_bytes(b"old output")
    os.link(out, work / "old-link")
    old_inode = out.stat().st_ino
    assert run_cli("patch", str(work / "kernel"), "-o", str(out)).returncode == 0
    assert out.stat().st_ino != old_inode
    assert (work / "old-link").read_bytes() == b"old output"
    assert listing(work) == ["kernel", "old-link", "out"]


def test_long_but_valid_output_name(work: Path) -> None:
    name = "k" * 250  # NAME_MAX is 255: the temp file's name must not be longer
    assert run_cli("patch", str(work / "kernel"), "-o", str(work / name)).returncode == 0
    assert listing(work) == sorted(["kernel", name])


# --- refusals: the input is never the output ----------------------------------------------


def _alias_same_path(work: Path) -> str:
    return str(work / "kernel")


def _alias_relative(work: Path) -> str:
    return "kernel"  # run from work


def _alias_dot_dot(work: Path) -> str:
    (work / "sub").mkdir()
    return str(work / "sub" / ".." / "kernel")


def _alias_symlink(work: Path) -> str:
    (work / "link").symlink_to(work / "kernel")
    return str(work / "link")


def _alias_hardlink(work: Path) -> str:
    os.link(work / "kernel", work / "hard")
    return str(work / "hard")


@pytest.mark.parametrize(
    "alias",
    [_alias_same_path, _alias_relative, _alias_dot_dot, _alias_symlink, _alias_hardlink],
    ids=lambda f: f.__name__.removeprefix("_alias_"),
)
def test_output_that_is_the_input_is_refused(work: Path, alias) -> None:
    output = alias(work)
    before, files = sha256(work / "kernel"), listing(work)
    result = run_cli("patch", str(work / "kernel"), "-o", output, cwd=work)
    assert_fails_cleanly(result, ExitCode.OUTPUT, "is the input; the input is never modified")
    assert sha256(work / "kernel") == before
    assert listing(work) == files
    assert (work / output).is_symlink() == (alias is _alias_symlink)


# --- output paths that cannot be written ----------------------------------------------------


def _directory(work: Path) -> Path:
    (work / "dir").mkdir()
    return work / "dir"


def _missing_directory(work: Path) -> Path:
    return work / "no" / "such" / "dir" / "out"


def _parent_is_a_file(work: Path) -> Path:
    return work / "kernel" / "out"


def _name_too_long(work: Path) -> Path:
    return work / ("k" * 300)


def _fifo(work: Path) -> Path:
    os.mkfifo(work / "fifo")
    return work / "fifo"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (_directory, "is a directory"),
        (_missing_directory, "No such file or directory"),
        (_parent_is_a_file, "Not a directory"),
        (_name_too_long, "File name too long"),
        (_fifo, "is not a regular file"),
    ],
    ids=lambda v: v.__name__.lstrip("_") if callable(v) else "",
)
def test_unwritable_output_paths_fail_cleanly(work: Path, target, message: str) -> None:
    out = target(work)
    before, files = sha256(work / "kernel"), listing(work)
    result = run_cli("patch", str(work / "kernel"), "-o", str(out))
    assert_fails_cleanly(result, ExitCode.OUTPUT, message)
    assert sha256(work / "kernel") == before
    assert listing(work) == files
    if os.path.lexists(out):  # False for a name too long, not an error
        assert not out.is_file()  # the directory or the FIFO is still what it was
        assert out.is_dir() or stat.S_ISFIFO(out.stat().st_mode)


def _without_dac_override() -> tuple[str, ...]:
    """Root ignores directory permissions; drop that power (uid stays 0)."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("setpriv missing: apt-get install util-linux")
    return (setpriv, "--bounding-set=-dac_override,-dac_read_search")


def test_directory_without_write_permission(work: Path) -> None:
    locked = work / "locked"
    locked.mkdir()
    (locked / "out").write_bytes(b"old output")
    locked.chmod(0o555)
    try:
        before = sha256(work / "kernel")
        result = run_cli(
            "patch", str(work / "kernel"), "-o", str(locked / "out"), prefix=_without_dac_override()
        )
        assert_fails_cleanly(result, ExitCode.OUTPUT, "Permission denied")
        assert "cannot create a file in" in result.stderr
        assert sha256(work / "kernel") == before
        assert listing(locked) == ["out"] and (locked / "out").read_bytes() == b"old output"
    finally:
        locked.chmod(0o755)


# --- real full and read-only filesystems ---------------------------------------------------

# Runs inside a private mount namespace: mounts a tmpfs on MOUNT, puts an old output
# there, runs `shimgen patch`, and reports what happened as JSON on stdout.
_IN_NAMESPACE = textwrap.dedent(
    """
    import json, os, subprocess, sys
    source, mount, options = sys.argv[1:4]
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", mount], check=True)
    if "ro" not in options.split(","):
        with open(os.path.join(mount, "out"), "wb") as old:
            old.write(b"old output")
    result = subprocess.run(
        [sys.executable, "-m", "shimgen", "patch", source, "-o", os.path.join(mount, "out")],
        capture_output=True, text=True, timeout=60,
    )
    files = {name: open(os.path.join(mount, name), "rb").read().hex()
             for name in os.listdir(mount)}
    print(json.dumps({"code": result.returncode, "stderr": result.stderr, "files": files}))
    """
)


def _in_tmpfs(work: Path, options: str) -> dict:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.fail("unshare missing: apt-get install util-linux")
    user = () if os.geteuid() == 0 else ("--user", "--map-root-user")
    mount = work / "mnt"
    mount.mkdir()
    proc = subprocess.run(
        [unshare, "--mount", "--propagation", "private", *user, sys.executable, "-c",
         _IN_NAMESPACE, str(work / "kernel"), str(mount), options],
        capture_output=True, text=True, timeout=120,
        env=os.environ | {"PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a mount namespace here: {proc.stderr.strip()}")
    assert listing(mount) == []  # the tmpfs went away with the namespace
    return json.loads(proc.stdout)


@pytest.mark.parametrize(
    "size",
    ["16k", "32k"],
    ids=["full-during-the-copy", "full-during-the-append"],
)
def test_disk_full(work: Path, size: str) -> None:
    """A tmpfs of 4 pages (one is the old output's): the copy of the 19 KB input
    cannot fit; of 8 pages: it fits, the appended 30 KB do not. Either way the ~50 KB
    output is not written and the old output survives."""
    before = sha256(work / "kernel")
    seen = _in_tmpfs(work, f"size={size}")
    assert seen["code"] == ExitCode.OUTPUT, seen
    lines = seen["stderr"].splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0], seen["stderr"]
    assert seen["files"] == {"out": b"old output".hex()}  # no temp file, old output whole
    assert sha256(work / "kernel") == before


def test_read_only_filesystem(work: Path) -> None:
    before = sha256(work / "kernel")
    seen = _in_tmpfs(work, "ro,size=1m")
    assert seen["code"] == ExitCode.OUTPUT, seen
    lines = seen["stderr"].splitlines()
    assert len(lines) == 1 and "Read-only file system" in lines[0], seen["stderr"]
    assert seen["files"] == {}
    assert sha256(work / "kernel") == before


# --- errors before writing: no output at all ------------------------------------------------


def _no_loadable_segment(work: Path) -> Path:
    """A copy of the input outside work whose only PT_LOAD has no R, W or X flag."""
    data = bytearray((work / "kernel").read_bytes())
    phoff = int.from_bytes(data[0x20:0x28], "little")
    for index in range(int.from_bytes(data[0x38:0x3A], "little")):
        entry = phoff + index * 56
        if int.from_bytes(data[entry : entry + 4], "little") == 1:  # PT_LOAD: clear p_flags
            data[entry + 4 : entry + 8] = bytes(4)
    path = work.parent / f"{work.name}-unloadable"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("make_input", "args", "code"),
    [
        (lambda build, work: _no_loadable_segment(work), (), ExitCode.REFUSED),
        (lambda build, work: build / "pv-hello", ("--entry", "no_such_symbol"), ExitCode.REFUSED),
        (lambda build, work: work / "kernel", ("--handoff", "nonsense"), ExitCode.USAGE),
        (lambda build, work: work / "missing", (), ExitCode.BAD_INPUT),
    ],
    ids=["nothing-to-load", "bad-entry", "bad-handoff", "missing-input"],
)
def test_no_output_when_patching_fails(
    work: Path, samples_build: Path, make_input, args: tuple[str, ...], code: int
) -> None:
    source = make_input(samples_build, work)
    out = work / "out"
    out.write_bytes(b"old output")
    result = run_cli("patch", str(source), "-o", str(out), *args)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert listing(work) == ["kernel", "out"] and out.read_bytes() == b"old output"


def test_already_patched_is_refused_without_output(work: Path) -> None:
    assert run_cli("patch", str(work / "kernel"), "-o", str(work / "once")).returncode == 0
    result = run_cli("patch", str(work / "once"), "-o", str(work / "twice"))
    assert_fails_cleanly(result, ExitCode.REFUSED, "already patched")
    assert listing(work) == ["kernel", "once"]


# --- failures in the middle of writing (in-process) -----------------------------------------


def test_interrupt_while_writing_leaves_nothing(work: Path, monkeypatch) -> None:
    out = work / "out"
    out.write_bytes(b"old output")

    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(patch_module.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        patch_file(work / "kernel", out)
    assert listing(work) == ["kernel", "out"] and out.read_bytes() == b"old output"


def _while_planning(monkeypatch, action) -> None:
    """Run action when the patch is planned: after the input was read and, for a file
    written in place, copied into the temp file."""
    real = patch_module.make_plan

    def plan_meanwhile(*args, **kwargs):
        action()
        return real(*args, **kwargs)

    monkeypatch.setattr(patch_module, "make_plan", plan_meanwhile)


def _append(path: Path) -> None:
    with path.open("ab") as stream:
        stream.write(b"appended meanwhile")


def _rewrite_in_place(path: Path) -> None:
    """Same size, same bytes but one: only the change time tells."""
    with path.open("r+b") as stream:
        stream.seek(0x10)
        first = stream.read(1)
        stream.seek(0x10)
        stream.write(first)


@pytest.mark.parametrize("change", [_append, _rewrite_in_place], ids=["append", "rewrite"])
def test_input_changed_while_patching_writes_nothing(work: Path, monkeypatch, change) -> None:
    _while_planning(monkeypatch, lambda: change(work / "kernel"))
    with pytest.raises(OutputError, match="the input changed while it was patched"):
        patch_file(work / "kernel", work / "out")
    assert listing(work) == ["kernel"]


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    "where",
    [
        "copy_prefix",
        "os.fdatasync",
        "fileio.sha256_of_file",
        "make_plan",
        "layout_output",
        "os.replace",
    ],
)
def test_interrupt_anywhere_leaves_nothing(work: Path, monkeypatch, where: str) -> None:
    """^C in the copy, in a background thread (writeback, hash), while planning or
    writing: the temp file goes, the old output stays, no thread is left running."""
    out = work / "out"
    out.write_bytes(b"old output")
    module, _, name = where.rpartition(".")
    owner = {"os": patch_module.os, "fileio": fileio, "": patch_module}[module]
    monkeypatch.setattr(owner, name, _interrupt)
    threads = threading.active_count()
    with pytest.raises(KeyboardInterrupt):
        patch_file(work / "kernel", out)
    assert listing(work) == ["kernel", "out"] and out.read_bytes() == b"old output"
    assert threading.active_count() == threads


def test_write_error_in_the_background_is_an_output_error(work: Path, monkeypatch) -> None:
    def failing_writeback(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(patch_module.os, "fdatasync", failing_writeback)
    with pytest.raises(OutputError, match="Input/output error"):
        patch_file(work / "kernel", work / "out")
    assert listing(work) == ["kernel"]
