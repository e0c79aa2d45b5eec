"""Files for patch: the input held open and mapped, work in background threads, and
the output written through a temp file that is renamed into place, or not at all.

Nothing here knows ELF. patch.py decides what to write; this module makes sure a
reader never sees half of it: the temp file lives in the output's directory (so
the rename is atomic), is fsynced before the rename and removed on any error or
^C before it, and the directory is fsynced after. The input is never written: it is
opened read-only, and its identity (device, inode, size, mtime, ctime) is checked
again just before the rename, so a changed input means no output.

Large inputs never pass through Python: they are mapped for parsing, hashed a
cache-sized buffer at a time (hashlib releases the GIL, so that runs in a thread
while the caller plans), and copied by the kernel (copy_file_range, else sendfile,
else a small buffer).
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import BadInput, OutputError

TEMP_NAME_KEEP = 200  # of the output's name in its temp file's (NAME_MAX is 255)
TEMP_NAME_TRIES = 100  # random names tried before giving up (as tempfile does)
# Hashed a buffer at a time: one that stays in a core's cache (L2) is hashed faster.
HASH_CHUNK = 1 << 20
COPY_CHUNK = 64 << 20  # per copy call: a ^C is handled between calls (~20 ms apart)
# How a kernel or filesystem says "not this way" rather than "failed": try the next
# way to copy. EPERM too: seccomp filters answer it for system calls they do not know.
COPY_UNSUPPORTED = {errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS, errno.EPERM}

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on the patch path
if TYPE_CHECKING:
    from typing import Generic, TypeVar

    T = TypeVar("T")
    Generic_T = Generic[T]
else:  # Background[bytes] is only ever written in annotations, never evaluated
    Generic_T = object


# --- the input, open and mapped ---------------------------------------------------------


class InputFile:
    """The input, open: its identity when opened and its bytes, mapped read-only so
    that only the pages parsing touches are read (a pipe or an empty file is read).
    ``writable`` opens it for writing too (patch --in-place), the mapping still
    read-only: every write goes through write calls, in an order inplace.py chose."""

    def __init__(self, source: Path, writable: bool = False) -> None:
        self.source = source
        try:
            self.fd = os.open(source, os.O_RDWR if writable else os.O_RDONLY)
        except OSError as error:
            if writable and error.errno in (errno.EACCES, errno.EROFS, errno.ETXTBSY):
                raise OutputError(f"{source}: cannot write: {error.strerror}") from None
            raise BadInput(f"{source}: cannot read: {error.strerror or error}") from None
        try:
            info = os.fstat(self.fd)
            self.fingerprint = identity(info)
            self.data: bytes | mmap.mmap = _map_or_read(self.fd, info)
        except OSError as error:
            os.close(self.fd)
            raise BadInput(f"{source}: cannot read: {error.strerror or error}") from None
        except BaseException:
            os.close(self.fd)
            raise

    def __enter__(self) -> InputFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # The mapping stays valid (it holds the file itself): the plan's image uses it.
        os.close(self.fd)

    @property
    def mapped(self) -> bool:
        return isinstance(self.data, mmap.mmap)


def _map_or_read(fd: int, info: os.stat_result) -> bytes | mmap.mmap:
    if stat.S_ISREG(info.st_mode) and info.st_size:
        try:
            return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            pass  # a filesystem that cannot map files: read it
    with open(fd, "rb", closefd=False) as stream:
        return stream.read()


def identity(info: os.stat_result) -> tuple[int, ...]:
    """Identity and last change of a file: any write to it changes ctime."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _fingerprint(path: Path) -> tuple[int, ...]:
    return identity(path.stat())


def input_changed(source: Path) -> OutputError:
    return OutputError(f"{source}: the input changed while it was patched: nothing written")


# --- work in the background ------------------------------------------------------------


