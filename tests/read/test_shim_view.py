"""The read side of a patched image (shimgen/read/shim_view.py): the metadata note's
label table (format 3) round-trips, names what GNU as names, and older notes
(format 2, as the writer wrote them before) still read, re-patch and diff; the read
side imports nothing from the planner, the assembler or the writer."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import construct as cs
import pytest
from shimgen.structs.shim_meta import SHIM_META, SHIM_META_FORMAT, ShimMeta

from shimgen.read.image import image_from_bytes, read_image
from shimgen.read.shim_view import CorruptShimNote, shim_meta, shim_view, view_of
from shimgen.verify.diff import diff_images
from shimgen.write.patch import original_bytes, patch_bytes, patch_file

# --- the label table ---------------------------------------------------------------------


def _meta(**fields) -> ShimMeta:
    """A record with every number 0 but the fields given."""
    numbers = {
        name: 0
        for name, kind in ShimMeta.__annotations__.items()
        if kind == "int" and name != "format"
    }
    return ShimMeta(
        tool_version="t",
        handoff="start-info",
        original_sha256=bytes(32),
        **numbers | fields,
    )


def test_labels_round_trip_in_their_order() -> None:
    # a prefix of the next name, a name sharing nothing, the longest name (255
    # characters) after its twin, an offset at 16 bits' end
    long = "x" * 254
    labels = {"b": 4, "copy": 0, "copy_loop": 7, "copy_end": 7, long: 9, long + "y": 0xFFFF}
    meta = _meta(labels=labels, code_regions=[(0, 64), (10, 0)])
    parsed = ShimMeta.parse(meta.build())
    assert parsed == meta
    assert list(parsed.labels.items()) == list(labels.items())  # display order is kept
    with pytest.raises(cs.ConstructError):  # a longer name does not fit
        _meta(labels={"x" * 256: 0}).build()


def test_labels_are_front_coded() -> None:
    """Each name stores only what differs from the one before."""
    without = len(_meta().build())
    labels = {"count_ram": 1, "count_ram_loop": 2, "count_ram_next": 3}
    size = len(_meta(labels=labels).build()) - without
    # per label: shared count (1), length (1), offset (2), the new characters
    assert size == 3 * 4 + len("count_ram") + len("_loop") + len("next")


def test_a_label_sharing_more_than_its_predecessor_is_corrupt() -> None:
    desc = bytearray(_meta(labels={"ab": 1, "ac": 2}).build())
    second = desc.rindex(b"\x01c")  # shared 1, then "c" follows as a one-byte string
    desc[second] = 5  # shares 5 characters of "ab"
    with pytest.raises(cs.ConstructError):
        ShimMeta.parse(bytes(desc))


def test_an_older_format_leaves_out_what_it_did_not_have() -> None:
    meta = _meta(labels={"a": 1}, code_regions=[(0, 64)])
    two = ShimMeta.parse(replace(meta, format=2).build())
    assert (two.format, two.labels, two.code_regions) == (2, {}, [(0, 64)])
    one = ShimMeta.parse(replace(meta, format=1).build())
    assert (one.format, one.labels, one.code_regions) == (1, {}, [])
    assert SHIM_META.parse(meta.build()).format == SHIM_META_FORMAT == 3


# --- what the writer records ---------------------------------------------------------------


@pytest.fixture(scope="module")
def patched(samples_build: Path) -> dict[str, bytes]:
    source = samples_build / "pv-hello"
    return {"input": source.read_bytes(), "new": patch_bytes(source.read_bytes(), "x").data}


def test_recorded_labels_are_the_symbols_gnu_as_finds(patched, tmp_path: Path) -> None:
    """Every label of the shim's source, at the offset GNU as gives it (an assembler
    other than the Keystone that placed them), and nothing else."""
    plan = patch_bytes(patched["input"], "x").plan
    meta = shim_meta(image_from_bytes(patched["new"], "new"))
    (tmp_path / "s.S").write_text(plan.shim.source)
    obj = tmp_path / "s.o"
    subprocess.run(["as", "--64", "-o", str(obj), str(tmp_path / "s.S")], check=True)
    nm = subprocess.run(["nm", str(obj)], capture_output=True, text=True, check=True).stdout
    symbols = {
        fields[2]: int(fields[0], 16)
        for fields in (line.split() for line in nm.splitlines())
        if len(fields) == 3 and fields[1] in "tT"
    }
    assert meta.format == SHIM_META_FORMAT
    assert meta.labels == symbols
    assert len(meta.labels) > len(plan.shim.labels)  # more than the exported ones


def test_recorded_order_shows_exported_names_first(patched) -> None:
    view = shim_view(image_from_bytes(patched["new"], "new"))
    shown = {i.address - view.code_vaddr: i.label for i in view.disassembly if i.label}
    assert shown[0] == "pv_entry"  # not shim_start, at the same offset
    assert shown[view.offsets["si_magic_end"]] == "msg_bad_magic"  # exported, then "*_end"
    assert shown[view.offsets["gdt_end"]] == "gdt_descriptor"  # "*_end" ends what is before
    assert shown[view.offsets["shim_data"]] == "kernel_entry_ptr"  # both exported: by name


# --- a format 2 image (written before labels were recorded) ---------------------------------


@pytest.fixture(scope="module")
def format_2(patched, samples_build: Path, tmp_path_factory) -> Path:
    """pv-hello patched by a writer that records format 2, as it did before."""
    build = ShimMeta.build
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ShimMeta, "build", lambda self: build(replace(self, format=2)))
        out = tmp_path_factory.mktemp("format2") / "pv-hello.format2"
        patch_file(samples_build / "pv-hello", out)
    return out


def test_format_2_image_reads_with_entry_points_only(format_2, patched) -> None:
    old = shim_view(read_image(format_2))
    new = shim_view(image_from_bytes(patched["new"], "new"))
    assert old.meta.format == 2 and old.meta.labels == {}
    assert old.offsets == {"pv_entry": 0, "pvh_entry": new.offsets["pvh_entry"]}
    assert old.labels_source == "entry points (a format 2 note records no labels)"
    assert old.code == new.code
    # the same instructions; data rows are only split where labels are known
    code = [(i.address, i.bytes, i.bits) for i in old.disassembly if i.bits]
    assert code == [(i.address, i.bytes, i.bits) for i in new.disassembly if i.bits]
    assert "".join(i.bytes for i in old.disassembly) == old.code.hex()
    assert {i.label for i in old.disassembly} == {None, "pv_entry", "pvh_entry"}


def test_format_2_image_recovers_and_repatches(format_2, patched) -> None:
    data = format_2.read_bytes()
    assert original_bytes(data, shim_meta(read_image(format_2))) == patched["input"]
    again = patch_bytes(data, "format2", force=True).data
    assert again == patched["new"]  # re-patched as a fresh patch, in the new format


def test_format_2_and_3_differ_in_the_format_only(format_2, patched) -> None:
    report = diff_images(read_image(format_2), image_from_bytes(patched["new"], "new"))
    assert report.differences["shim_metadata"] == [
        {"change": "changed", "field": "format", "a": 2, "b": 3}
    ]
    assert report.differences["shim_code"] == []
    assert report.differences["verdicts"] == []


def test_corrupt_label_table_is_a_corrupt_note(patched) -> None:
    image = image_from_bytes(patched["new"], "new")
    meta = shim_meta(image)
    data = bytearray(patched["new"])
    # the first label's shared count (nothing before it to share): right after the
    # record without labels, whose count of 0 labels ends it
    first = data.find(meta.build()) + len(replace(meta, labels={}).build())
    assert data[first] == 0
    data[first] = 1
    with pytest.raises(CorruptShimNote):
        shim_meta(image_from_bytes(bytes(data), "bad"))
    assert view_of(image, meta).code  # the intact image still reads


# --- the read side does not run the writer -------------------------------------------------

READ_SIDE = (
    "shimgen.read",
    "shimgen.verify.diff",
    "shimgen.verify.emulate",
    "shimgen.cli.inspect_cmd",
)
WRITER = ("shimgen.plan", "shimgen.shim.assemble", "shimgen.write")


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _run_at_import(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements importing a module runs: its body, into if/try/with/class blocks,
    not into functions, nor into `if TYPE_CHECKING:` (never true when running)."""
    for node in body:
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from _run_at_import(node.orelse)
        elif isinstance(node, ast.If | ast.With | ast.ClassDef):
            yield from _run_at_import(node.body)
            yield from _run_at_import(getattr(node, "orelse", []))
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                yield from _run_at_import(block)


