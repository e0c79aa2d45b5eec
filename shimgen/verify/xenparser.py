"""Xen's own image readers, run as oracles: libxenguest's parser and `readnotes`.

`parse(path, "pv" | "pvh")` builds (once) and runs shimgen/native/xenparse.c, a small
C helper linked against the host's libxenguest (Debian libxen-dev). It runs the
parser `xl create` uses, xc_dom_kernel_file + xc_dom_parse_image, with a dummy
xenctrl handle: no hypervisor is needed. "pvh" means an HVM container, which is
how the toolstack loads a PVH guest.

`readnotes(path)` runs Xen's `readnotes` from Debian's xen-utils-4.17 (unpacked into
the cache, never installed) and returns the notes it prints.

What libxenguest 4.17 does that a plain reading of the ELF note rules would not
predict (measured; tests/read/test_xen_oracle.py pins each one):

- Loaders are tried in order multiboot-binary, HVM-generic, Linux bzImage,
  ELF-generic; the first whose probe passes parses the image, with no fallback.
- Probes run libelf silently. In a PV container every libelf rejection therefore
  surfaces only as "xc_dom_find_loader: no loader found"; the helper repeats the
  ELF probe with logging on ("diagnosis" phase) to recover libelf's own reason.
- HVM-generic (the hvmloader firmware loader) takes, in an HVM container, any ELF
  on which elf_xen_parse(hvm=true) fails. For an ELF32 that is acceptance: the
  image is loaded as firmware and started at e_entry (guest type hvm-3.0-x86_32),
  whatever PV notes it has. For an ELF64 the parse then fails with "ELF image is
  not 32bit". elf_xen_parse(hvm=true) fails whenever e_entry is outside the
  p_paddr range (virt_base and paddr_offset are forced to 0 in HVM), so a
  Linux-style PV image (high e_entry) reaches HVM-generic, while one with
  VIRT_BASE 0 reaches ELF-generic and fails in xc_dom_guest_type with "image not
  capable of booting inside a HVM container".
- An unknown required FEATURES entry ("!foo") makes libelf fail without a message.
- A PV guest type must be in xen_caps: a 32-bit PAE kernel needs
  "xen-3.0-x86_32p", which Debian's Xen 4.17 (built without 32-bit PV) lacks.
  parse() passes Debian's list unless told otherwise, as shimgen's check does.
- xc_dom_kernel_file gunzips a gzip-compressed image before any loader sees it.
- libelf takes a note's owner as the C string at its name field, whatever namesz
  says; a number's size from descsz (a payload the file cuts short reads as 0);
  an all-ones address as "not given" (UNSET_ADDR); any EI_CLASS but ELFCLASS64 as
  ELF32; and table entries e_phentsize/e_shentsize apart, overlapping when smaller.
- In an HVM container the guest type is hvm-3.0-x86_32 whatever e_machine says; in
  a PV one an e_machine other than EM_386 and EM_X86_64 is "unknown image type".
  (tests/read/test_xen_differential.py found or pins each.)
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from ..errors import BadInput, MissingTool, ShimgenError
from ..structs.xen_abi import DEBIAN_XEN_CAPS
from .debcache import cache_dir, unpacked_package

Container = Literal["pv", "pvh"]

DEFAULT_XEN_CAPS = " ".join(DEBIAN_XEN_CAPS)
HELPER_SOURCE = "xenparse.c"
COMPILE_FLAGS = ("-std=gnu11", "-O2", "-Wall", "-Wextra")
LINK_LIBS = ("-lxenguest", "-lxenctrl", "-lxentoollog")
HELPER_TIMEOUT = 60  # seconds; a parse takes milliseconds
ELF_LOADER = "ELF-generic"  # libxenguest's name for the loader that reads Xen notes

READNOTES_PACKAGE = "xen-utils-4.17"
READNOTES_PATH = "usr/lib/xen-4.17/bin/readnotes"

# xc_error_code descriptions libxenguest appends to its error lines (": Invalid kernel").
_XC_ERROR_SUFFIXES = (
    "Invalid kernel",
    "Invalid configuration",
    "Invalid parameter",
    "Internal error",
    "Out of memory",
    "Unknown error code",
)
_PANIC_PREFIX = re.compile(r"^panic: [\w.]+:\d+: ")
_NO_LOADER = "no loader found"


# --- libxenguest ---------------------------------------------------------------------


@dataclass(frozen=True)
class LogLine:
    phase: str  # "load" (xc_dom_*), "diagnosis" (the ELF probe repeated with logging)
    level: str  # xentoollog level: "detail", "error", ...
    context: str  # "xc", "domainbuilder" or "xenparse"
    errno: int
    text: str


@dataclass(frozen=True)
class XenParse:
    """libxenguest's answer for one image in one container."""

    ok: bool
    container: Container
    guest_type: str | None  # "xen-3.0-x86_64", "xen-3.0-x86_32p", "hvm-3.0-x86_32"
    loader: str | None  # loader whose probe took the image: "ELF-generic", "HVM-generic"
    loaders_tried: list[str]
    error: str | None  # the most telling error line, cleaned of "panic: file:line: "
    load_error: str | None  # what xc_dom_parse_image itself reported last
    messages: list[str]  # every log line's text, in order
    log: list[LogLine]
    parms: dict[str, int | str]  # libelf's elf_dom_parms, empty when unavailable
    parms_error: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def accepted_by_elf_loader(self) -> bool:
        """Accepted through the Xen ELF notes, not as HVM firmware (see module doc)."""
        return self.ok and self.loader == ELF_LOADER