def sha256_of_file(
    fd: int, size: int, head: bytes = b"", stop: threading.Event | None = None
) -> bytes:
    """sha256 of a file's first ``size`` bytes with the first len(head) of them replaced
    by ``head``. Read into one small buffer that stays in the CPU cache while it is
    hashed: faster than hashing a mapping, and a file cut short is an error (EOFError)
    rather than a SIGBUS."""
    digest = hashlib.sha256(head)
    with memoryview(bytearray(HASH_CHUNK)) as buffer:
        offset = len(head)
        while offset < size and not (stop is not None and stop.is_set()):
            count = os.preadv(fd, [buffer[: min(HASH_CHUNK, size - offset)]], offset)
            if count == 0:
                raise EOFError(f"the file ends at {offset:#x}, before {size:#x}")
            with buffer[:count] as chunk:
                digest.update(chunk)
            offset += count
    return digest.digest()


def file_digest(fd: int, size: int, head: bytes, source: Path) -> Background[bytes]:
    """sha256_of_file in a background thread; a file cut short is a changed input."""

    def work(stop: threading.Event) -> bytes:
        try:
            return sha256_of_file(fd, size, head, stop)
        except EOFError:  # shorter than it was when opened
            raise input_changed(source) from None

    return Background(work)


class EarlyDigest:
    """The sha256 of a whole input file, started before anything knows it is wanted.

    `patch` starts it before importing the planner: hashlib releases the GIL, so the
    hash runs on another core during the ~50 ms of imports instead of after them.
    patch_file takes it when the digest it needs is that of the whole file as it was
    opened (a first patch of a plain ELF); otherwise it is cancelled unused."""

    def __init__(self, source: Path, fd: int, info: os.stat_result) -> None:
        self.fd = fd
        self.fingerprint = identity(info)
        self.worker = file_digest(fd, info.st_size, b"", source)

    @classmethod
    def start(cls, source: str | Path) -> EarlyDigest | None:
        """None when the source is not a regular file that opens: the patch itself
        reports what is wrong with it."""
        try:
            fd = os.open(source, os.O_RDONLY)
        except OSError:
            return None
        try:
            info = os.fstat(fd)
        except OSError:
            info = None
        if info is None or not stat.S_ISREG(info.st_mode):
            os.close(fd)
            return None
        return cls(Path(source), fd, info)

    def covers(self, fingerprint: tuple[int, ...], size: int) -> bool:
        """Whether this is the digest of the first ``size`` bytes of that file."""
        return fingerprint == self.fingerprint and size == fingerprint[2]

    def close(self) -> None:
        self.worker.cancel()
        os.close(self.fd)


class Background(Generic_T):
    """``work(stop)`` run in a thread. result() waits for it and returns what it
    returned or raises what it raised; cancel() sets ``stop`` and waits for it to
    end (it may be using a file about to be closed)."""

    def __init__(self, work: Callable[[threading.Event], T]) -> None:
        self._stop = threading.Event()
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[threading.Event], T]) -> None:
        try:
            self._value = work(self._stop)
        except BaseException as error:  # handed over to whoever asks for the result
            self._error = error

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]

    def cancel(self) -> None:
        self._stop.set()
        self._thread.join()


# --- the output, written atomically -------------------------------------------------


@contextmanager
def writing(output: Path) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        raise OutputError(f"{output}: cannot write: {error.strerror or error}") from None