def _imports(module: str, lazy: bool = True) -> set[str]:
    """shimgen modules a module imports: anywhere in it (``lazy``, its functions'
    imports too), or only the ones loading it runs."""
    spec = importlib.util.find_spec(module)
    tree = ast.parse(Path(spec.origin).read_text())
    package = module if spec.submodule_search_locations else module.rpartition(".")[0]
    nodes = ast.walk(tree) if lazy else _run_at_import(tree.body)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names if _is_module(f"{base}.{a.name}")}
    return {name for name in found if name.split(".")[0] == "shimgen"}


def _read_side_modules() -> list[str]:
    read = importlib.util.find_spec("shimgen.read").submodule_search_locations[0]
    names = [f"shimgen.read.{p.stem}" for p in Path(read).glob("*.py") if p.stem != "__init__"]
    return ["shimgen.read", *sorted(names), *READ_SIDE[1:]]


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")  # importing a.b.c runs a and a.b first
    return [".".join(parts[:n]) for n in range(2, len(parts) + 1)]


def _reached(start: str) -> dict[str, str]:
    """The shimgen modules start imports anywhere in its code, and every module those
    load in turn: name -> the module that imports it."""
    seen = {start: ""}
    todo = [(start, True)]
    while todo:
        module, lazy = todo.pop()
        for name in _imports(module, lazy):
            for parent in _with_parents(name):
                if parent not in seen:
                    seen[parent] = module
                    todo.append((parent, False))
    return seen


