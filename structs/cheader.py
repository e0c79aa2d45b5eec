"""Render a C header for the boot structures, straight from the layout engine.

A kernel includes the header to read start_info / hvm_start_info without pulling in
Xen's public headers. Every name carries a prefix (``shimgen_`` / ``SHIMGEN_``) so the
header can sit next to Xen's own in one translation unit. The header checks itself:
``_Static_assert``s on every offset and size derived from the same layout, so a
compiler that lays a struct out differently refuses to build instead of misreading
memory.

It also carries the kernel's side of shimgen's contract: the boot modes the shim
passes in rdi and stores in ``shimgen_boot_mode`` (declared here), and the boot
report and isa-debug-exit values shimgen's harness reads (structs/harness.py). The
sample kernels (samples/) build against this header, not a copy of the numbers.

It works for a 64-bit kernel and for 32-bit code (a PVH entry written in C) alike:
8-byte members carry an explicit 8-byte alignment, because the i386 ABI would give
them only 4 inside a struct and shift every later field. Offset and size macros are
also usable from assembly (``__ASSEMBLER__`` hides the C parts).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from .boot import (
    HVM_START_MAGIC,
    MAX_GUEST_CMDLINE,
    SIF_PM_MASK,
    START_INFO_MAGIC,
    E820Type,
    StartInfoFlags,
    boot_structures,
)
from .clayout import CharArray, Record, Scalar
from .harness import DEBUG_EXIT_FAIL, DEBUG_EXIT_OK, DEBUG_EXIT_PORT, REPORT_DONE, REPORT_PREFIX
from .xen_abi import BOOT_MODE_SYMBOL, BOOT_MODE_TYPE, DEBUGCON_PORT, BootMode

PREFIX = "shimgen_"
GUARD = "SHIMGEN_BOOT_STRUCTS_H"
_INDENT = "    "


def c_struct_name(cli_name: str, prefix: str = PREFIX) -> str:
    """The C tag a structure gets in the header: the CLI name, prefixed.

    The CLI name, not the record's C name, because two versions of one Xen struct
    (hvm_start_info v0 and v1, start_info 64- and 32-bit) must coexist in one header.
    """
    return f"{prefix}{cli_name}"


def _macro(prefix: str, *parts: str) -> str:
    return "_".join([prefix.rstrip("_").upper(), *(part.upper() for part in parts)])


# --- constants ----------------------------------------------------------------------------


def _constant_lines(prefix: str) -> Iterator[str]:
    yield f"#define {_macro(prefix, 'HVM_START_MAGIC')} {HVM_START_MAGIC:#x}U"
    for magic in START_INFO_MAGIC.values():
        platform = magic.decode().rsplit("-", 1)[-1]  # "x86_64", "x86_32p"
        yield f"#define {_macro(prefix, 'START_INFO_MAGIC', platform)} {_c_string(magic.decode())}"
    yield f"#define {_macro(prefix, 'MAX_GUEST_CMDLINE')} {MAX_GUEST_CMDLINE}"
    yield ""
    yield "/* SIF_* flags of start_info.flags and hvm_start_info.flags */"
    for bit in StartInfoFlags:
        yield f"#define {_macro(prefix, 'SIF', bit.name or '')} {int(bit):#x}U"
    yield f"#define {_macro(prefix, 'SIF_PM_MASK')} {SIF_PM_MASK:#x}U"
    yield ""
    yield "/* E820 types of hvm_memmap_table_entry.type */"
    for kind in E820Type:
        yield f"#define {_macro(prefix, 'E820', kind.name)} {int(kind)}"


def _c_string(text: str) -> str:
    """``text`` as a C string literal; text that would need an escape is refused."""
    if not text.isascii() or not text.isprintable() or any(c in text for c in '"\\'):
        raise ValueError(f"{text!r} needs escaping in a C string literal")
    return f'"{text}"'


def _contract_lines(prefix: str) -> Iterator[str]:
    report, done = _macro(prefix, "REPORT_PREFIX"), _macro(prefix, "REPORT_DONE")
    yield "/* How the kernel was entered: the shim passes the mode in rdi and stores it in"
    yield f" * {BOOT_MODE_SYMBOL} when the kernel defines that symbol (declared below) */"
    for mode in BootMode:
        yield f"#define {_macro(prefix, 'BOOT_MODE', mode.name)} {int(mode)}"
    yield ""
    yield f'/* The boot report shimgen\'s harness reads: lines {report} "key=value",'
    yield f" * then {report} {done} */"
    yield f"#define {report} {_c_string(REPORT_PREFIX)}"
    yield f"#define {done} {_c_string(REPORT_DONE)}"
    yield "/* QEMU's isa-debug-exit where the harness places it: writing V to the port ends"
    yield " * QEMU with status 2*V+1 */"
    yield f"#define {_macro(prefix, 'DEBUG_EXIT_PORT')} {DEBUG_EXIT_PORT:#x}"
    yield f"#define {_macro(prefix, 'DEBUG_EXIT_OK')} {DEBUG_EXIT_OK:#x}"
    yield f"#define {_macro(prefix, 'DEBUG_EXIT_FAIL')} {DEBUG_EXIT_FAIL:#x}"
    yield "/* QEMU's debugcon and Xen's HVM debug port: bytes written to it reach the log */"
    yield f"#define {_macro(prefix, 'DEBUGCON_PORT')} {DEBUGCON_PORT:#x}"


def _boot_mode_declaration() -> Iterator[str]:
    yield "#if defined(__cplusplus)"
    yield 'extern "C" {'
    yield "#endif"
    yield f"extern {BOOT_MODE_TYPE.fixed_c_name} {BOOT_MODE_SYMBOL};"
    yield "#if defined(__cplusplus)"
    yield "}"
    yield "#endif"


def _offset_lines(cli_name: str, record: Record, prefix: str) -> Iterator[str]:
    yield f"#define {_macro(prefix, cli_name, 'SIZE')} {record.size}"
    for leaf in record.layout():
        path = leaf.path.replace(".", "_")
        yield f"#define {_macro(prefix, cli_name, path, 'OFFSET')} {leaf.offset}"


# --- declarations ---------------------------------------------------------------------------


def _member_comment(member_doc: str, kind: Scalar | CharArray) -> str:
    notes = [member_doc] if member_doc else []
    if isinstance(kind, Scalar) and kind.c_name != kind.fixed_c_name:
        notes.append(f"Xen: {kind.c_name}")  # keep Xen's own type visible to the reader
    return f" /* {'; '.join(notes)} */" if notes else ""


def _declare(record: Record, prefix: str, depth: int, tag: str) -> list[str]:
    indent = _INDENT * depth
    lines = [f"{indent}{record.kind} {tag}".rstrip() + " {"]
    inner = _INDENT * (depth + 1)
    for member in record.fields:
        kind = member.type
        if isinstance(kind, Record):
            body = _declare(kind, prefix, depth + 1, tag="")
            body[-1] += f" {member.name};"
            lines += body
        elif isinstance(kind, CharArray):
            comment = _member_comment(member.doc, kind)
            lines.append(f"{inner}char {member.name}[{kind.length}];{comment}")
        else:
            comment = _member_comment(member.doc, kind)
            # An explicit alignment only where the i386 ABI would under-align the member.
            align = f"{_macro(prefix, 'ALIGNAS')}({kind.align}) " if kind.align > 4 else ""
            lines.append(f"{inner}{align}{kind.fixed_c_name} {member.name};{comment}")
    lines.append(f"{indent}}}")
    return lines


def _struct_lines(cli_name: str, record: Record, prefix: str) -> Iterator[str]:
    tag = c_struct_name(cli_name, prefix)
    if record.doc:
        yield f"/* {record.doc} */"
    body = _declare(record, prefix, 0, tag)
    body[-1] += ";"
    yield from body
    yield f"typedef {record.kind} {tag} {tag}_t;"


def _assert_lines(cli_name: str, record: Record, prefix: str) -> Iterator[str]:
    tag = f"{record.kind} {c_struct_name(cli_name, prefix)}"
    check = _macro(prefix, "STATIC_ASSERT")
    yield f'{check}(sizeof({tag}) == {record.size}, "{cli_name}: size");'
    for leaf in record.layout():
        where = f"{cli_name}.{leaf.path}"
        yield f'{check}(offsetof({tag}, {leaf.path}) == {leaf.offset}, "{where}: offset");'
        yield f'{check}(sizeof((({tag} *)0)->{leaf.path}) == {leaf.size}, "{where}: size");'


# --- the header -------------------------------------------------------------------------------


def _portability_lines(prefix: str) -> Iterator[str]:
    assert_macro, align_macro = _macro(prefix, "STATIC_ASSERT"), _macro(prefix, "ALIGNAS")
    yield "#if defined(__cplusplus)"
    yield f"#define {assert_macro}(cond, msg) static_assert(cond, msg)"
    yield f"#define {align_macro}(n) alignas(n)"
    yield "#else"
    yield f"#define {assert_macro}(cond, msg) _Static_assert(cond, msg)"
    yield f"#define {align_macro}(n) _Alignas(n)"
    yield "#endif"


def _check_unique_macros(lines: Iterable[str]) -> None:
    seen: set[str] = set()
    for line in lines:
        if line.startswith("#define "):
            name = line.split()[1].split("(")[0]
            if name in seen:
                raise ValueError(f"the header would define {name} twice")
            seen.add(name)


def render_header(names: Sequence[str] | None = None, prefix: str = PREFIX) -> str:
    """The C header for the structures named (CLI names; all when None)."""
    structures = boot_structures()
    selected = list(structures) if names is None else list(names)
    missing = [name for name in selected if name not in structures]
    if missing:
        raise KeyError(f"unknown structures: {', '.join(missing)}")
    lines = [
        "/* Xen boot structures and shimgen's contract with the kernel, generated by",
        " * shimgen from its layout engine and constants. Offsets are checked against",
        " * Xen's public headers with gcc; do not edit. */",
        f"#ifndef {GUARD}",
        f"#define {GUARD}",
        "",
        *_constant_lines(prefix),
        "",
        *_contract_lines(prefix),
        "",
        "/* Sizes and offsets, for C and assembly alike */",
    ]
    for name in selected:
        lines += [*_offset_lines(name, structures[name], prefix), ""]
    # Structure and field names could join into one macro name; refuse, never redefine.
    _check_unique_macros(lines)
    lines += ["#ifndef __ASSEMBLER__", "#include <stddef.h>", "#include <stdint.h>", ""]
    lines += [*_portability_lines(prefix), ""]
    lines += [*_boot_mode_declaration(), ""]
    for name in selected:
        lines += [*_struct_lines(name, structures[name], prefix), ""]
    for name in selected:
        lines += [*_assert_lines(name, structures[name], prefix), ""]
    lines += ["#endif /* __ASSEMBLER__ */", f"#endif /* {GUARD} */"]
    return "\n".join(lines) + "\n"
