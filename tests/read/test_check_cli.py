"""`shimgen check` and `shimgen inspect` as users run them."""

from __future__ import annotations

import json
import subprocess
import sys

import imagegen
import pytest

from shimgen.errors import ExitCode


def shimgen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shimgen", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("check-cli")
    return {name: imagegen.build(name, out) for name in ("pv64", "pvh64", "pv_and_pvh", "no_notes")}


@pytest.mark.parametrize(
    ("name", "mode", "status", "text"),
    [
        ("pv64", "pv", ExitCode.OK, "pv: ok (xen-3.0-x86_64"),
        ("pv64", "pvh", ExitCode.FAILED, "pvh: ELF start or entries are out of bounds"),
        ("pvh64", "pvh", ExitCode.OK, "pvh: ok (hvm-3.0-x86_32"),
        ("pvh64", "pv", ExitCode.FAILED, "Will only load images built for the generic loader"),
        ("pv_and_pvh", "both", ExitCode.OK, "pvh: ok"),
        ("no_notes", "both", ExitCode.FAILED, "Not a Xen-ELF image"),
    ],
)
def test_check_status_and_lines(images, name, mode, status, text):
    result = shimgen("check", "--mode", mode, str(images[name]))
    assert result.returncode == status, result.stdout + result.stderr
    assert text in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize(("name", "mode", "ok"), [("pv64", "pv", True), ("pvh64", "pv", False)])
def test_check_asks_libxenguest(images, name, mode, ok):
    result = shimgen("check", "--xen-parser", "--mode", mode, "--json", str(images[name]))
    report = json.loads(result.stdout)
    assert report["libxenguest"][mode]["ok"] is ok
    assert report["ok"] is ok
    assert result.returncode == (ExitCode.OK if ok else ExitCode.FAILED)
    text = shimgen("check", "--xen-parser", "--mode", mode, str(images[name])).stdout
    assert f"{mode}: libxenguest: " + ("ok" if ok else "no: ") in text


def test_inspect_json_states_the_xl_types(images):
    report = json.loads(shimgen("inspect", "--json", str(images["pv_and_pvh"])).stdout)
    assert report["verdicts"]["xl_types"] == ["pv", "pvh"]
    assert report["xen_notes"]["origin"] == "segments"
    names = [note["name"] for note in report["xen_notes"]["segments"]]
    assert "PHYS32_ENTRY" in names and "LOADER" in names


def test_inspect_human_output_names_notes_and_verdicts(images):
    result = shimgen("inspect", str(images["pv64"]))
    assert result.returncode == ExitCode.OK
    for text in (
        "Segments",
        "Xen notes",
        "LOADER",
        "'generic'",
        "Xen PV",
        "bootable",
        'type = "pv"',
    ):
        assert text in result.stdout


def test_gnu_property_merged_with_xen_notes_is_reported(tmp_path):
    """An 8-byte aligned GNU property note after 4-byte padded Xen notes: the
    4-byte walk Xen uses reads the padding as a note header and misparses."""
    path = imagegen.build("gnu_property_after_xen", tmp_path)
    report = json.loads(shimgen("inspect", "--json", str(path)).stdout)
    findings = [(f["severity"], f["where"], f["message"]) for f in report["findings"]]
    assert any("p_align 8" in m for _, _, m in findings), findings
    assert any(s == "error" and w == "PT_NOTE[1]" for s, w, _ in findings), findings
    assert any("mixes Xen notes" in m for _, _, m in findings), findings


@pytest.fixture(scope="module")
def grub_pv32():
    from shimgen.errors import MissingTool
    from shimgen.verify.debcache import unpacked_package

    try:
        return unpacked_package("grub-xen-host") / "usr/lib/grub-xen/grub-i386-xen.bin"
    except MissingTool as missing:
        pytest.skip(str(missing))


def test_pv32_is_refused_by_default_naming_the_capability(grub_pv32):
    """Debian's Xen 4.17 has no 32-bit PV: GRUB's PAE image is refused there."""
    result = shimgen("check", "--mode", "pv", str(grub_pv32))
    assert result.returncode == ExitCode.FAILED, result.stdout
    assert "pv: guest type xen-3.0-x86_32p not supported by xen kernel" in result.stdout
    report = json.loads(shimgen("check", "--mode", "pv", "--json", str(grub_pv32)).stdout)
    assert report["pv"]["details"]["guest_type"] == "xen-3.0-x86_32p"
    assert "xen-3.0-x86_32p" not in report["xen_caps"]


def test_xen_caps_offering_pv32_accepts_it(grub_pv32):
    caps = "xen-3.0-x86_64 xen-3.0-x86_32p hvm-3.0-x86_32"
    result = shimgen("check", "--mode", "pv", "--xen-caps", caps, "--xen-parser", str(grub_pv32))
    assert result.returncode == ExitCode.OK, result.stdout + result.stderr
    assert "pv: ok (xen-3.0-x86_32p" in result.stdout
    assert "libxenguest: ok (xen-3.0-x86_32p)" in result.stdout


def test_xen_caps_without_hvm_refuses_pvh(images):
    result = shimgen("check", "--mode", "pvh", "--xen-caps", "xen-3.0-x86_64", str(images["pvh64"]))
    assert result.returncode == ExitCode.FAILED
    assert "guest type hvm-3.0-x86_32 not supported by xen kernel" in result.stdout


def test_empty_xen_caps_is_a_usage_error(images):
    result = shimgen("check", "--xen-caps", " ", str(images["pv64"]))
    assert result.returncode == ExitCode.USAGE
    assert result.stderr.startswith("shimgen: error: --xen-caps")
