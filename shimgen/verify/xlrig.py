"""The xl rig's dom0: Debian's Linux kernel and an initramfs made from Debian packages.

Debian's Xen 4.17 runs inside QEMU (TCG) with Debian's own Linux kernel as its PV
dom0. The dom0 initramfs holds busybox-static, xl, xenstored, xenconsoled, xenstore
and the shared libraries they need, all taken from Debian packages fetched with
``apt-get download`` into shimgen's cache and unpacked there (never installed), plus
the kernel's Xen modules that are not built in. It is built once and cached under a
key made of the package files' names (name + version) and the init script; each boot
appends a second cpio archive with the guests' files (Linux unpacks concatenated
archives in order).

The init script (:func:`init_script`) brings up the toolstack, runs ``xl create``
for every job in turn and prints ``@xlrig JOB KEY ...`` lines on dom0's console
(hvc0, which Xen copies to its serial port): the harness in :mod:`.xlboot` reads them.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import MissingTool
from ..read.elffile import ElfTables, read_tables
from ..structs.elf import DT_NEEDED, DT_NULL, dynamic_entry
from .debcache import cache_dir, unpacked_package

KERNEL_META_PACKAGE = "linux-image-amd64"
XEN_UTILS_PACKAGE = "xen-utils-4.17"
XEN_TOOLS_DIR = "usr/lib/xen-4.17/bin"
# Xen's pv-shim, where libxl looks for it (its XENFIRMWAREDIR).
PV_SHIM = "usr/lib/xen-4.17/boot/xen-shim"
LIBRARY_DIR = "lib/x86_64-linux-gnu"
DYNAMIC_LOADER = "lib64/ld-linux-x86-64.so.2"

# Programs dom0 runs: path in the initramfs -> (package, path in the package).
PROGRAMS = {
    "bin/busybox": ("busybox-static", "bin/busybox"),
    f"{XEN_TOOLS_DIR}/xl": (XEN_UTILS_PACKAGE, f"{XEN_TOOLS_DIR}/xl"),
    f"{XEN_TOOLS_DIR}/xenstored": (XEN_UTILS_PACKAGE, f"{XEN_TOOLS_DIR}/xenstored"),
    f"{XEN_TOOLS_DIR}/xenconsoled": (XEN_UTILS_PACKAGE, f"{XEN_TOOLS_DIR}/xenconsoled"),
    f"{XEN_TOOLS_DIR}/xen-init-dom0": (XEN_UTILS_PACKAGE, f"{XEN_TOOLS_DIR}/xen-init-dom0"),
    "bin/xenstore": ("xenstore-utils", "usr/bin/xenstore"),
}
# xenstore is one program that acts by the name it is called with.
XENSTORE_NAMES = ("xenstore-read", "xenstore-ls")
# Loaded with dlopen, so no NEEDED entry names it (glibc's pthread_cancel, used by xl).
DLOPENED_LIBRARIES = ("libgcc_s.so.1",)
# xl's global settings: dom0's memory is fixed by Xen's dom0_mem, never ballooned.
XL_CONF = 'autoballoon = "off"\n'
# Where the programs' NEEDED libraries are looked for (Debian 12 package names).
LIBRARY_PACKAGES = (
    "libc6",
    "libgcc-s1",
    "libxenmisc4.17",
    "libxenstore4",
    "libxencall1",
    "libxenevtchn1",
    "libxenforeignmemory1",
    "libxengnttab1",
    "libxentoollog1",
    "libxendevicemodel1",
    "libxenhypfs1",
    "libxentoolcore1",
    "libcom-err2",
    "libyajl2",
    "libext2fs2",
    "liblzma5",
    "libuuid1",
    "libzstd1",
    "zlib1g",
    "libncurses6",
    "libtinfo6",
)
# The dom0 kernel's Xen drivers xl, xenstored and xenconsoled open (Debian builds them
# as modules): /dev/xen/evtchn, /dev/xen/privcmd, /dev/xen/gntdev, and xenfs.
DOM0_MODULES = ("xen-evtchn", "xen-privcmd", "xen-gntdev", "xenfs")

# dom0's own command line: its console is hvc0 (Xen's console, copied to the serial
# port); no kernel chatter below warnings. A throwaway dom0 needs neither read-only
# kernel data (whose W+X check walks every page table) nor speculation mitigations:
# together about 10% of its boot under TCG.
DOM0_CMDLINE = "console=hvc0 quiet rdinit=/init rodata=off mitigations=off"

# Bump when the layout of the initramfs changes in a way the key does not see.
BUILDER_VERSION = "1"


def rig_packages() -> tuple[str, ...]:
    """Every Debian package the rig unpacks (the kernel by its versioned name)."""
    tools = sorted({package for package, _ in PROGRAMS.values()})
    return (kernel_package(), *tools, *LIBRARY_PACKAGES)


def kernel_package() -> str:
    """The versioned linux-image package linux-image-amd64 stands for.

    Asked from apt once and remembered in the cache, so later runs work offline.
    """
    remembered = cache_dir() / "xlrig" / "kernel-package"
    if remembered.is_file():
        return remembered.read_text().strip()
    if shutil.which("apt-cache") is None:
        raise MissingTool(
            f"apt-cache not found: cannot resolve {KERNEL_META_PACKAGE}; "
            f"the xl rig needs Debian's apt (cache: {cache_dir()})"
        )
    answer = subprocess.run(
        ["apt-cache", "depends", "--important", KERNEL_META_PACKAGE],
        capture_output=True,
        text=True,
    )
    names = [
        line.split(":", 1)[1].strip()
        for line in answer.stdout.splitlines()
        if line.strip().startswith("Depends:") and "linux-image-" in line
    ]
    if answer.returncode != 0 or not names:
        raise MissingTool(
            f"cannot resolve {KERNEL_META_PACKAGE} to a kernel package; run 'apt-get update' "
            f"(cache: {cache_dir()})"
        )
    remembered.parent.mkdir(parents=True, exist_ok=True)
    remembered.write_text(names[0] + "\n")
    return names[0]


# --- cpio (newc), the format Linux unpacks as an initramfs ---------------------------

CPIO_MAGIC = b"070701"
CPIO_TRAILER = "TRAILER!!!"
CPIO_ALIGN = 4


class Cpio:
    """A newc cpio archive built in memory: owner root, mtime 0, so the bytes depend
    on the content only."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._inode = 0
        self._dirs: set[str] = set()

    def directory(self, path: str) -> None:
        path = path.strip("/")
        if not path or path in self._dirs:
            return
        self.directory(os.path.dirname(path))
        self._dirs.add(path)
        self._entry(path, stat.S_IFDIR | 0o755)

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._parent(path)
        self._entry(path, stat.S_IFREG | mode, data)

    def symlink(self, path: str, target: str) -> None:
        self._parent(path)
        self._entry(path, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, path: str, major: int, minor: int) -> None:
        self._parent(path)
        self._entry(path, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry(CPIO_TRAILER, 0)
        return b"".join(self._chunks)

    def _parent(self, path: str) -> None:
        self.directory(os.path.dirname(path.strip("/")))

    def _entry(self, path: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)):
        self._inode += 1
        name = path.strip("/").encode() + b"\0"
        # c_ino c_mode c_uid c_gid c_nlink c_mtime c_filesize c_devmajor c_devminor
        # c_rdevmajor c_rdevminor c_namesize c_check, each 8 hex digits
        fields = (self._inode, mode, 0, 0, 1, 0, len(data), 0, 0, *rdev, len(name), 0)
        header = CPIO_MAGIC + b"".join(b"%08x" % value for value in fields) + name
        self._chunks += [_pad(header), _pad(data)]


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % CPIO_ALIGN)


