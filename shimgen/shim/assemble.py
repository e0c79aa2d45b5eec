"""Render the shim's assembly templates and assemble them with Keystone.

Templates (``asm_templates/*.S``) hold ``{NAME}`` placeholders; every value comes
from shimgen/shim/values.py (struct offsets and Xen ABI numbers from structs/,
addresses from the plan) and is rendered in hex. Keystone 0.9.2 has traps
(tests/shim/test_assemble.py shows them), guarded here:

* AT&T syntax is an option, and with any option set Keystone reads bare numbers as
  hex: the rendered source is checked to hold no decimal literal at all;
* far jumps are written as bytes in the template (``ljmp`` is mangled);
* an empty result is an error, never an empty shim;
* label addresses come back through a ``.quad`` table appended to the source and
  cut off again.

Keystone's output is kept in the shimgen cache, keyed by the source it assembled
(asmcache.py): a patch that assembles a source seen before does not run Keystone.

Every absolute address in the templates is written ``BASE + (label - shim_start)``,
so the bytes do not depend on the assembly base and GNU as (tests) can produce the
very same bytes from the same source.

Which templates make a shim, in which order, and which labels it exports is each
handoff's (shimgen/plan/handoffs.py); parts handoffs share (the 32-bit mode switch,
the Xen cpuid search, the error exits) are files of their own that several sets
list. Nothing here knows a handoff.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from ..errors import ShimgenError
from .asmcache import cached_assembly

DATA_LABEL = "shim_data"  # first label of every shim's data templates
MODE_MARK = "shimgen_mode_"  # labels assemble() adds at each .code32/.code64


class AssemblyError(ShimgenError):
    """The shim could not be assembled: a bug in a template or in Keystone."""


@dataclass(frozen=True)
class Shim:
    """The assembled shim: its bytes and labels, and the source they came from."""

    code: bytes
    labels: dict[str, int]  # label -> offset from the start of the shim
    source: str
    # (offset, bits) where the code's mode starts or changes (32, 64), and where the
    # data begins (bits 0): recorded in the metadata note so that inspect and diff
    # decode each byte as what it is
    regions: tuple[tuple[int, int], ...] = ()
    # every label of the source -> offset, in the order a disassembly shows them
    # (display_order): recorded in the metadata note so that inspect names the code
    all_labels: dict[str, int] = field(default_factory=dict)


def _template_folder() -> Path:
    """Where shimgen.asm_templates' files are: a package folder, as pip installs it
    (read without importlib.resources, whose import costs a small patch ~3 ms)."""
    from .. import asm_templates

    return Path(asm_templates.__file__).parent


def template_names() -> list[str]:
    return sorted(entry.name for entry in _template_folder().iterdir() if entry.suffix == ".S")


def template_text(names: list[str] | tuple[str, ...] | None = None) -> str:
    """The named templates (default: every template file), concatenated."""
    chosen = template_names() if names is None else names
    return "\n".join(_template_file(name) for name in chosen)


@cache
def _template_file(name: str) -> str:
    """One template's text, read once per process (a patch assembles twice)."""
    return (_template_folder() / name).read_text()


def placeholders(source: str) -> set[str]:
    """Every {NAME} a template text asks for."""
    return set(_placeholders(source))


@cache
def _placeholders(source: str) -> frozenset[str]:
    return frozenset(name for _, name, _, _ in string.Formatter().parse(source) if name)


class _HexValues(dict):
    def __missing__(self, key: str) -> str:
        raise AssemblyError(f"template placeholder {{{key}}} has no value")


def render(values: Mapping[str, int | str], templates: Sequence[str]) -> str:
    """The templates' source with every placeholder replaced by its value, numbers
    as hex literals (checked for decimal ones when it is assembled: keystone_checked)."""
    text = template_text(templates)
    missing = placeholders(text) - set(values)
    if missing:
        raise AssemblyError(f"template values missing: {', '.join(sorted(missing))}")
    rendered = _HexValues()
    for key, value in values.items():
        rendered[key] = f"{int(value):#x}" if isinstance(value, int) else value
    return string.Formatter().vformat(text, (), rendered)


_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_DECIMAL = re.compile(r"(?<![\w%.$])\$?(\d+)(?![\w])")


def decimal_literals(source: str) -> list[str]:
    """Bare decimal numbers Keystone would read as hex (0 and 1 read the same)."""
    code = _COMMENT.sub("", source)
    return [m.group(0) for m in _DECIMAL.finditer(code) if int(m.group(1)) > 1]


