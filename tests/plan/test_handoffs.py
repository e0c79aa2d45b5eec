"""The hvm-start-info and pvh-passthrough handoffs: plans, refusals, the shim in
Unicorn, Xen's own parser, and real boots of hvm64-hello and pvh-hello."""

from __future__ import annotations

from pathlib import Path

import pytest
from shimgen.structs import HVM_START_MAGIC, MAX_GUEST_CMDLINE, E820Type, StartInfoFlags, XenNote
from shimgen.structs import xen_abi as abi

from shimgen.cli import main
from shimgen.errors import ExitCode
from shimgen.read.check import evaluate
from shimgen.read.image import read_image
from shimgen.read.shim_view import shim_meta
from shimgen.verify import xenparser
from shimgen.verify.boot import BootOptions, BootResult, boot
from shimgen.verify.emulate import MODULE_BYTES, StartState, emulate
from shimgen.write.patch import patch_file

CMDLINE = "hvm64 handoff, k=v [ok]"
# Instructions from the entry to the kernel's entry. They change only when the shim
# changes: update them (and the README) on purpose.
HVM_COUNTS = {
    # (mode, xen): instructions with an empty command line
    ("pv", True): 52,  # + 6 per command-line byte copied (at most 1023)
    ("pvh", True): 58,
    ("pvh", False): 53,  # the cpuid search stops at the first unused base
}
PV_CMDLINE_COST = 6
FULL_CMDLINE_COUNT = 6187  # 1023 bytes copied, the loop ends on its count, not a NUL
PASSTHROUGH_COUNTS = {True: 27, False: 21}
MODES = {
    "qemu-pvh": abi.BootMode.PVH_NO_XEN,
    "xen-pvh": abi.BootMode.XEN_PVH,
    "xen-pv": abi.BootMode.XEN_PV,
}