# --- reading what the packages hold ------------------------------------------------


def _section(data: bytes, name: str, section: str) -> tuple[ElfTables, dict[str, int]] | None:
    """The ELF's tables and the header of its section with that name, if it has one."""
    tables = read_tables(data, name)
    if section not in tables.section_names:
        return None
    return tables, tables.section_headers[tables.section_names.index(section)]


def needed_libraries(data: bytes, name: str) -> list[str]:
    """DT_NEEDED entries of a dynamically linked ELF (none for a static one)."""
    found = _section(data, name, ".dynamic")
    if found is None:
        return []
    tables, dynamic = found
    strings = tables.section_headers[dynamic["sh_link"]]
    record = dynamic_entry(tables.bits)
    needed = []
    end = dynamic["sh_offset"] + dynamic["sh_size"]
    for offset in range(dynamic["sh_offset"], end, record.size):
        entry = record.unpack_from(data, offset)
        if entry["d_tag"] == DT_NULL:
            break
        if entry["d_tag"] == DT_NEEDED:
            start = strings["sh_offset"] + entry["d_val"]
            needed.append(data[start : data.index(b"\0", start)].decode())
    return needed


def module_dependencies(data: bytes, name: str) -> list[str]:
    """The modules a kernel module needs loaded first (its .modinfo "depends=")."""
    found = _section(data, name, ".modinfo")
    if found is None:
        return []
    modinfo = found[1]
    raw = data[modinfo["sh_offset"] : modinfo["sh_offset"] + modinfo["sh_size"]]
    for item in raw.split(b"\0"):
        key, _, value = item.decode("latin-1").partition("=")
        if key == "depends":
            return [dep for dep in value.split(",") if dep]
    return []


