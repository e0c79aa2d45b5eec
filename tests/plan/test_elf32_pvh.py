"""ELF32 EM_386 PVH kernels (XTF's hvm32 tests, Mini-OS's PVH build) through
`patch --handoff pvh-passthrough`, and the third-party build helper they use.

The patched XTF tests boot for real as a Xen PVH dom0 and must print XTF's own
verdict, `Test result: SUCCESS`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import thirdparty
from shimgen.structs import XenNote
from shimgen.structs.elf import Machine

from shimgen.errors import Refused
from shimgen.read.check import evaluate
from shimgen.read.image import read_image
from shimgen.verify import xenparser
from shimgen.verify.boot import BootOptions, Verdict, boot
from shimgen.write.patch import patch_file, shim_meta

XTF_SUCCESS = "Test result: SUCCESS"
XTF_PVH_ENVIRONMENTS = ("hvm32", "hvm32pse")
BOOT_SECONDS = 180  # Xen in QEMU TCG takes about 1.5 s idle; the machine is shared


@pytest.fixture(scope="module", params=XTF_PVH_ENVIRONMENTS)
def xtf_pvh(request: pytest.FixtureRequest, xtf: Callable[[str, str], Path]) -> Path:
    return xtf("example", request.param)


@pytest.fixture(scope="module")
def patched_xtf(xtf_pvh: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("xtf") / f"{xtf_pvh.name}.universal"
    patch_file(xtf_pvh, out, handoff="pvh-passthrough")
    return out


def test_xtf_pvh_kernels_are_elf32_i386(xtf_pvh: Path) -> None:
    image = read_image(xtf_pvh)
    assert (image.elf_class, image.machine) == (32, Machine.X86)
    assert evaluate(image).pvh.ok


def test_patched_xtf_is_elf64_keeping_its_machine(xtf_pvh: Path, patched_xtf: Path) -> None:
    """ELF64 for linux-loader; EM_386 kept, so no PV loader takes 32-bit code as a
    64-bit guest."""
    before, after = read_image(xtf_pvh), read_image(patched_xtf)
    assert (after.elf_class, after.machine) == (64, Machine.X86)
    meta = shim_meta(after)
    assert meta is not None and meta.handoff == "pvh-passthrough"
    assert meta.options["input"] == "elf32"
    own = next(n.value for n in before.xen_notes if n.type == XenNote.PHYS32_ENTRY)
    assert meta.original_phys32_entry == own  # the shim hands over to the kernel's entry
    verdicts = evaluate(after)
    assert verdicts.pvh.ok and not verdicts.pv.ok, verdicts.pv.reasons
    assert not any("ELF32" in w for w in verdicts.pvh.warnings), verdicts.pvh.warnings


def test_auto_picks_passthrough_for_an_elf32_pvh_kernel(xtf_pvh: Path, tmp_path: Path) -> None:
    result = patch_file(xtf_pvh, tmp_path / "out")
    assert result.plan.handoff == "pvh-passthrough"


@pytest.mark.parametrize("handoff", ["start-info", "hvm-start-info"])
def test_other_handoffs_refuse_i386_code(xtf_pvh: Path, tmp_path: Path, handoff: str) -> None:
    with pytest.raises(Refused, match=r"EM_386.*--handoff pvh-passthrough"):
        patch_file(xtf_pvh, tmp_path / "out", handoff=handoff, entry64=None)
    assert not (tmp_path / "out").exists()


def test_libxenguest_takes_patched_xtf_as_pvh(patched_xtf: Path) -> None:
    if not xenparser.available():
        pytest.skip("libxenguest helper unavailable (gcc, libxen-dev)")
    answer = xenparser.parse(patched_xtf, "pvh")
    assert answer.accepted_by_elf_loader, answer.messages
    assert answer.guest_type == "hvm-3.0-x86_32"
    assert answer.parms["phys_entry"] == shim_meta(read_image(patched_xtf)).pvh_entry


@pytest.mark.xen
def test_patched_xtf_passes_as_xen_pvh_dom0(patched_xtf: Path) -> None:
    result = boot(
        patched_xtf,
        BootOptions(loader="xen-pvh", expect=XTF_SUCCESS, timeout=BOOT_SECONDS),
    )
    output = "\n".join(result.guest_lines + result.xen_errors)
    assert result.expect_matched, output
    assert result.verdict is not Verdict.MISMATCH, output
    assert "Environment: HVM 32bit" in output


# --- the helper ------------------------------------------------------------------------


def test_missing_archives_skip_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHIMGEN_THIRDPARTY", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(thirdparty.Unavailable, match=r"xtf-.*not found") as missing:
        thirdparty.xtf_group("example")
    with pytest.raises(pytest.skip.Exception, match="SHIMGEN_THIRDPARTY"):
        thirdparty.require(missing.value)


def test_missing_archives_fail_in_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIMGEN_THIRDPARTY", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(thirdparty.Unavailable) as missing:
        thirdparty.archive("mini-os")
    with pytest.raises(pytest.fail.Exception, match="CI must run"):
        thirdparty.require(missing.value)


def test_worktrees_find_the_archives_of_their_main_checkout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SHIMGEN_THIRDPARTY", raising=False)
    if not (thirdparty.REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    main = thirdparty._main_checkout()
    assert (main / ".git").is_dir(), main
    expected = main.parent / "shared" / "thirdparty"
    if not expected.is_dir() and not (thirdparty.REPO_ROOT.parent / "shared").is_dir():
        pytest.skip("no ../shared/thirdparty next to this checkout")
    assert thirdparty.archive_dir().is_dir()


def test_unknown_xtf_group_is_an_error(xtf: Callable[[str, str], Path]) -> None:
    with pytest.raises(ValueError, match="no test group"):
        thirdparty.xtf_group("no-such-group")
    with pytest.raises(ValueError, match="no hvm99 build"):
        xtf("example", "hvm99")


def test_mini_os_pvh_build_is_an_elf32_i386_pvh_kernel(mini_os: Callable[[str], Path]) -> None:
    image = read_image(mini_os("pvh"))
    assert (image.elf_class, image.machine) == (32, Machine.X86)
    assert evaluate(image).pvh.ok


@pytest.mark.xen
def test_patched_mini_os_pvh_runs_as_the_original_does(
    mini_os: Callable[[str], Path], tmp_path: Path
) -> None:
    """Mini-OS's PVH build as a Xen PVH dom0, unpatched and patched: it expects to be
    a domU and stops at its grant table either way, but through the shim it gets
    exactly as far and prints the same, but for the address Xen chose for
    start_info (the patched image is larger)."""
    original = mini_os("pvh")
    patched = tmp_path / "mini-os.universal"
    assert patch_file(original, patched).plan.handoff == "pvh-passthrough"
    outputs = []
    for image in (original, patched):
        result = boot(image, BootOptions(loader="xen-pvh", timeout=BOOT_SECONDS))
        lines = [line for line in result.guest_lines if "start_info:" not in line]
        assert "Xen Minimal OS (hvm)!" in lines, result.to_json()
        outputs.append(lines)
    assert outputs[0] == outputs[1]


@pytest.mark.qemu
def test_patched_elf32_sample_boots_under_qemu_pvh(samples_build: Path, tmp_path: Path) -> None:
    """QEMU's PVH loader takes the ELF64 container with e_machine EM_386."""
    out = tmp_path / "pvh-hello.universal"
    patch_file(samples_build / "pvh-hello.elf32", out)
    assert read_image(out).machine == Machine.X86
    result = boot(out, BootOptions(loader="qemu-pvh", timeout=BOOT_SECONDS))
    assert result.verdict is Verdict.OK, result.to_json()
    assert result.report["mode"] == "3"  # the kernel's own view: PVH without Xen
    assert result.report["boot_mode_var"] == "3"  # written by the shim on the way