def _is_writer(name: str) -> bool:
    return any(name == w or name.startswith(w + ".") for w in WRITER)


@pytest.mark.parametrize("module", _read_side_modules())
def test_read_side_imports_no_writer(module: str) -> None:
    reached = _reached(module)
    bad = {name: importer for name, importer in reached.items() if _is_writer(name)}
    assert not bad, f"{module} reaches the writer: {bad} (module: imported by)"


def test_import_check_sees_a_writer_import() -> None:
    """The check above fails for a module that imports the writer, however spelt."""
    assert _is_writer("shimgen.plan") and _is_writer("shimgen.write.patch")
    assert not _is_writer("shimgen.shim.pagetables") and not _is_writer("shimgen.planet")
    assert "shimgen.plan" in _imports("shimgen.write.patch", lazy=False)
    # `from ..shim.assemble import`
    assert "shimgen.shim.assemble" in _imports("shimgen.plan.handoffs")
    assert "shimgen.write.patch" in _reached("shimgen.api")  # in the function patch()
    # through a module it imports: the planner loads the assembler
    assert "shimgen.shim.assemble" not in _imports("shimgen.write.patch")
    via = _reached("shimgen.write.patch")["shimgen.shim.assemble"]
    assert via.startswith(("shimgen.plan.", "shimgen.shim.values"))
    # what only type checkers read is not imported
    assert "shimgen.plan" in _imports("shimgen.api") - _imports("shimgen.api", lazy=False)


READ_COMMANDS = (
    ("inspect", "--json", "{}"),
    ("diff", "{}", "{}"),
    ("emulate", "--mode", "pvh", "{}"),
)


def test_inspect_diff_emulate_load_no_writer(tmp_path: Path, patched) -> None:
    """What the three commands import when they run, in a fresh interpreter."""
    image = tmp_path / "patched"
    image.write_bytes(patched["new"])
    commands = [[arg.format(image) for arg in command] for command in READ_COMMANDS]
    script = (
        "import contextlib, io, json, sys\n"
        "from shimgen.cli import main\n"
        f"for args in {commands!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        assert main(args) == 0, args\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    loaded = json.loads(run.stdout)
    assert {"shimgen.read.shim_view", "shimgen.verify.diff", "shimgen.verify.emulate"} <= set(
        loaded
    )
    assert [name for name in loaded if _is_writer(name)] == []
