"""The xl config generator and `shimgen xlcfg`: what `boot --loader xl-*` hands to xl.

Every domU boot in tests/verify/test_xl_boot.py also runs these configs through xl itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from shimgen.cli import main
from shimgen.errors import ExitCode, UsageError
from shimgen.verify.xlcfg import XlConfig, render, types_for
from shimgen.write.patch import patch_file


def _settings(text: str) -> dict[str, str]:
    pairs = (line.split(" = ", 1) for line in text.splitlines())
    return dict(pairs)


def test_render_writes_one_setting_a_line() -> None:
    text = render(
        XlConfig(kernel=Path("/k"), type="pv", memory=48, cmdline="a b", ramdisk=Path("/r"))
    )
    assert text.endswith("\n")
    assert _settings(text) == {
        "name": '"shimgen"',
        "type": '"pv"',
        "kernel": '"/k"',
        "memory": "48",
        "vcpus": "1",
        "cmdline": '"a b"',
        "ramdisk": '"/r"',
    }


def test_render_pvshim_and_preserve() -> None:
    settings = _settings(
        render(XlConfig(kernel=Path("/k"), type="pvh", pvshim=True, lifecycle="preserve"))
    )
    assert settings["type"] == '"pvh"' and settings["pvshim"] == "1"
    for key in ("on_poweroff", "on_reboot", "on_crash"):
        assert settings[key] == '"preserve"'
    assert "cmdline" not in settings and "ramdisk" not in settings


def test_maxmem_follows_memory() -> None:
    settings = _settings(render(XlConfig(kernel=Path("/k"), memory=16, maxmem=64)))
    assert (settings["memory"], settings["maxmem"]) == ("16", "64")


def test_strings_escape_quotes_and_backslashes() -> None:
    settings = _settings(render(XlConfig(kernel=Path("/k"), cmdline='say "hi" \\o/')))
    assert settings["cmdline"] == '"say \\"hi\\" \\\\o/"'


@pytest.mark.parametrize(
    "kwargs",
    [
        {"type": "hvm"},
        {"type": "pv", "pvshim": True},
        {"memory": 0},
        {"memory": 64, "maxmem": 32},
    ],
)
def test_bad_configs_are_refused(kwargs) -> None:
    with pytest.raises(UsageError):
        XlConfig(kernel=Path("/k"), **kwargs)


def test_control_characters_are_refused() -> None:
    with pytest.raises(UsageError, match="control characters"):
        render(XlConfig(kernel=Path("/k"), cmdline="a\nb"))


def test_types_follow_the_verdicts() -> None:
    assert types_for(pv_ok=True, pvh_ok=True) == ["pv", "pvh", "pvh+pvshim"]
    assert types_for(pv_ok=False, pvh_ok=True) == ["pvh"]
    assert types_for(pv_ok=False, pvh_ok=False) == []


# --- the command ------------------------------------------------------------------


def test_xlcfg_picks_pvh_for_a_universal_image(samples_build: Path, tmp_path: Path, capsys):
    universal = tmp_path / "pv-hello.universal"
    patch_file(samples_build / "pv-hello", universal)
    status = main(["xlcfg", str(universal), "--cmdline", "x y", "--memory", "64"])
    settings = _settings(capsys.readouterr().out)
    assert status == ExitCode.OK
    assert settings["type"] == '"pvh"'
    assert settings["kernel"] == f'"{universal.resolve()}"'
    assert settings["memory"] == "64" and settings["cmdline"] == '"x y"'


def test_xlcfg_picks_pv_for_a_pv_only_image(samples_build: Path, capsys) -> None:
    assert main(["xlcfg", str(samples_build / "pv-hello")]) == ExitCode.OK
    assert _settings(capsys.readouterr().out)["type"] == '"pv"'


def test_xlcfg_refuses_a_type_the_image_cannot_run(samples_build: Path, capsys) -> None:
    status = main(["xlcfg", str(samples_build / "pv-hello"), "--type", "pvh"])
    captured = capsys.readouterr()
    assert status == ExitCode.FAILED
    assert captured.out == ""
    assert "PHYS32_ENTRY" in captured.err and captured.err.startswith("shimgen: error:")


def test_xlcfg_pvshim_needs_a_pv_kernel(samples_build: Path, capsys) -> None:
    assert main(["xlcfg", str(samples_build / "pv-hello"), "--pvshim"]) == ExitCode.OK
    settings = _settings(capsys.readouterr().out)
    assert settings["pvshim"] == "1" and settings["type"] == '"pvh"'
    assert main(["xlcfg", str(samples_build / "pvh-hello"), "--pvshim"]) == ExitCode.FAILED


def test_inspect_names_the_pvshim_config(samples_build: Path, capsys) -> None:
    assert main(["inspect", str(samples_build / "pv-hello"), "--no-disasm"]) == ExitCode.OK
    line = next(x for x in capsys.readouterr().out.splitlines() if "xl configs" in x)
    assert 'type = "pv"' in line and "pvshim = 1" in line