@pytest.fixture(scope="module")
def hvm64(samples_build: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hvm64") / "hvm64-hello.universal"
    patch_file(samples_build / "hvm64-hello", out, handoff="hvm-start-info", entry64="_start")
    return out


@pytest.fixture(scope="module")
def passthrough(samples_build: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("passthrough") / "pvh-hello.patched"
    patch_file(samples_build / "pvh-hello", out, handoff="pvh-passthrough")
    return out


# --- the unpatched kernels ---------------------------------------------------------------


def test_hvm64_hello_boots_nowhere_unpatched(samples_build: Path) -> None:
    image = read_image(samples_build / "hvm64-hello")
    verdicts = evaluate(image)
    assert not verdicts.pv.ok and not verdicts.pvh.ok
    # its one Xen note: the page Xen fills for a PV guest
    assert [n.type for n in image.xen_notes] == [XenNote.HYPERCALL_PAGE]
    assert "_start" in image.symbols and "shimgen_boot_mode" in image.symbols


# --- plans and refusals ----------------------------------------------------------------


def test_hvm_plan_and_notes(hvm64: Path, samples_build: Path) -> None:
    image = read_image(hvm64)
    meta = shim_meta(image)
    assert meta is not None and meta.handoff == "hvm-start-info"
    assert meta.options == {"handoff": "hvm-start-info", "entry": None, "entry64": "_start"}
    original = read_image(samples_build / "hvm64-hello")
    assert meta.original_pv_entry == original.symbols["_start"]
    verdicts = evaluate(image)
    assert verdicts.pv.ok and verdicts.pvh.ok, (verdicts.pv.reasons, verdicts.pvh.reasons)
    assert verdicts.pvh.warnings == []
    assert image.entry == meta.pv_entry == verdicts.pv.details["virt_entry"]
    assert verdicts.pvh.details["phys_entry"] == meta.pvh_entry
    # the kernel's own hypercall page stays the one Xen fills
    assert verdicts.pv.details["virt_hypercall"] == original.symbols["hypercall_page"]


def test_entry64_by_address_is_the_same_patch(samples_build: Path, tmp_path: Path) -> None:
    address = read_image(samples_build / "hvm64-hello").symbols["_start"]
    a, b = tmp_path / "a", tmp_path / "b"
    plan_a = patch_file(samples_build / "hvm64-hello", a, entry64="_start").plan
    plan_b = patch_file(samples_build / "hvm64-hello", b, entry64=hex(address)).plan
    assert plan_a.handoff == plan_b.handoff == "hvm-start-info"  # auto, from --entry64
    assert plan_a.shim.code == plan_b.shim.code


@pytest.mark.parametrize(
    ("sample", "args", "words"),
    [
        ("pvh-hello", ["--handoff", "start-info"], ["CPL 3", "32-bit", "--entry64"]),
        ("pvh-hello", ["--handoff", "hvm-start-info"], ["--entry64"]),
        ("hvm64-hello", ["--handoff", "hvm-start-info"], ["--entry64"]),
        ("hvm64-hello", ["--handoff", "hvm-start-info", "--entry64", "nowhere"], ["nowhere"]),
        ("hvm64-hello", ["--entry64", "_start", "--entry", "_start"], ["--entry64"]),
        ("pv-hello", ["--handoff", "pvh-passthrough"], ["PHYS32_ENTRY"]),
        ("pvh-hello", ["--handoff", "pvh-passthrough", "--entry64", "x"], ["hvm-start-info"]),
        ("pvh-hello", ["--handoff", "pvh-passthrough", "--single-entry"], ["no PV entry"]),
    ],
)
def test_refusals_say_why(
    samples_build: Path, tmp_path: Path, capsys, sample: str, args: list[str], words: list[str]
) -> None:
    out = tmp_path / "out"
    assert main(["patch", str(samples_build / sample), "-o", str(out), *args]) == ExitCode.REFUSED
    error = capsys.readouterr().err
    assert error.count("\n") == 1, error  # one line
    for word in words:
        assert word in error
    assert not out.exists()


def test_pvh_only_kernel_defaults_to_passthrough(samples_build: Path, tmp_path: Path) -> None:
    result = patch_file(samples_build / "pvh-hello", tmp_path / "out")
    assert result.plan.handoff == "pvh-passthrough"
    assert result.plan.pv_entry is None
    assert any("CPL 3" in warning for warning in result.plan.warnings)


# --- pvh-passthrough: the image -----------------------------------------------------------


def test_passthrough_keeps_the_kernel_entry(passthrough: Path, samples_build: Path) -> None:
    before = read_image(samples_build / "pvh-hello")
    after = read_image(passthrough)
    meta = shim_meta(after)
    assert meta is not None and meta.handoff == "pvh-passthrough"
    kernel_entry = evaluate(before).pvh.details["phys_entry"]
    assert meta.original_phys32_entry == kernel_entry
    assert meta.pv_entry == 0 and after.entry == before.entry  # no PV entry; e_entry kept
    assert not any(n.type == XenNote.ENTRY for n in after.xen_notes)
    # exactly one PHYS32_ENTRY left: the input's PT_NOTE is out of the program headers
    phys = [n for n in after.segment_xen_notes if n.type == XenNote.PHYS32_ENTRY]
    assert [n.value for n in phys] == [meta.pvh_entry]
    verdicts = evaluate(after)
    assert verdicts.pvh.ok and verdicts.pvh.warnings == [] and not verdicts.pv.ok


@pytest.mark.parametrize("container", ["pv", "pvh"])
def test_libxenguest_on_patched_images(hvm64: Path, passthrough: Path, container: str) -> None:
    answer = xenparser.parse(hvm64, container)
    assert answer.accepted_by_elf_loader, answer.error
    assert answer.guest_type == ("xen-3.0-x86_64" if container == "pv" else "hvm-3.0-x86_32")
    answer = xenparser.parse(passthrough, container)
    assert answer.accepted_by_elf_loader == (container == "pvh"), answer.error


@pytest.mark.parametrize("name", ["hvm64", "passthrough"])
def test_check_strict(hvm64: Path, passthrough: Path, name: str, capsys) -> None:
    image = {"hvm64": hvm64, "passthrough": passthrough}[name]
    mode = "both" if name == "hvm64" else "pvh"
    assert main(["check", "--strict", "--mode", mode, str(image)]) == 0, capsys.readouterr()


# --- hvm-start-info in Unicorn --------------------------------------------------------------


@pytest.mark.parametrize("pfn", [False, True], ids=["mod-vaddr", "mod-pfn"])
def test_hvm_pv_path_builds_the_struct(hvm64: Path, pfn: bool) -> None:
    flags = int(StartInfoFlags.MOD_START_PFN) if pfn else 0
    result = emulate(
        read_image(hvm64), StartState(mode="pv", cmdline=CMDLINE.encode(), flags=flags)
    )
    assert result.reached_kernel, result.outcome
    regs, info, loader = result.registers, result.hvm_start_info, result.loader
    assert regs["rdi"] == abi.BootMode.XEN_PV
    assert regs["rsi"] == regs["rbx"] and regs["rdx"] == loader["start_info"]
    assert regs["rsp"] == loader["rsp"]  # Xen's stack, untouched
    assert info["magic"] == HVM_START_MAGIC and info["version"] == 1
    assert info["flags"] == flags
    assert info["cmdline"] == CMDLINE
    # the module as a pseudo-physical address, whichever way start_info gave it
    assert info["modules"] == [
        {"paddr": loader["module"], "size": len(MODULE_BYTES), "cmdline_paddr": 0, "reserved": 0}
    ]
    assert info["memmap"] == [
        {
            "addr": 0,
            "size": loader["nr_pages"] << abi.PAGE_SHIFT,
            "type": E820Type.RAM,
            "reserved": 0,
        }
    ]
    assert info["rsdp_paddr"] == 0
    assert result.instructions == HVM_COUNTS[("pv", True)] + PV_CMDLINE_COST * len(CMDLINE)


@pytest.mark.parametrize("xen", [True, False], ids=["xen", "no-xen"])
@pytest.mark.parametrize("version", [1, 0], ids=["v1", "v0"])
def test_hvm_pvh_path_passes_the_loaders_struct(hvm64: Path, xen: bool, version: int) -> None:
    state = StartState(mode="pvh", xen=xen, hvm_version=version, cmdline=b"pvh")
    result = emulate(read_image(hvm64), state)
    assert result.reached_kernel, result.outcome
    regs, loader = result.registers, result.loader
    assert regs["rdi"] == (abi.BootMode.XEN_PVH if xen else abi.BootMode.PVH_NO_XEN)
    assert regs["rsi"] == regs["rbx"] == regs["rdx"] == loader["hvm_start_info"]
    assert regs["rsp"] % 16 == 0
    info = result.hvm_start_info
    assert info["version"] == version and info["cmdline"] == "pvh"
    assert info["modules"][0]["paddr"] == loader["module"]
    assert len(info["memmap"]) == (3 if version else 0)
    assert result.hypercalls == []  # the kernel sets up its own hypercall page
    assert result.instructions == HVM_COUNTS[("pvh", xen)]
    print(f"hvm-start-info pvh xen={xen} v{version}: {result.instructions} instructions")


@pytest.mark.parametrize("length", [MAX_GUEST_CMDLINE - 1, MAX_GUEST_CMDLINE])
def test_hvm_pv_cmdline_bounded(hvm64: Path, length: int) -> None:
    # Xen's cmd_line may be full, with no NUL: the copy stops at 1023 bytes + NUL
    cmdline = bytes(0x61 + i % 26 for i in range(length))
    result = emulate(read_image(hvm64), StartState(mode="pv", cmdline=cmdline))
    kept = MAX_GUEST_CMDLINE - 1
    assert result.hvm_start_info["cmdline"] == cmdline[:kept].decode()
    assert result.instructions == FULL_CMDLINE_COUNT


@pytest.mark.parametrize("mode", ["pv", "pvh"])
def test_hvm_bad_magic_never_reaches_kernel(hvm64: Path, mode: str) -> None:
    result = emulate(read_image(hvm64), StartState(mode=mode, bad_magic=True))
    assert result.outcome == "halted" and b"bad boot magic" in result.debug_output


# --- pvh-passthrough in Unicorn ---------------------------------------------------------------


@pytest.mark.parametrize("xen", [True, False], ids=["xen", "no-xen"])
def test_passthrough_records_mode_and_keeps_registers(passthrough: Path, xen: bool) -> None:
    image = read_image(passthrough)
    result = emulate(image, StartState(mode="pvh", xen=xen))
    assert result.reached_kernel, result.outcome
    assert result.registers["rip"] == shim_meta(image).original_phys32_entry
    assert result.registers["cr0"] & abi.CR0_PG == 0  # still 32-bit, paging off
    for name, value in result.loader["registers"].items():
        assert result.registers[name] == value, name
    assert result.boot_mode_var == (abi.BootMode.XEN_PVH if xen else abi.BootMode.PVH_NO_XEN)
    assert result.instructions == PASSTHROUGH_COUNTS[xen]


def test_passthrough_bad_magic_and_no_pv(passthrough: Path, capsys) -> None:
    result = emulate(read_image(passthrough), StartState(mode="pvh", bad_magic=True))
    assert result.outcome == "halted" and b"bad boot magic" in result.debug_output
    assert main(["emulate", str(passthrough), "--mode", "pv"]) == ExitCode.REFUSED
    assert "32-bit" in capsys.readouterr().err


def test_emulate_cli_shows_hvm_start_info(hvm64: Path, capsys) -> None:
    import json

    assert main(["emulate", str(hvm64), "--mode", "pv", "--cmdline", "a b", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["handoff"] == "hvm-start-info"
    assert data["hvm_start_info"]["cmdline"] == "a b"
    assert main(["emulate", str(hvm64), "--mode", "pvh"]) == 0
    assert "hvm_start_info" in capsys.readouterr().out


# --- real boots ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hvm64_boots(hvm64: Path, boot_module) -> dict[str, BootResult]:
    """hvm64-hello booted by each loader with a module, once for the tests below."""
    module, _fnv = boot_module
    options = {
        loader: BootOptions(loader=loader, cmdline=CMDLINE, timeout=60, initrd=module)
        for loader in MODES
    }
    return {loader: boot(hvm64, option) for loader, option in options.items()}


@pytest.mark.slow
@pytest.mark.qemu
@pytest.mark.xen
@pytest.mark.parametrize("loader", list(MODES))
def test_hvm64_boots(hvm64_boots: dict[str, BootResult], loader: str) -> None:
    result = hvm64_boots[loader]
    report = result.report
    assert result.ok, (result.reason, result.guest_lines[-10:], result.xen_errors)
    mode = MODES[loader]
    assert int(report["mode"]) == int(report["boot_mode_var"]) == mode
    assert int(report["entry_rdi"], 16) == mode
    assert report["entry_rsi"] == report["entry_rbx"]
    assert int(report["magic"], 16) == HVM_START_MAGIC
    assert report["cmdline"] == CMDLINE
    assert report["result"] == "ok" and "error" not in report
    # dom0 (as PV and PVH) prints with console_io; QEMU has only the debug port
    assert report["console"] == ("debugcon" if loader == "qemu-pvh" else "console_io")


@pytest.mark.slow
@pytest.mark.qemu
@pytest.mark.xen
def test_hvm64_reports_agree(hvm64_boots: dict[str, BootResult], boot_module) -> None:
    """The same boot information whichever loader booted it."""
    reports = {loader: result.report for loader, result in hvm64_boots.items()}
    assert {r.get("cmdline") for r in reports.values()} == {CMDLINE}
    # one module, whole: the PV path builds module 0 from start_info's mod_start
    assert {r.get("nr_modules") for r in reports.values()} == {"1"}
    assert {int(r["module_fnv"], 16) for r in reports.values()} == {boot_module[1]}
    assert {int(r["module0_size"]) for r in reports.values()} == {boot_module[0].stat().st_size}
    # Xen gives dom0 256 MiB in both modes; QEMU has 128 MiB, a little of it not RAM
    xen_pv, xen_pvh = (int(reports[name]["ram_bytes"]) for name in ("xen-pv", "xen-pvh"))
    assert xen_pv == 256 << 20  # one range, nr_pages long: what the PV path builds
    assert abs(xen_pv - xen_pvh) <= xen_pv // 100
    assert (120 << 20) < int(reports["qemu-pvh"]["ram_bytes"]) <= (128 << 20)
    assert reports["xen-pv"]["memmap_source"] == "hvm_start_info"


@pytest.mark.slow
@pytest.mark.parametrize(
    "loader",
    [
        pytest.param("qemu-pvh", marks=pytest.mark.qemu),
        pytest.param("xen-pvh", marks=pytest.mark.xen),
    ],
)
def test_passthrough_boots_with_mode_record(passthrough: Path, loader: str) -> None:
    result = boot(passthrough, BootOptions(loader=loader, cmdline="passthrough", timeout=60))
    report = result.report
    assert result.ok, (result.reason, result.guest_lines[-10:], result.xen_errors)
    mode = MODES[loader]
    assert int(report["mode"]) == int(report["boot_mode_var"]) == mode
    assert report["cmdline"] == "passthrough" and report["result"] == "ok"


# --- hvm-start-info on an image linked away from its load address ---------------------------


@pytest.mark.parametrize("case", ["pv64", "no_notes"])
def test_hvm_pseudo_physical_addresses_on_a_high_half_image(case: str, tmp_path: Path) -> None:
    """p_vaddr = p_paddr + VIRT_BASE: the struct holds pseudo-physical addresses
    (virtual - VIRT_BASE = p_paddr), with the image's VIRT_BASE note or, without
    one, the VIRT_BASE/PADDR_OFFSET notes the patch adds (Linux's convention)."""
    import imagegen

    source = imagegen.build(case, tmp_path)
    entry = hex(imagegen.PV64_VIRT_BASE + imagegen.PHYS_BASE)  # a hlt loop
    out = tmp_path / "out"
    plan = patch_file(source, out, entry64=entry).plan
    added = {n.label for n in plan.notes if n.action == "added"}
    assert ({"VIRT_BASE", "PADDR_OFFSET"} <= added) == (case == "no_notes")
    image = read_image(out)
    details = evaluate(image).pv.details
    assert details["virt_base"] == imagegen.PV64_VIRT_BASE and details["elf_paddr_offset"] == 0
    result = emulate(image, StartState(mode="pv", cmdline=b"high"))
    assert result.reached_kernel, result.outcome
    info, loader = result.hvm_start_info, result.loader
    assert loader["module_virt"] - loader["module"] == imagegen.PV64_VIRT_BASE
    assert info["modules"][0]["paddr"] == loader["module"]
    assert result.registers["rsi"] == plan.phys("hvm_info") < imagegen.PV64_VIRT_BASE
    for pointer in ("cmdline_paddr", "modlist_paddr", "memmap_paddr"):  # the shim's page
        assert 0 <= info[pointer] - plan.phys("hvm_info") < abi.PAGE_SIZE, pointer
    assert info["cmdline"] == "high"
    for container in ("pv", "pvh"):
        assert xenparser.parse(out, container).accepted_by_elf_loader
