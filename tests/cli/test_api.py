"""The public Python API: its reference, its laziness, and the CLI as a layer over it."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import shimgen
from shimgen import api
from shimgen.cli import main
from shimgen.errors import BadInput, MissingTool, UsageError

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "api.md"
HEAVY = ("keystone", "unicorn", "capstone", "rich", "construct", "lief")


def reference() -> str:
    return REFERENCE.read_text()


def section(name: str) -> str:
    """The reference's text under `### `name``, up to the next heading."""
    text = reference()
    heading = f"### `{name}`"
    start = text.index(heading) + len(heading)
    following = re.search(r"^#{2,3} ", text[start:], re.M)
    return text[start : start + following.start()] if following else text[start:]


def signature(function: Callable[..., Any]) -> str:
    """function's signature as the reference writes it."""
    parts: list[str] = []
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind is parameter.KEYWORD_ONLY and "*" not in parts:
            parts.append("*")
        text = f"{parameter.name}: {parameter.annotation}"
        if parameter.default is not parameter.empty:
            text += f" = {parameter.default!r}"
        parts.append(text)
    returns = inspect.signature(function).return_annotation
    return f"{function.__name__}({', '.join(parts)}) -> {returns}"


def test_reference_lists_exactly_the_public_names() -> None:
    documented = re.findall(r"^### `(\w+)`", reference(), re.M)
    assert len(documented) == len(set(documented))
    assert set(documented) == set(api.__all__)


@pytest.mark.parametrize("name", api.__all__)
def test_reference_gives_each_name_its_types(name: str) -> None:
    obj = getattr(api, name)
    text = section(name)
    if inspect.isfunction(obj):
        assert signature(obj) in text
    elif dataclasses.is_dataclass(obj):
        for item in dataclasses.fields(obj):
            assert f"- `{item.name}: {item.type}`" in text, item.name
        assert hasattr(obj, "to_json")
    elif isinstance(obj, type):
        assert issubclass(obj, api.ShimgenError)
    else:
        assert isinstance(obj, tuple) and "tuple[str, ...]" in text


def test_top_level_names_are_the_api() -> None:
    for name in api.__all__:
        assert getattr(shimgen, name) is getattr(api, name)
    assert set(api.__all__) <= set(dir(shimgen))
    with pytest.raises(AttributeError):
        shimgen.make_plan  # noqa: B018  # internal: not re-exported


def test_constants_are_the_modules_own() -> None:
    from shimgen.plan import HANDOFFS
    from shimgen.verify.boot import LOADERS

    assert api.HANDOFFS is HANDOFFS and api.LOADERS is LOADERS
    assert "start-info" in api.HANDOFFS and "qemu-pvh" in api.LOADERS


def imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_import_is_lazy() -> None:
    """`import shimgen` loads nothing of the API; the API module loads no pipeline stage
    or heavy library until a function needs it (the CLI's start-up depends on it)."""
    bare = imported_after("import shimgen")
    assert not [m for m in bare if m.startswith("shimgen.")]
    loaded = imported_after("import shimgen.api")
    assert not [m for m in loaded if m.split(".")[0] in HEAVY]
    stages = ("shimgen.plan", "shimgen.shim", "shimgen.write", "shimgen.verify", "shimgen.read")
    assert not [m for m in loaded if m.startswith(stages)]


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    status = main([*argv, "--json"])
    return status, json.loads(capsys.readouterr().out)


def printed(result: Any) -> Any:
    """result.to_json() as `--json` prints it (tuples become lists, bytes hex)."""
    from shimgen.cli.render import print_json

    with contextlib.redirect_stdout(io.StringIO()) as out:
        print_json(result.to_json())
    return json.loads(out.getvalue())


def test_results_are_what_the_commands_print(
    samples_build: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kernel, other = str(samples_build / "pv-hello"), str(samples_build / "pv-highhalf")
    out = str(tmp_path / "pv-hello.universal")
    assert cli_json(capsys, "patch", kernel, "-o", out, "--dry-run") == (
        0,
        printed(shimgen.patch(kernel, out, dry_run=True)),
    )
    patched = shimgen.patch(kernel, out)
    assert patched.output == out and Path(out).stat().st_size == patched.size
    assert cli_json(capsys, "inspect", out) == (0, printed(shimgen.inspect(out)))
    assert cli_json(capsys, "check", out) == (0, printed(shimgen.check(out)))
    assert cli_json(capsys, "check", kernel, "--mode", "pvh") == (
        1,
        printed(shimgen.check(kernel, "pvh")),
    )
    assert cli_json(capsys, "diff", kernel, other) == (1, printed(shimgen.diff(kernel, other)))
    assert cli_json(capsys, "emulate", out, "--mode", "pvh") == (
        0,
        printed(shimgen.emulate(out, "pvh")),
    )


def test_report_stable_json_drops_only_volatile_fields(samples_build: Path, tmp_path: Path) -> None:
    out = shimgen.patch(samples_build / "pv-hello", tmp_path / "u").output
    full, stable = printed(shimgen.inspect(out)), shimgen.inspect(out).stable_json()
    assert set(full) - set(stable) == {"path", "sha256"}
    assert "original_sha256" not in stable["shim"]["metadata"]
    assert stable["segments"] == full["segments"] and stable["verdicts"] == full["verdicts"]
    moved = tmp_path / "elsewhere"
    moved.write_bytes(Path(out).read_bytes())
    assert shimgen.inspect(moved).stable_json() == stable


@pytest.mark.parametrize(
    ("command", "function"),
    [
        (["patch", "{kernel}", "-o", "{tmp}/u"], "patch"),
        (["inspect", "{kernel}"], "inspect"),
        (["check", "{kernel}"], "check"),
        (["diff", "{kernel}", "{kernel}"], "diff"),
        (["emulate", "{tmp}/none", "--mode", "pv"], "emulate"),
        (["boot", "{kernel}", "--loader", "qemu-pvh"], "boot"),
    ],
)
def test_each_command_calls_its_api_function(
    command: list[str],
    function: str,
    samples_build: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The CLI goes through shimgen.api: replacing the function changes the command."""
    calls = []

    def stand_in(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        raise MissingTool("stand-in called")

    monkeypatch.setattr(api, function, stand_in)
    argv = [part.format(kernel=samples_build / "pv-hello", tmp=tmp_path) for part in command]
    assert main(argv) == 4
    assert len(calls) == 1 and str(calls[0][0]) == argv[1]
    assert "stand-in called" in capsys.readouterr().err


def test_errors_are_shimgen_errors(samples_build: Path, tmp_path: Path) -> None:
    kernel = samples_build / "pv-hello"
    with pytest.raises(UsageError):
        shimgen.check(kernel, "hvm")
    with pytest.raises(UsageError, match="has no field 'nope'"):
        shimgen.emulate(kernel, "pvh", hvm_fields={"nope": 1})
    with pytest.raises(UsageError, match="does not fit in 4 bytes"):
        shimgen.emulate(kernel, "pvh", hvm_fields={"version": 1 << 32})
    with pytest.raises(UsageError, match="loader must be one of"):
        shimgen.boot(kernel, "bochs")
    text = tmp_path / "text"
    text.write_text("not an ELF")
    with pytest.raises(BadInput) as caught:
        shimgen.inspect(text)
    assert caught.value.exit_code == 3