def available() -> bool:
    """True when the helper can be built (or is built) on this machine."""
    try:
        helper_binary()
    except MissingTool:
        return False
    return True


def parse(path: str | Path, container: Container, xen_caps: str = DEFAULT_XEN_CAPS) -> XenParse:
    """Run libxenguest's parser on path in a PV or an HVM (PVH) container, for a
    hypervisor offering the guest types xen_caps (default: Debian's Xen 4.17, as
    shimgen's own check assumes)."""
    if container not in ("pv", "pvh"):
        raise ValueError(f"container must be 'pv' or 'pvh', not {container!r}")
    argv = [str(helper_binary()), "pv" if container == "pv" else "hvm", str(path), xen_caps]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=HELPER_TIMEOUT)
    if done.returncode not in (0, 1):
        raise ShimgenError(
            f"xenparse helper failed (status {done.returncode}): {done.stderr.strip()}"
        )
    return _from_json(json.loads(done.stdout), container)


def _from_json(data: dict[str, Any], container: Container) -> XenParse:
    log = [
        LogLine(m["phase"], m["level"], m["context"], m["errno"], m["text"])
        for m in data["messages"]
    ]
    return XenParse(
        ok=bool(data["ok"]),
        container=container,
        guest_type=data["guest_type"],
        loader=data["loader"],
        loaders_tried=list(data["loaders_tried"]),
        error=_most_telling_error(log),
        load_error=_last_error(log, "load"),
        messages=[line.text for line in log],
        log=log,
        parms=data["parms"] or {},
        parms_error=data.get("parms_error"),
        raw=data,
    )


def clean_error(text: str) -> str:
    """Drop the decorations libxenguest adds around a message."""
    text = _PANIC_PREFIX.sub("", text)
    text = text.removeprefix("ERROR: ")
    for suffix in _XC_ERROR_SUFFIXES:
        text = text.removesuffix(": " + suffix)
    return text


def _is_error(line: LogLine) -> bool:
    return line.level in ("error", "critical")


def _last_error(log: list[LogLine], phase: str) -> str | None:
    errors = [line for line in log if line.phase == phase and _is_error(line)]
    return clean_error(errors[-1].text) if errors else None


def _most_telling_error(log: list[LogLine]) -> str | None:
    """libelf's own words first (they name the broken rule), then the loader's.

    "no loader found" comes last: in a PV container it stands for any libelf
    rejection, which the diagnosis phase spells out.
    """
    errors = [line for line in log if _is_error(line)]
    libelf = [line for line in errors if line.text.startswith("ERROR: ")]
    specific = [line for line in errors if _NO_LOADER not in line.text]
    for group in (libelf, specific, errors):
        if group:
            return clean_error(group[0].text)
    return None


# --- building the helper ---------------------------------------------------------------


def _helper_source() -> bytes:
    return resources.files("shimgen.native").joinpath(HELPER_SOURCE).read_bytes()


def _gcc() -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise MissingTool("gcc not found: install gcc to build the libxenguest helper")
    return gcc


@functools.cache
def _gcc_version(gcc: str) -> str:
    done = subprocess.run([gcc, "-dumpfullversion"], capture_output=True, text=True)
    return done.stdout.strip()


def helper_binary() -> Path:
    """Path of the built helper, compiling it if its source or compiler changed."""
    gcc = _gcc()
    source = _helper_source()
    # The key covers everything that changes the binary we would get.
    key = hashlib.sha256(
        b"\0".join(
            [source, " ".join(COMPILE_FLAGS + LINK_LIBS).encode(), _gcc_version(gcc).encode()]
        )
    ).hexdigest()[:16]
    binary = cache_dir() / "native" / f"xenparse-{key}"
    if not binary.exists():
        _compile(gcc, source, binary)
    return binary