def _inside(root: Path, path: str) -> Path:
    """A file of an unpacked package, following symlinks inside that package."""
    current = root / path
    for _ in range(16):
        if not current.is_symlink():
            return current
        target = os.readlink(current)
        current = root / target.lstrip("/") if target.startswith("/") else current.parent / target
    raise MissingTool(f"{root / path}: too many symlinks; clear the shimgen cache")


# The x86 boot protocol's setup header (Linux's Documentation/arch/x86/boot.rst):
# setup_sects at 0x1f1 (0 means 4), "HdrS" at 0x202, payload_offset and
# payload_length at 0x248 and 0x24c (relative to the protected-mode code, which
# starts after the boot sector and the setup sectors).
BZIMAGE_SETUP_SECTS = 0x1F1
BZIMAGE_HEADER_MAGIC = (0x202, b"HdrS")
BZIMAGE_PAYLOAD = 0x248
SECTOR = 512
XZ_MAGIC = b"\xfd7zXZ\0"


def vmlinux_from_bzimage(bzimage: bytes, name: str) -> bytes:
    """The ELF kernel inside a bzImage whose payload is xz-compressed (Debian's).

    Xen can take the bzImage itself, but then decompresses it while building dom0,
    which costs seconds under TCG; the ELF is decompressed once and cached instead.
    """
    offset, magic = BZIMAGE_HEADER_MAGIC
    if bzimage[offset : offset + len(magic)] != magic:
        raise MissingTool(f"{name}: not a bzImage; clear the shimgen cache")
    setup_sectors = bzimage[BZIMAGE_SETUP_SECTS] or 4
    payload_offset = int.from_bytes(bzimage[BZIMAGE_PAYLOAD : BZIMAGE_PAYLOAD + 4], "little")
    payload_length = int.from_bytes(bzimage[BZIMAGE_PAYLOAD + 4 : BZIMAGE_PAYLOAD + 8], "little")
    start = (setup_sectors + 1) * SECTOR + payload_offset
    payload = bzimage[start : start + payload_length]
    if not payload.startswith(XZ_MAGIC):
        raise MissingTool(f"{name}: payload is not xz-compressed; the xl rig expects Debian's")
    # The payload ends with the uncompressed size (4 bytes), which is not xz data.
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)