def check_hex_only(source: str) -> None:
    found = decimal_literals(source)
    if found:
        raise AssemblyError(
            f"decimal literals in the shim source (Keystone reads them as hex): {found[:5]}"
        )


def label_table(labels: Sequence[str]) -> str:
    return "\n".join(f"\t.quad\t{label} - shim_start" for label in labels) + "\n"


def keystone_assemble(source: str) -> bytes:
    """Assemble AT&T source with Keystone at base 0; empty output is an error."""
    from keystone import KS_ARCH_X86, KS_MODE_64, KS_OPT_SYNTAX_ATT, Ks, KsError

    engine = Ks(KS_ARCH_X86, KS_MODE_64)
    engine.syntax = KS_OPT_SYNTAX_ATT
    try:
        encoding, _count = engine.asm(source, 0)
    except KsError as error:
        raise AssemblyError(f"Keystone rejected the shim: {error}") from None
    if not encoding:
        raise AssemblyError("Keystone produced no bytes (a silently rejected instruction)")
    return bytes(encoding)


def keystone_checked(source: str) -> Callable[[str], bytes]:
    """keystone_assemble for a text made from ``source``, once source is known to hold
    no decimal literal. Only a cache miss runs it: a cached entry's source was checked
    before it was assembled (the check reads the whole source, ~2 ms)."""

    def run(text: str) -> bytes:
        check_hex_only(source)
        return keystone_assemble(text)

    return run


_MODE_DIRECTIVE = re.compile(r"^\s*\.code(32|64)\s*$")


def mark_modes(source: str) -> tuple[str, dict[str, int]]:
    """The source with a label after every .code32/.code64 directive, and each
    label's mode: where the bytes change from one instruction set to the other."""
    lines, marks = [], {}
    for line in source.splitlines():
        lines.append(line)
        found = _MODE_DIRECTIVE.match(line)
        if found:
            name = f"{MODE_MARK}{len(marks)}"
            marks[name] = int(found.group(1))
            lines.append(f"{name}:")
    return "\n".join(lines) + "\n", marks


def _regions(labels: dict[str, int], marks: dict[str, int]) -> tuple[tuple[int, int], ...]:
    data = labels[DATA_LABEL]
    regions: dict[int, int] = {}
    for name, bits in marks.items():
        if labels[name] < data:
            regions[labels[name]] = bits  # a later directive at the same place wins
    regions[data] = 0
    changes = [(offset, bits) for offset, bits in sorted(regions.items())]
    return tuple(r for n, r in enumerate(changes) if n == 0 or r[1] != changes[n - 1][1])


_LABEL_LINE = re.compile(r"^\s*([A-Za-z_]\w*):", re.M)


def source_labels(source: str) -> tuple[str, ...]:
    """Every label defined in source, in order (numeric local labels are not names)."""
    return tuple(dict.fromkeys(_LABEL_LINE.findall(_COMMENT.sub("", source))))


def display_order(labels: dict[str, int], exported: Sequence[str]) -> dict[str, int]:
    """labels by offset; at one offset the name a disassembly shows first: an exported
    label, then any other, "*_end" names (the end of what comes before) last."""

    def rank(name: str) -> tuple[int, int, str]:
        kind = 0 if name in exported else 2 if name.endswith("_end") else 1
        return (labels[name], kind, name)

    return {name: labels[name] for name in sorted(labels, key=rank)}


def assemble(
    values: Mapping[str, int | str], templates: Sequence[str], exported: Sequence[str]
) -> Shim:
    """The shim made of ``templates`` (in order, the first defining shim_start): its
    ``exported`` labels for the plan, every label for the metadata note."""
    source = render(values, templates)
    marked, marks = mark_modes(source)
    every = tuple(dict.fromkeys((*exported, *source_labels(source))))
    names = (*every, *marks)
    raw = cached_assembly(marked + label_table(names), keystone_checked(source))
    size = len(raw) - 8 * len(names)
    if size <= 0:
        raise AssemblyError("the label table is larger than the assembled shim")
    offsets = [
        int.from_bytes(raw[size + 8 * n : size + 8 * n + 8], "little") for n in range(len(names))
    ]
    found = dict(zip(names, offsets, strict=True))
    if any(offset > size for offset in offsets):
        raise AssemblyError(f"label offsets outside the shim: {found}")
    return Shim(
        code=raw[:size],
        labels={name: found[name] for name in exported},
        source=source,
        regions=_regions(found, marks),
        all_labels=display_order({name: found[name] for name in every}, exported),
    )