def _compile(gcc: str, source: bytes, binary: Path) -> None:
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=binary.parent) as scratch:
        src = Path(scratch) / HELPER_SOURCE
        src.write_bytes(source)
        out = Path(scratch) / "xenparse"
        done = subprocess.run(
            [gcc, *COMPILE_FLAGS, "-o", str(out), str(src), *LINK_LIBS],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise _compile_error(done.stderr)
        # Atomic: a concurrent build of the same key replaces it with equal bytes.
        os.replace(out, binary)


def _compile_error(stderr: str) -> ShimgenError:
    missing_header = re.search(r"(xen\w*\.h|xen/\S+\.h): No such file", stderr)
    missing_lib = re.search(r"cannot find -l(xen\w+)", stderr)
    if missing_header or missing_lib:
        what = missing_header.group(1) if missing_header else f"lib{missing_lib.group(1)}"
        return MissingTool(f"{what} not found: install libxen-dev to build the libxenguest helper")
    first = next((line for line in stderr.splitlines() if "error" in line), stderr.strip())
    return ShimgenError(f"building the libxenguest helper failed: {first}")


# --- readnotes -------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadNote:
    """One line of readnotes' output."""

    name: str  # "ENTRY", "LOADER", "UNKNOWN(15)", "__xen_guest"
    value: int | str
    width: int | None  # desc size in bytes for numbers; None for text


@dataclass(frozen=True)
class ReadnotesOutput:
    notes: list[ReadNote]
    used_sections: bool  # "using notes from SHT_NOTE section" was printed
    stdout: str
    stderr: str


# How readnotes 4.17 prints each type it knows; anything else is "unknown note type".
_READNOTES_NUMBERS = frozenset(
    {
        "ENTRY",
        "HYPERCALL_PAGE",
        "VIRT_BASE",
        "PADDR_OFFSET",
        "HV_START_LOW",
        "SUSPEND_CANCEL",
        "PHYS32_ENTRY",
    }
)
_READNOTES_TEXTS = frozenset(
    {
        "INFO",
        "XEN_VERSION",
        "GUEST_OS",
        "GUEST_VERSION",
        "LOADER",
        "PAE_MODE",
        "FEATURES",
        "L1_MFN_VALID",
        "__xen_guest",
    }
)
_NUMBER_LINE = re.compile(r"^(\w+): +(0x[0-9a-f]+|0) \((\d+) bytes\)$")
_TEXT_LINE = re.compile(r"^(\w+): (.*)$", re.DOTALL)
_UNKNOWN_LINE = re.compile(r"^unknown note type (0x[0-9a-f]+|0)$")


def readnotes_binary() -> Path:
    binary = unpacked_package(READNOTES_PACKAGE) / READNOTES_PATH
    if not binary.exists():
        raise MissingTool(f"{READNOTES_PACKAGE} has no {READNOTES_PATH}")
    return binary


def run_readnotes(path: str | Path) -> ReadnotesOutput:
    """Run Xen's readnotes on path (gzip-compressed images too: it gunzips them)."""
    done = subprocess.run(
        [str(readnotes_binary()), str(path)],
        capture_output=True,
        timeout=HELPER_TIMEOUT,
    )
    stdout = done.stdout.decode("utf-8", "replace")
    stderr = done.stderr.decode("utf-8", "replace")
    if "error while loading shared libraries" in stderr:
        # readnotes links the host's libxenguest.so.4.17 (libxen-dev pulls it in).
        raise MissingTool(f"readnotes cannot start: {stderr.strip()} (install libxen-dev)")
    if done.returncode != 0:
        raise BadInput(f"readnotes rejected {path}: {(stderr or stdout).strip()}")
    return ReadnotesOutput(
        notes=parse_readnotes(stdout),
        used_sections="using notes from SHT_NOTE section" in stderr,
        stdout=stdout,
        stderr=stderr,
    )


def readnotes(path: str | Path) -> list[ReadNote]:
    return run_readnotes(path).notes


def parse_readnotes(stdout: str) -> list[ReadNote]:
    """readnotes' lines as records; a string with a newline continues on the next line."""
    lines = stdout.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    notes: list[ReadNote] = []
    for line in lines:
        note = _parse_readnotes_line(line)
        if note is not None:
            notes.append(note)
        elif notes and isinstance(notes[-1].value, str):
            last = notes[-1]
            notes[-1] = ReadNote(last.name, f"{last.value}\n{line}", last.width)
    return notes


def _parse_readnotes_line(line: str) -> ReadNote | None:
    unknown = _UNKNOWN_LINE.match(line)
    if unknown:
        return ReadNote(f"UNKNOWN({int(unknown.group(1), 16)})", "", None)
    number = _NUMBER_LINE.match(line)
    if number and number.group(1) in _READNOTES_NUMBERS:
        return ReadNote(number.group(1), int(number.group(2), 16), int(number.group(3)))
    text = _TEXT_LINE.match(line)
    if text and text.group(1) in _READNOTES_TEXTS:
        return ReadNote(text.group(1), text.group(2), None)
    return None