def _dom0_vmlinux(bzimage: Path) -> Path:
    target = cache_dir() / "xlrig" / f"vmlinux-{bzimage.name.removeprefix('vmlinuz-')}"
    if not target.is_file():
        _write_atomically(target, vmlinux_from_bzimage(bzimage.read_bytes(), str(bzimage)))
    return target


def _write_atomically(target: Path, data: bytes) -> None:
    # Write then rename: a concurrent run never sees a half-written file.
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f".{target.name}.{os.getpid()}")
    scratch.write_bytes(data)
    scratch.replace(target)


@dataclass(frozen=True)
class Dom0Files:
    """What QEMU boots for the rig: Xen's dom0 kernel and the cached base initramfs."""

    kernel: Path
    initramfs: Path
    pv_shim: Path
    packages: tuple[str, ...]


def dom0_files() -> Dom0Files:
    """The dom0 kernel and base initramfs, fetching and building them on first use."""
    packages = rig_packages()
    roots = {package: unpacked_package(package) for package in packages}
    kernel_root = roots[packages[0]]
    kernels = sorted((kernel_root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise MissingTool(f"{packages[0]} holds no boot/vmlinuz-*: clear the shimgen cache")
    script = init_script()
    key = _cache_key(roots, script)
    target = cache_dir() / "xlrig" / f"dom0-{key}.cpio"
    if not target.is_file():
        _write_atomically(target, build_initramfs(roots, kernel_root, script))
    return Dom0Files(
        kernel=_dom0_vmlinux(kernels[-1]),
        initramfs=target,
        pv_shim=roots[XEN_UTILS_PACKAGE] / PV_SHIM,
        packages=packages,
    )


def _cache_key(roots: dict[str, Path], script: str) -> str:
    digest = hashlib.sha256(BUILDER_VERSION.encode())
    for package, root in sorted(roots.items()):
        # debcache records the .deb's file name, which carries the version.
        digest.update(f"{package}={(root / '.unpacked').read_text().strip()}\n".encode())
    digest.update(script.encode())
    return digest.hexdigest()[:16]


def build_initramfs(roots: dict[str, Path], kernel_root: Path, script: str) -> bytes:
    archive = Cpio()
    for directory in ("dev", "proc", "sys", "tmp", "run", "var", "etc", "jobs"):
        archive.directory(directory)
    # The kernel opens /dev/console for init before anything can mount devtmpfs.
    archive.char_device("dev/console", 5, 1)
    archive.file("init", script.encode(), 0o755)
    archive.symlink("bin/sh", "busybox")
    libraries: dict[str, bytes] = {}
    for path, (package, source) in PROGRAMS.items():
        data = _inside(roots[package], source).read_bytes()
        archive.file(path, data, 0o755)
        _collect_libraries(data, source, roots, libraries)
    for soname in DLOPENED_LIBRARIES:
        library = _find_library(soname, roots)
        libraries[soname] = library
        _collect_libraries(library, soname, roots, libraries)
    archive.file("etc/xen/xl.conf", XL_CONF.encode())
    for name in XENSTORE_NAMES:
        archive.symlink(f"bin/{name}", "xenstore")
    for name, data in sorted(libraries.items()):
        archive.file(f"{LIBRARY_DIR}/{name}", data, 0o755)
    archive.symlink(DYNAMIC_LOADER, f"/{LIBRARY_DIR}/{Path(DYNAMIC_LOADER).name}")
    modules = _dom0_modules(kernel_root)
    for name, data in modules:
        archive.file(f"lib/modules/{name}.ko", data)
    # Loaded in this order: each module after the ones it depends on.
    archive.file("lib/modules/order", "".join(f"{name}\n" for name, _ in modules).encode())
    return archive.finish()


def _collect_libraries(
    data: bytes, name: str, roots: dict[str, Path], found: dict[str, bytes]
) -> None:
    needed = needed_libraries(data, name)
    if needed:  # a dynamic program also needs the dynamic loader
        needed.append(Path(DYNAMIC_LOADER).name)
    for soname in needed:
        if soname in found:
            continue
        library = _find_library(soname, roots)
        found[soname] = library
        _collect_libraries(library, soname, roots, found)


def _find_library(soname: str, roots: dict[str, Path]) -> bytes:
    for package in LIBRARY_PACKAGES:
        for folder in (LIBRARY_DIR, f"usr/{LIBRARY_DIR}"):
            if (roots[package] / folder / soname).exists():
                return _inside(roots[package], f"{folder}/{soname}").read_bytes()
    raise MissingTool(
        f"no package among {', '.join(LIBRARY_PACKAGES)} holds {soname}: the xl rig's "
        f"package list needs it (cache: {cache_dir()})"
    )


def _dom0_modules(kernel_root: Path) -> list[tuple[str, bytes]]:
    """DOM0_MODULES and what they depend on, each after its dependencies."""
    files = {
        path.stem.replace("_", "-"): path for path in kernel_root.glob("lib/modules/*/**/*.ko")
    }
    ordered: list[tuple[str, bytes]] = []

    def add(name: str) -> None:
        name = name.replace("_", "-")
        if any(done == name for done, _ in ordered):
            return
        if name not in files:
            raise MissingTool(f"the dom0 kernel has no module {name} ({kernel_root})")
        data = files[name].read_bytes()
        for dependency in module_dependencies(data, name):
            add(dependency)
        ordered.append((name, data))

    for module in DOM0_MODULES:
        add(module)
    return ordered


# --- the init script ---------------------------------------------------------------

MARK = "@xlrig"
# Console lines of the guest with this job number: "@xlrig 3 con: text".
CONSOLE_LOG_DIR = "/var/log/xen/console"
# The xenstore values libxl gives a guest for its console and store rings.
STORE_KEYS = ("store/ring-ref", "store/port", "console/ring-ref", "console/port")


def init_script() -> str:
    return _INIT_TEMPLATE.replace("@STORE_KEYS@", " ".join(STORE_KEYS)).replace(
        "@CONSOLE_LOG_DIR@", CONSOLE_LOG_DIR
    )


_INIT_TEMPLATE = r"""#!/bin/sh
# dom0 init of shimgen's xl rig (generated by shimgen/verify/xlrig.py).
# Every line the harness reads starts with "@xlrig JOB KEY"; JOB "-" is the rig itself.
/bin/busybox --install -s /bin
export PATH=/bin:/usr/lib/xen-4.17/bin LD_LIBRARY_PATH=/lib/x86_64-linux-gnu
mark() { echo "@xlrig $*"; }
free_mib() { xl info | sed -n 's/^free_memory *: *//p'; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
for module in $(cat /lib/modules/order); do
  insmod /lib/modules/$module.ko || mark - error "insmod $module failed"
done
mount -t xenfs xenfs /proc/xen || mark - error "cannot mount xenfs"
mkdir -p /var/run/xen /var/run/xenstored /var/lib/xen /var/lib/xenstored @CONSOLE_LOG_DIR@
mark - dom0-up
xenstored --pid-file=/var/run/xenstored.pid || mark - error "xenstored failed"
xen-init-dom0 >/tmp/xen-init-dom0.log 2>&1 || mark - error "xen-init-dom0 failed"
xenconsoled --log=guest --log-dir=@CONSOLE_LOG_DIR@ --pid-file=/var/run/xenconsoled.pid \
  || mark - error "xenconsoled failed"
mark - toolstack-up

# One guest: xl create -F stays in the foreground until the domain stops and prints
# the shutdown reason; on_poweroff/on_reboot/on_crash = "preserve" keeps the domain
# so "xl list" can still show it.
run_job() {
  job=$1; dir=/jobs/$job; name=$(cat $dir/name)
  # xenconsoled writes the guest's console ring to this log. Made a FIFO, the lines
  # reach us as they are written (tail -f would poll once a second); the reader's end
  # comes when xenconsoled closes it, after the domain is gone.
  console=@CONSOLE_LOG_DIR@/guest-$name.log
  mkfifo $console
  (cat $console | tee /tmp/console-$job.log | sed "s/^/@xlrig $job con: /") &
  reader=$!
  # Xen's free memory before and while the guest runs: what the domain really costs,
  # pv-shim's own memory and Xen's per-domain pages included (`xl list` shows only
  # the guest's target)
  mark $job free-before $(free_mib)
  mark $job create
  xl create -F $dir/xl.cfg >/tmp/xl-$job.log 2>&1 &
  xl=$!
  domid=
  while :; do
    running=$(kill -0 $xl 2>/dev/null && echo yes)
    domid=$(sed -n 's/^Waiting for domain .* (domid \([0-9]*\)) to die.*/\1/p' /tmp/xl-$job.log)
    # a guest that ends at once lets xl exit before a poll sees the line: read it last
    [ -n "$domid" ] || [ -z "$running" ] && break
    usleep 20000
  done
  if [ -n "$domid" ]; then
    mark $job started domid=$domid
    # read by the shell itself: a cat that crashed (seen once: busybox segfaulted in
    # dom0 under QEMU TCG) left sleep no argument and destroyed the guest at once
    read -r limit < $dir/timeout
    (sleep $limit; mark $job timeout; xl destroy $name) &
    watchdog=$!
    set -- $(xenstore-read $(for key in @STORE_KEYS@; do echo /local/domain/$domid/$key; done))
    for key in @STORE_KEYS@; do
      mark $job store $key=${1:-}; [ $# -gt 0 ] && shift
    done
    xl list $name 2>&1 | sed -n "2s/^/@xlrig $job list: /p"
    mark $job free-running $(free_mib)
    # asked to power off (xl shutdown: control/shutdown in xenstore) once its output
    # matches shutdown_on's regex, read as one text (grep -z: "." crosses lines, so
    # "A.*A" waits for two A lines); it ends by itself, or at the watchdog
    if [ -f $dir/shutdown_on ]; then
      while kill -0 $xl 2>/dev/null; do
        if grep -Ezq -f $dir/shutdown_on /tmp/console-$job.log; then
          mark $job shutdown-asked; xl shutdown $name >/dev/null 2>&1; break
        fi
        usleep 50000
      done
    fi
    if [ -f $dir/exit_on ]; then
      while kill -0 $xl 2>/dev/null; do
        if grep -Eq -f $dir/exit_on /tmp/console-$job.log; then
          mark $job exit-on; xl destroy $name; break
        fi
        usleep 50000
      done
    fi
    wait $xl
    mark $job ended
    kill $watchdog 2>/dev/null
  fi
  wait $xl
  mark $job xl-status $?
  sed "s/^/@xlrig $job xl: /" /tmp/xl-$job.log
  xl destroy $name >/dev/null 2>&1
  # Opening the FIFO read-write never blocks: it ends the reader's wait for a writer
  # when xenconsoled never opened the log (xl refused the guest).
  exec 3<>$console; exec 3>&-
  waited=0
  while kill -0 $reader 2>/dev/null && [ $waited -lt 40 ]; do
    usleep 50000; waited=$((waited + 1))
  done
  mark $job done
}

for job in $(cat /jobs/order); do run_job $job; done
mark - all-done
poweroff -f
"""


def main() -> int:
    """`python -m shimgen.verify.xlrig`: fetch the rig's packages and build its dom0 (make)."""
    import sys

    from ..errors import ShimgenError

    try:
        files = dom0_files()
    except ShimgenError as error:
        print(f"shimgen: error: {error}", file=sys.stderr)
        return int(error.exit_code)
    print(f"xl rig dom0: {files.kernel}, {files.initramfs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
