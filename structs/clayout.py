"""A small C layout engine: one declaration gives offsets, sizes, a C header and a construct.

Boot structures are declared once, as C declares them (scalar types, arrays, nested
structs and unions). The engine applies the x86 SysV alignment rules a C compiler
would (each member at a multiple of its alignment, the aggregate padded to its own
alignment), so no offset or padding is ever typed by hand. From the one declaration
it derives:

* ``layout()``: every leaf field with its dotted path, offset, size and C type;
* ``offset_of("console.domU.evtchn")``: one field's offset;
* ``construct``: a ``construct`` object that parses and builds the bytes;
* ``c_declaration()``: the C text of the declaration, for a header a kernel includes.

Offsets and sizes need no ``construct``: it is imported by what parses or builds
with it (importing it, with the debugger it loads, costs a patch ~25 ms).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    import construct as cs


@dataclass(frozen=True)
class Scalar:
    """An unsigned or signed little-endian integer of a fixed width."""

    c_name: str
    size: int
    signed: bool = False

    @property
    def align(self) -> int:
        return self.size

    @property
    def fixed_c_name(self) -> str:
        return f"{'int' if self.signed else 'uint'}{self.size * 8}_t"

    @property
    def construct(self) -> cs.Construct:
        import construct as cs

        return cs.BytesInteger(self.size, signed=self.signed, swapped=True)


@dataclass(frozen=True)
class CharArray:
    """``char name[length]``: parsed as bytes, NUL padding kept."""

    length: int
    c_name: str = "char"

    @property
    def size(self) -> int:
        return self.length

    @property
    def align(self) -> int:
        return 1

    @property
    def construct(self) -> cs.Construct:
        import construct as cs

        return cs.Bytes(self.length)


U8 = Scalar("uint8_t", 1)
U16 = Scalar("uint16_t", 2)
U32 = Scalar("uint32_t", 4)
U64 = Scalar("uint64_t", 8)


@dataclass(frozen=True)
class Field:
    """One member of a :class:`Record`: its name, type and comment."""

    name: str
    type: Scalar | CharArray | Record
    doc: str = ""


@dataclass(frozen=True)
class Leaf:
    """One leaf member as a C compiler lays it out."""

    path: str
    offset: int
    size: int
    c_type: str
    doc: str


MASK64 = (1 << 64) - 1  # an address or U64 value wrapped to 64 bits


def round_up(value: int, align: int) -> int:
    """value rounded up to a multiple of align (the one helper every layout uses)."""
    return (value + align - 1) // align * align


@dataclass(frozen=True)
class Record:
    """A C struct or union made of :class:`Field` members."""

    name: str
    fields: tuple[Field, ...]
    kind: str = "struct"  # or "union"
    doc: str = ""
    _offsets: dict[str, int] = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in ("struct", "union"):
            raise ValueError(f"{self.name}: kind must be struct or union")
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: duplicate member names")
        cursor = 0
        for member in self.fields:
            if self.kind == "union":
                self._offsets[member.name] = 0
            else:
                cursor = round_up(cursor, member.type.align)
                self._offsets[member.name] = cursor
                cursor += member.type.size

    @property
    def c_name(self) -> str:
        return f"{self.kind} {self.name}"

    @cached_property
    def align(self) -> int:
        return max(member.type.align for member in self.fields)

    @cached_property
    def size(self) -> int:
        if self.kind == "union":
            end = max(member.type.size for member in self.fields)
        else:
            last = self.fields[-1]
            end = self._offsets[last.name] + last.type.size
        return round_up(end, self.align)

    def member_offset(self, name: str) -> int:
        return self._offsets[name]

    def leaves(self, prefix: str = "", base: int = 0) -> Iterator[Leaf]:
        """Every scalar or array member, depth first, with absolute offsets."""
        for member in self.fields:
            path = f"{prefix}{member.name}"
            offset = base + self._offsets[member.name]
            if isinstance(member.type, Record):
                yield from member.type.leaves(f"{path}.", offset)
            else:
                yield Leaf(path, offset, member.type.size, _c_type(member.type), member.doc)

    def layout(self) -> list[Leaf]:
        return list(self.leaves())

    def offset_of(self, path: str) -> int:
        """Offset of a member given as a dotted path, e.g. ``console.domU.evtchn``."""
        record: Record = self
        offset = 0
        parts = path.split(".")
        for depth, part in enumerate(parts):
            if part not in record._offsets:
                raise KeyError(f"{self.name} has no member {'.'.join(parts[: depth + 1])}")
            offset += record._offsets[part]
            member_type = next(f.type for f in record.fields if f.name == part)
            if depth < len(parts) - 1:
                if not isinstance(member_type, Record):
                    raise KeyError(f"{self.name}.{'.'.join(parts[: depth + 1])} is not a record")
                record = member_type
        return offset

    def size_of(self, path: str) -> int:
        record: Record = self
        parts = path.split(".")
        for part in parts[:-1]:
            record = next(f.type for f in record.fields if f.name == part)  # type: ignore[assignment]
        return next(f.type for f in record.fields if f.name == parts[-1]).size

    @property
    def construct(self) -> cs.Construct:
        import construct as cs

        if self.kind == "union":
            members = [member.name / member.type.construct for member in self.fields]
            # Parsing leaves the stream after the member named here: take the largest,
            # so a union inside a struct consumes exactly its own size.
            largest = max(self.fields, key=lambda member: member.type.size)
            return cs.Padded(self.size, cs.Union(largest.name, *members))
        members: list[cs.Construct] = []
        cursor = 0
        for member in self.fields:
            offset = self._offsets[member.name]
            if offset > cursor:
                members.append(cs.Padding(offset - cursor))
            members.append(member.name / member.type.construct)
            cursor = offset + member.type.size
        if self.size > cursor:
            members.append(cs.Padding(self.size - cursor))
        return cs.Struct(*members)

    @cached_property
    def _flat_format(self) -> struct.Struct | None:
        """A `struct` format for records of scalars and arrays only (fast path)."""
        if self.kind != "struct":
            return None
        codes = ["<"]
        cursor = 0
        for member in self.fields:
            offset = self._offsets[member.name]
            if offset > cursor:
                codes.append(f"{offset - cursor}x")
            if isinstance(member.type, CharArray):
                codes.append(f"{member.type.length}s")
            elif isinstance(member.type, Scalar):
                code = _STRUCT_CODES[member.type.size]
                codes.append(code.lower() if member.type.signed else code)
            else:
                return None
            cursor = offset + member.type.size
        if self.size > cursor:
            codes.append(f"{self.size - cursor}x")
        return struct.Struct("".join(codes))

    def unpack_from(self, data: bytes, offset: int = 0) -> dict[str, int | bytes]:
        """Members of a flat record at data[offset:], as a dict (much faster than parse)."""
        layout = self._flat_format
        if layout is None:
            raise TypeError(f"{self.name} has nested members: use parse()")
        names = [member.name for member in self.fields]
        return dict(zip(names, layout.unpack_from(data, offset), strict=True))

    def pack(self, values: dict[str, int]) -> bytes:
        """build() of a record of scalars, without construct: the same bytes. Anything
        else (arrays, nested records, a value out of range) goes through build(), so
        that errors are construct's."""
        layout = self._flat_format
        if layout is not None and not any(isinstance(m.type, CharArray) for m in self.fields):
            try:
                return layout.pack(*(values[member.name] for member in self.fields))
            except (struct.error, KeyError, TypeError):
                pass
        return self.build(values)

    def parse(self, data: bytes) -> cs.Container:
        return self.construct.parse(bytes(data[: self.size]).ljust(self.size, b"\0"))

    def build(self, values: dict) -> bytes:
        raw = self.construct.build(values)
        # A union builds only its first matching member: pad it to the union's size.
        return raw.ljust(self.size, b"\0")

    def c_declaration(self, indent: str = "", tag: bool = True) -> str:
        """C text of this record (members, nested records inline)."""
        lines = [f"{indent}{self.kind} {self.name if tag else ''}".rstrip() + " {"]
        for member in self.fields:
            comment = f" /* {member.doc} */" if member.doc else ""
            if isinstance(member.type, Record):
                body = member.type.c_declaration(indent + "    ", tag=False)
                lines.append(f"{body} {member.name};{comment}")
            elif isinstance(member.type, CharArray):
                lines.append(f"{indent}    char {member.name}[{member.type.length}];{comment}")
            else:
                # Fixed-width types keep the header right whatever the includer's ABI;
                # Xen's own type name stays in the comment.
                fixed = member.type.fixed_c_name
                notes = [text for text in (member.doc, _xen_type_note(member.type)) if text]
                comment = f" /* {'; '.join(notes)} */" if notes else ""
                lines.append(f"{indent}    {fixed} {member.name};{comment}")
        lines.append(f"{indent}}}")
        return "\n".join(lines)


_STRUCT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


def _xen_type_note(kind: Scalar) -> str:
    return "" if kind.c_name == kind.fixed_c_name else f"Xen: {kind.c_name}"


def _c_type(kind: Scalar | CharArray) -> str:
    if isinstance(kind, CharArray):
        return f"char[{kind.length}]"
    return kind.c_name
