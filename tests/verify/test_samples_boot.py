"""The sample kernels under the real loaders: QEMU's PVH loader and Xen 4.17 in QEMU.

Each boot runs for real (no mocks): one Xen boot costs about 1.2 s under TCG, a bare
QEMU PVH boot about 0.1 s. Boots shared by several tests are module-scoped fixtures.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pvclassic
import pytest
from shimgen.structs import HVM_START_MAGIC, START_INFO_MAGIC, StartInfoFlags
from shimgen.structs import xen_abi as abi
from shimgen.structs.harness import DEBUG_EXIT_FAIL, DEBUG_EXIT_OK

from shimgen.cli import main
from shimgen.errors import ExitCode
from shimgen.verify.boot import BootOptions, BootResult, End, Verdict, boot
from shimgen.verify.qemu import DOM0_MEM_MIB, QEMU_PVH_MEMORY_MIB
from shimgen.write.patch import patch_file

MIB = 1 << 20
PAGE = 4096
# Commas (QEMU's multiboot module separator), brackets (rich markup) and '=' must
# all come back unchanged.
CMDLINE = "hello, world [x] key=value"
HIGH_HALF = 0xFFFFFFFF80000000
DOM0 = StartInfoFlags.PRIVILEGED | StartInfoFlags.INITDOMAIN


# --- helpers ------------------------------------------------------------------------


def elf_entry(path: Path) -> int:
    return struct.unpack_from("<Q", path.read_bytes(), 24)[0]  # ELF64 e_entry


def process_group(pgid: int) -> list[int]:
    """Live processes whose process group is pgid (QEMU leads its own group)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        if int(fields[2]) == pgid:  # after "pid (comm)": state, ppid, pgrp
            members.append(int(stat.parent.name))
    return members