class TempFile:
    """A new file in the output's directory that commit() renames over the output;
    removed on whatever happens before the rename (an error, ^C)."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.directory = output.parent if str(output.parent) else Path(".")
        try:
            # ".NAME.XXXXXXXXXXXX": cut NAME so that a name near NAME_MAX still gets one
            self.fd, self.path = _new_file(self.directory, f".{output.name[:TEMP_NAME_KEEP]}.")
        except OSError as error:
            raise OutputError(
                f"{output}: cannot create a file in {self.directory}: {error.strerror or error}"
            ) from None
        self.open = True
        self.committed = False

    def __enter__(self) -> TempFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._close()
        if not self.committed:
            self.path.unlink(missing_ok=True)

    def _close(self) -> None:
        if self.open:
            self.open = False
            os.close(self.fd)

    def write(self, data: bytes, offset: int) -> None:
        with writing(self.output), memoryview(data) as view:
            while view:
                written = os.pwrite(self.fd, view, offset)
                view, offset = view[written:], offset + written

    def commit(self, before_commit: Callable[[], None] | None = None) -> None:
        """fsync, then rename over the output once before_commit allows it, then fsync
        the directory so that the rename itself is durable."""
        with writing(self.output):
            os.fsync(self.fd)
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(self.fd, 0o644 & ~umask)
            self._close()
            if before_commit is not None:
                before_commit()
            os.replace(self.path, self.output)
        self.committed = True
        _sync_directory(self.directory)


def _new_file(directory: Path, prefix: str) -> tuple[int, Path]:
    """A file of our own, created in directory (mode 0600), as tempfile.mkstemp makes
    one; written here because importing tempfile (and random) costs a small patch
    ~3 ms."""
    for _ in range(TEMP_NAME_TRIES):
        path = directory / f"{prefix}{os.urandom(6).hex()}"
        try:
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            return os.open(path, flags, 0o600), path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free temporary name in {directory}")


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable; the output is complete either way."""
    try:
        handle = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _copy_file_range(src: int, dst: int, offset: int, count: int) -> int:
    return os.copy_file_range(src, dst, count, offset, offset)


def _sendfile(src: int, dst: int, offset: int, count: int) -> int:
    os.lseek(dst, offset, os.SEEK_SET)  # sendfile writes at the file position
    return os.sendfile(dst, src, offset, count)


def _read_write(src: int, dst: int, offset: int, count: int) -> int:
    chunk = os.pread(src, min(count, 1 << 20), offset)
    return os.pwrite(dst, chunk, offset) if chunk else 0


# In the kernel when it can: copy_file_range (a reflink or an in-kernel copy), else
# sendfile (across filesystems on kernels that refuse that to copy_file_range), else
# through a small buffer.
COPY_WAYS = (_copy_file_range, _sendfile, _read_write)


def copy_prefix(src: int, dst: int, length: int) -> int:
    """Copy src's first ``length`` bytes to the same offsets of dst; how many were
    copied (fewer only when src ends first)."""
    ways = list(COPY_WAYS)
    done = 0
    while done < length:
        try:
            copied = ways[0](src, dst, done, min(COPY_CHUNK, length - done))
        except OSError as error:
            if error.errno in COPY_UNSUPPORTED and len(ways) > 1:
                ways.pop(0)
                continue
            raise
        if copied == 0:
            break
        done += copied
    return done


def check_output(output: Path, source: tuple[int, ...]) -> None:
    """Refuse what the rename into place would get wrong: the input itself (by any
    path, link or hard link), a directory, a device or pipe (replaced, not written)."""
    try:
        info = output.stat()
    except (FileNotFoundError, NotADirectoryError):
        return  # a new file; a missing directory is reported when writing
    except OSError as error:
        raise OutputError(f"{output}: cannot write: {error.strerror or error}") from None
    if (info.st_dev, info.st_ino) == source[:2]:
        raise OutputError(f"{output}: is the input; the input is never modified")
    if stat.S_ISDIR(info.st_mode):
        raise OutputError(f"{output}: is a directory; give the output file's name")
    if not stat.S_ISREG(info.st_mode):
        raise OutputError(f"{output}: is not a regular file (a device, pipe or socket?)")


def input_unchanged(source: Path, fingerprint: tuple[int, ...]) -> Callable[[], None]:
    def check() -> None:
        try:
            unchanged = _fingerprint(source) == fingerprint
        except OSError:
            unchanged = False
        if not unchanged:
            raise input_changed(source)

    return check
