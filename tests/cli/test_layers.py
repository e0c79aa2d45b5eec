"""Data flows one way through the pipeline's packages: this test reads every import in
shimgen/ (with ast, so imports inside functions count too) and fails on one that goes
against the flow, e.g. the verify stage importing the CLI's rendering."""

from __future__ import annotations

import ast
from pathlib import Path

import shimgen

PACKAGE = Path(shimgen.__file__).parent
STAGES = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
# __init__: __version__; cachedir: the one cache folder (shim's templates, verify's debs)
BASE = {"errors", "structs", "__init__", "cachedir"}
# stage -> the stages it may import (besides itself)
ALLOWED = {
    "errors": set(),
    "cachedir": set(),
    "read": BASE,
    "shim": BASE,
    "plan": BASE | {"read", "shim"},
    "write": BASE | {"read", "plan"},
    "verify": BASE | {"read", "shim"},
    "native": set(),
    "api": BASE | {"read", "shim", "plan", "write", "verify"},
    "cli": BASE | {"api", "read", "verify"},
    "pytest_plugin": BASE | {"api", "verify"},
    "__main__": {"cli"},
    "__init__": BASE | {"api"},
}


def stage_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported_stages(rel: Path, source: str) -> set[str]:
    """The shimgen stages a module (at rel inside the package) imports."""
    here = ["shimgen", *rel.parts[:-1]]
    found = set()
    for node in ast.walk(ast.parse(source)):
        modules: list[list[str]] = []
        if isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            module = base + (node.module.split(".") if node.module else [])
            if module == ["shimgen"]:  # from shimgen import x / from .. import x
                names = [alias.name for alias in node.names]
                modules = [["shimgen", name] if name in STAGES else ["shimgen"] for name in names]
            else:
                modules = [module]
        elif isinstance(node, ast.Import):
            modules = [alias.name.split(".") for alias in node.names]
        for module in modules:
            if module[:1] == ["shimgen"]:
                found.add(module[1] if len(module) > 1 else "__init__")
    return found


def test_every_import_follows_the_pipeline() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        stage = stage_of(path)
        if stage == "structs":  # shipped from structs/: imports only itself
            continue
        imported = imported_stages(path.relative_to(PACKAGE), path.read_text())
        for target in imported - {stage} - ALLOWED[stage]:
            wrong.append(f"{path.relative_to(PACKAGE)} imports shimgen.{target}")
    assert wrong == []


def test_the_check_sees_imports_in_every_form() -> None:
    rel = Path("verify") / "diff.py"
    source = (
        "from ..cli.render import console\n"
        "def f():\n    from .. import write\n"
        "import shimgen.plan\n"
        "from shimgen import api\n"
        "from .emulate import x\n"
    )
    assert imported_stages(rel, source) == {"cli", "write", "plan", "api", "verify"}