def qemu_pids_with(marker: str) -> list[int]:
    """QEMU processes whose command line contains marker."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"qemu-system" in argv[0] and any(marker.encode() in arg for arg in argv):
            pids.append(int(cmdline.parent.name))
    return pids


def assert_qemu_gone(result: BootResult) -> None:
    assert process_group(result.qemu_pid) == [], "QEMU's process group is still alive"
    cmdline = Path(f"/proc/{result.qemu_pid}/cmdline")
    assert not cmdline.exists() or b"qemu" not in cmdline.read_bytes()


def run(image: Path, **options: object) -> BootResult:
    result = boot(image, BootOptions(**options))  # type: ignore[arg-type]
    assert_qemu_gone(result)
    return result


def describe(result: BootResult) -> str:
    """Context for a failed assertion: the whole result."""
    return json.dumps(result.to_json(), indent=1)


# --- boots shared by several tests --------------------------------------------------


@pytest.fixture(scope="module", params=["pv-hello", "pv-highhalf"])
def pv_under_xen(request: pytest.FixtureRequest, samples_build: Path) -> tuple[Path, BootResult]:
    image = samples_build / request.param
    return image, run(image, loader="xen-pv", cmdline=CMDLINE)


@pytest.fixture(scope="module", params=["q35", "microvm"])
def pvh_under_qemu(samples_build: Path, request: pytest.FixtureRequest) -> BootResult:
    return run(
        samples_build / "pvh-hello", loader="qemu-pvh", machine=request.param, cmdline=CMDLINE
    )


@pytest.fixture(scope="module")
def pvh_under_xen(samples_build: Path) -> BootResult:
    return run(samples_build / "pvh-hello", loader="xen-pvh", cmdline=CMDLINE)


# --- the matrix -----------------------------------------------------------------------


@pytest.mark.xen
def test_pv_sample_boots_as_xen_pv(pv_under_xen: tuple[Path, BootResult]) -> None:
    image, result = pv_under_xen
    report = result.report
    assert result.verdict is Verdict.OK, describe(result)
    assert result.end is End.DEBUG_EXIT and result.debug_exit == DEBUG_EXIT_OK
    assert result.report_complete and report["result"] == "ok"
    assert report["name"] == image.name
    assert (report["mode"], report["mode_name"]) == ("1", "xen-pv")
    assert report["boot_mode_var"] == "0"  # unpatched: nobody wrote shimgen_boot_mode
    assert report["entry_rdi"] == "0x0"  # Xen zeroes every GPR but rsi and rsp
    assert report["xen_version"] == "4.17"
    assert report["cmdline"] == CMDLINE
    assert report["magic"] == START_INFO_MAGIC[64].decode()
    assert int(report["nr_pages"]) == DOM0_MEM_MIB * MIB // PAGE
    assert int(report["flags"], 16) & DOM0 == DOM0
    assert int(report["console_info_size"]) > 0  # dom0 gets console_info, not a ring
    assert report["console"] == "console_io"  # and prints with the console_io hypercall
    assert (report["mod_start"], report["mod_len"]) == ("0x0", "0")  # no initrd given
    assert int(report["nr_pt_frames"]) > 0


@pytest.mark.xen
def test_pv_sample_runs_at_its_link_address(pv_under_xen: tuple[Path, BootResult]) -> None:
    image, result = pv_under_xen
    report = result.report
    virt_base = HIGH_HALF if image.name == "pv-highhalf" else 0
    assert int(report["virt_base"], 16) == virt_base
    assert int(report["kernel_entry"], 16) == elf_entry(image)
    # Xen maps kernel, P2M, start_info, page tables and boot stack in one region.
    start_info = int(report["start_info"], 16)
    assert int(report["entry_rsi"], 16) == start_info
    for key in ("start_info", "pt_base", "mfn_list", "entry_rsp"):
        assert virt_base + MIB <= int(report[key], 16) < virt_base + 64 * MIB, key
    assert int(report["entry_rsp"], 16) % PAGE == 0  # top of the one-page boot stack


@pytest.mark.xen
def test_xen_pv_build_messages(pv_under_xen: tuple[Path, BootResult]) -> None:
    _, result = pv_under_xen
    assert "*** Building a PV Dom0 ***" in result.xen_build
    assert any(line.startswith("Dom0 kernel: 64-bit") for line in result.xen_build)
    assert result.xen_errors == []


@pytest.mark.xen
@pytest.mark.parametrize("patched", [False, True], ids=["unpatched", "patched"])
def test_pv_classic_runs_every_step_as_xen_pv_dom0(
    samples_build: Path, tmp_path: Path, patched: bool
) -> None:
    """samples/pv-classic as a PV dom0: its trap table, callbacks, page-table updates,
    GDT, events and timer all work under Xen, with the shim in front of it too (its
    PV path enters the kernel as Xen would)."""
    image = samples_build / "pv-classic"
    if patched:
        patch_file(image, tmp_path / "pv-classic.universal")
        image = tmp_path / "pv-classic.universal"
    result = run(image, loader="xen-pv", timeout=120)
    assert result.verdict is Verdict.OK, describe(result)
    assert result.end is End.DOM0_POWEROFF  # SCHEDOP_shutdown, no isa-debug-exit
    assert result.report_complete and result.report["result"] == "ok"
    assert int(result.report["mode"]) == abi.BootMode.XEN_PV
    assert result.report["console"] == "console_io"
    pvclassic.assert_pv_run(result.guest_lines, image, domu=False)


@pytest.mark.qemu
def test_pvh_sample_boots_under_qemu(pvh_under_qemu: BootResult) -> None:
    result, report = pvh_under_qemu, pvh_under_qemu.report
    assert result.verdict is Verdict.OK, describe(result)
    assert result.debug_exit == DEBUG_EXIT_OK and report["result"] == "ok"
    assert result.report_complete
    assert (report["mode"], report["mode_name"]) == ("3", "pvh")
    assert report["xen_cpuid_base"] == "0x0"
    assert report["console"] == "debugcon"
    assert int(report["magic"], 16) == HVM_START_MAGIC
    assert report["entry_ebx"] == report["start_info"]
    assert report["version"] == "1"  # QEMU passes the memory map
    assert report["cmdline"] == CMDLINE
    assert report["nr_modules"] == "0"
    assert report["memmap_source"] == "hvm_start_info"
    assert int(report["memmap_entries"]) >= int(report["ram_entries"]) >= 1
    # All of -m but what firmware keeps for itself (a few hundred KiB).
    assert (QEMU_PVH_MEMORY_MIB - 2) * MIB <= int(report["ram_bytes"]) <= QEMU_PVH_MEMORY_MIB * MIB
    assert result.xen_build == [] and result.xen_errors == []


@pytest.mark.xen
def test_pvh_sample_boots_as_xen_pvh_dom0(pvh_under_xen: BootResult) -> None:
    result, report = pvh_under_xen, pvh_under_xen.report
    assert result.verdict is Verdict.OK, describe(result)
    assert result.debug_exit == DEBUG_EXIT_OK and report["result"] == "ok"
    assert (report["mode"], report["mode_name"]) == ("2", "xen-pvh")
    assert report["xen_version"] == "4.17"
    assert int(report["magic"], 16) == HVM_START_MAGIC
    assert report["cmdline"] == CMDLINE
    assert int(report["flags"], 16) & DOM0 == DOM0
    assert report["console"] == "console_io"
    # A PVH dom0 gets hvm_start_info version 0 from Xen 4.17 (its
    # xen/arch/x86/hvm/dom0_build.c): the map comes from XENMEM_memory_map.
    assert report["version"] == "0"
    assert report["memmap_source"] == "XENMEM_memory_map"
    assert abs(int(report["ram_bytes"]) - DOM0_MEM_MIB * MIB) < MIB
    assert "*** Building a PVH Dom0 ***" in result.xen_build
    assert result.xen_errors == []


@pytest.mark.xen
def test_port_e9_output_reaches_the_report_under_xen(samples_build: Path, tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    result = run(samples_build / "pvh-hello", loader="xen-pvh", cmdline="sample=debugcon", log=log)
    assert result.verdict is Verdict.OK, describe(result)
    assert result.report["cmdline"] == "sample=debugcon"
    assert result.report["console"] == "debugcon"
    assert result.report_complete
    # The lines really took the "(d0) " path, and the prefix was removed.
    assert "(d0) shimgen-sample: done" in log.read_text()
    assert all(not line.startswith("(d0)") for line in result.guest_lines)


# --- images in the wrong mode: Xen's own message comes back -------------------------


@pytest.mark.xen
def test_pv_only_image_fails_under_xen_pvh(samples_build: Path) -> None:
    result = run(samples_build / "pv-hello", loader="xen-pvh")
    assert result.verdict is Verdict.XEN_ERROR, describe(result)
    assert result.end is End.XEN_PANIC
    assert "Unable to find XEN_ELFNOTE_PHYS32_ENTRY address" in result.xen_errors
    assert "Could not construct domain 0" in result.xen_errors
    assert "PHYS32_ENTRY" in result.reason
    assert result.guest_lines == []


@pytest.mark.xen
def test_pvh_only_image_fails_under_xen_pv(samples_build: Path) -> None:
    result = run(samples_build / "pvh-hello", loader="xen-pv")
    assert result.verdict is Verdict.XEN_ERROR, describe(result)
    message = "Will only load images built for the generic loader or Linux images"
    assert any(message in line for line in result.xen_errors), describe(result)
    assert message in result.reason
    assert result.guest_lines == []


@pytest.mark.qemu
def test_pv_only_image_fails_under_qemu_pvh(samples_build: Path) -> None:
    result = run(samples_build / "pv-hello", loader="qemu-pvh")
    assert result.verdict is Verdict.LOADER_ERROR, describe(result)
    assert "without PVH ELF Note" in result.reason


# --- how runs end ---------------------------------------------------------------------


@pytest.mark.qemu
@pytest.mark.parametrize(
    ("action", "verdict", "end"),
    [
        ("sample=fail", Verdict.GUEST_FAILED, End.DEBUG_EXIT),
        ("sample=crash", Verdict.CRASHED, End.QEMU_RESET),  # triple fault, -no-reboot
    ],
)
def test_failing_guest_under_qemu(
    samples_build: Path, action: str, verdict: Verdict, end: End
) -> None:
    result = run(samples_build / "pvh-hello", loader="qemu-pvh", cmdline=action)
    assert (result.verdict, result.end) == (verdict, end), describe(result)
    if action == "sample=fail":
        assert result.debug_exit == DEBUG_EXIT_FAIL and result.report["result"] == "fail"


@pytest.mark.xen
def test_crashing_pv_dom0(samples_build: Path) -> None:
    result = run(samples_build / "pv-hello", loader="xen-pv", cmdline="sample=crash")
    assert result.verdict is Verdict.CRASHED, describe(result)
    assert result.end is End.DOM0_CRASH
    assert any("#UD" in line for line in result.xen_errors)
    assert result.report["action"] == "crash" and not result.report_complete


@pytest.mark.xen
def test_dom0_poweroff_ends_the_run(samples_build: Path) -> None:
    # Without isa-debug-exit the sample falls back to SCHEDOP_shutdown; Xen then
    # halts and QEMU would run forever unless the harness reads the log.
    result = run(samples_build / "pv-hello", loader="xen-pv", debug_exit_device=False)
    assert result.verdict is Verdict.OK, describe(result)
    assert result.end is End.DOM0_POWEROFF
    assert result.qemu_status is None  # ended by the harness
    assert result.report_complete and result.report["result"] == "ok"
    assert result.wall_time < 10


@pytest.mark.parametrize(
    ("image", "loader", "timeout"),
    [
        pytest.param("pvh-hello", "qemu-pvh", 1.5, marks=pytest.mark.qemu),
        pytest.param("pv-hello", "xen-pv", 3.0, marks=pytest.mark.xen),
    ],
)
def test_hanging_guest_is_ended_at_the_timeout(
    samples_build: Path, image: str, loader: str, timeout: float
) -> None:
    result = run(samples_build / image, loader=loader, cmdline="sample=hang", timeout=timeout)
    assert result.verdict is Verdict.TIMEOUT, describe(result)
    assert result.end is End.TIMEOUT and result.qemu_status is None
    assert timeout <= result.wall_time < timeout + 5
    assert result.report["action"] == "hang"  # it did run; it just never ended


@pytest.mark.qemu
def test_interrupt_still_ends_qemu(samples_build: Path, tmp_path: Path) -> None:
    marker = f"shimgen-interrupt-{tmp_path.name}"
    seen: list[int] = []

    def interrupt(stage: str) -> None:
        if stage == "guest running":
            seen.extend(qemu_pids_with(marker))
            raise KeyboardInterrupt

    options = BootOptions("qemu-pvh", cmdline=f"sample=hang {marker}", timeout=20)
    with pytest.raises(KeyboardInterrupt):
        boot(samples_build / "pvh-hello", options, on_progress=interrupt)
    assert len(seen) == 1, "the running QEMU was not found, so the check below proves nothing"
    assert qemu_pids_with(marker) == []
    assert process_group(seen[0]) == []


# --- the command line -----------------------------------------------------------------


@pytest.mark.qemu
def test_cli_json(samples_build: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = samples_build / "pvh-hello"
    status = main(["boot", str(image), "--loader", "qemu-pvh", "--cmdline", CMDLINE, "--json"])
    data = json.loads(capsys.readouterr().out)
    assert status == ExitCode.OK
    assert data["verdict"] == "ok" and data["report"]["cmdline"] == CMDLINE
    assert data["debug_exit"] == DEBUG_EXIT_OK and data["machine"] == "q35"


@pytest.mark.qemu
@pytest.mark.parametrize(
    ("expect", "status", "verdict"),
    [("mode=3$", ExitCode.OK, "ok"), ("mode=1$", ExitCode.FAILED, "mismatch")],
)
def test_cli_expect(
    samples_build: Path, capsys: pytest.CaptureFixture[str], expect: str, status: int, verdict: str
) -> None:
    argv = ["boot", str(samples_build / "pvh-hello"), "--loader", "qemu-pvh", "--json"]
    assert main([*argv, "--expect", expect]) == status
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == verdict


@pytest.mark.qemu
def test_cli_human_output_and_log(
    samples_build: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "debugcon.log"
    argv = ["boot", str(samples_build / "pvh-hello"), "--loader", "qemu-pvh", "--log", str(log)]
    assert main([*argv, "--machine", "microvm", "--cmdline", CMDLINE]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "ok" in out and "microvm" in out and CMDLINE in out
    assert "shimgen-sample: done" in log.read_text()


@pytest.mark.qemu
def test_cli_failed_boot_exits_1(samples_build: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["boot", str(samples_build / "pvh-hello"), "--loader", "qemu-pvh"]
    assert main([*argv, "--cmdline", "sample=fail"]) == ExitCode.FAILED
    assert "guest-failed" in capsys.readouterr().out


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_cli_missing_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["boot", str(tmp_path / "nothing"), "--loader", "qemu-pvh"])
    assert status == ExitCode.BAD_INPUT
    assert "no such file" in one_line_error(capsys)


def test_cli_not_elf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "kernel.txt"
    text.write_text("not a kernel\n")
    assert main(["boot", str(text), "--loader", "xen-pv"]) == ExitCode.BAD_INPUT
    assert "not an ELF file" in one_line_error(capsys)


@pytest.mark.parametrize("what", ["missing", "directory"])
def test_cli_bad_initrd(
    samples_build: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str
) -> None:
    initrd = tmp_path / "initrd"
    if what == "directory":
        initrd.mkdir()
    argv = ["boot", str(samples_build / "pvh-hello"), "--loader", "qemu-pvh"]
    assert main([*argv, "--initrd", str(initrd)]) == ExitCode.BAD_INPUT
    line = one_line_error(capsys)
    assert str(initrd) in line and "--initrd" in line


def test_cli_initrd_reaches_the_kernel(
    samples_build: Path, boot_module, capsys: pytest.CaptureFixture[str]
) -> None:
    module, module_fnv = boot_module
    argv = ["boot", str(samples_build / "pvh-hello"), "--loader", "qemu-pvh"]
    assert main([*argv, "--initrd", str(module), "--json"]) == ExitCode.OK
    data = json.loads(capsys.readouterr().out)
    assert data["initrd"] == str(module)
    report = data["report"]
    assert int(report["nr_modules"]) == 1
    assert int(report["module_fnv"], 16) == module_fnv


def test_cli_missing_qemu(
    samples_build: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without QEMU
    status = main(["boot", str(samples_build / "pvh-hello"), "--loader", "qemu-pvh"])
    assert status == ExitCode.MISSING_TOOL
    assert "apt-get install qemu-system-x86" in one_line_error(capsys)


def test_cli_missing_xen(
    samples_build: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["boot", str(samples_build / "pv-hello"), "--loader", "xen-pv"]
    assert main([*argv, "--xen", str(tmp_path / "xen.gz")]) == ExitCode.MISSING_TOOL
    assert "not found" in one_line_error(capsys)


@pytest.mark.parametrize(
    "extra",
    [["--loader", "xen-pv", "--machine", "microvm"], ["--loader", "qemu-pvh", "--expect", "("]],
)
def test_cli_usage_errors(samples_build: Path, extra: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["boot", str(samples_build / "pv-hello"), *extra])
    assert exit_info.value.code == ExitCode.USAGE
