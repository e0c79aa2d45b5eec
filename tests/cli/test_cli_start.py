"""What a command costs before it does anything: the parser builds only the command
asked for, and `patch` of a small image imports nothing it does not use (Keystone
when its output is cached, rich for --json, construct, gzip, typing, shutil,
importlib.resources, tempfile).
Checked with `python -X importtime`, which lists every module a run imports."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shimgen import cli

# Modules a warm `patch --json` must not import, with why they would be there.
NOT_IMPORTED = {
    "keystone": "the assembled templates come from the cache",
    "rich": "--json prints no table",
    "importlib.resources": "templates are read from their package folder",
    "tempfile": "the temp file is made by fileio",
    "shimgen.verify": "nothing is verified",
    "construct": "offsets come from the layout engine, the notes are packed from FIELDS",
    "gzip": "the input is not compressed",
    "typing": "annotations only: imported under TYPE_CHECKING",
    "shutil": "the help formatter finds the terminal's width itself",
}


def test_command_map_matches_the_modules() -> None:
    """_COMMAND_MODULES names the commands each module registers: building one
    module's parser from it must give exactly those commands."""
    for module, commands in cli._COMMAND_MODULES.items():
        parser = cli.build_parser([commands[0]])
        (sub,) = [a for a in parser._actions if a.dest == "command"]
        assert sorted(sub.choices) == sorted(commands), module
    everything = cli.build_parser([])
    (sub,) = [a for a in everything._actions if a.dest == "command"]
    assert sorted(sub.choices) == sorted(c for cs in cli._COMMAND_MODULES.values() for c in cs)
    assert cli.build_parser(["no-such-command"])._actions[-1].choices.keys() == sub.choices.keys()


def _imported(*args: str, env: dict[str, str]) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "shimgen", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return set(re.findall(r"^import time:.*\|\s*(\S+)$", done.stderr, re.MULTILINE))


def test_warm_patch_imports_only_what_it_uses(samples_build: Path, tmp_path: Path) -> None:
    env = dict(os.environ, SHIMGEN_CACHE=str(tmp_path / "cache"))
    argv = ("patch", str(samples_build / "pv-hello"), "-o", str(tmp_path / "o"), "--force")
    cold = _imported(*argv, "--json", env=env)
    assert "keystone" in cold  # the first patch assembles: the test sees imports at all
    warm = _imported(*argv, "--json", env=env)
    for module, why in NOT_IMPORTED.items():
        assert not {m for m in warm if m == module or m.startswith(f"{module}.")}, (module, why)


@pytest.mark.parametrize("command", ["layout", "inspect", "emulate", "boot", "diff"])
def test_a_command_does_not_build_the_others(command: str) -> None:
    parser = cli.build_parser([command, "--help"])
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    assert command in sub.choices and "patch" not in sub.choices


@pytest.mark.parametrize("columns", [None, "132", "0", "-5", "wide"])
def test_help_is_as_wide_as_argparse_makes_it(columns: str | None, monkeypatch) -> None:
    """The formatter finds the width without shutil, the width argparse's own finds
    (COLUMNS, else the terminal's, else 80)."""
    import argparse
    import shutil

    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert cli.terminal_columns() == shutil.get_terminal_size().columns
    ours, theirs = cli.HelpFormatter("shimgen"), argparse.HelpFormatter("shimgen")
    assert (ours._width, ours._max_help_position) == (theirs._width, theirs._max_help_position)
    parser = cli.build_parser(["patch"])
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    assert sub.choices["patch"].formatter_class is cli.HelpFormatter
