"""Real domU boots: `xl create` in a Debian Linux dom0 of Xen 4.17 inside QEMU.

One rig run (one QEMU, one dom0) boots the whole matrix, `xl create` after `xl
create`: every patched sample as xl-pv and/or xl-pvh as its handoff claims, with a
module and a command line; an unpatched PV sample under Xen's pv-shim; an image xl
refuses; a guest that hangs; a guest ended by --exit-on.

A release Xen refuses console_io to a domU: the samples print through their console
ring (and, under PVH, port 0xe9 too), and every patched sample's report is checked
against what xenstore holds for it (store and console frames and event channels).
The unpatched PV sample under pv-shim is judged by its shutdown reason.
samples/pv-classic (a PV kernel using the PV ABI as PV unikernels do) runs every
step as xl-pv (patched, as a xen-pv dom0: test_samples_boot.py); patched as xl-pvh
it passes the steps the shim's PV ABI layer answers so far (tests/pvclassic.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pvclassic
import pytest
from shimgen.structs import xen_abi as abi

from shimgen.cli import main
from shimgen.errors import ExitCode
from shimgen.verify.boot import End, Verdict
from shimgen.verify.xlboot import DomuJob, boot_domus, domain_name
from shimgen.write.patch import patch_file

pytestmark = [pytest.mark.xen, pytest.mark.slow]

# A quote and a backslash travel through the xl config's string escapes.
CMDLINE = 'domU "quoted" k=v \\ [ok]'
HANG_LIMIT = 5.0
EXIT_ON_LIMIT = 120.0


@pytest.fixture(scope="module")
def images(samples_build: Path, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("xl")
    made = {
        "start-info": (samples_build / "pv-hello", {}),
        "highhalf": (samples_build / "pv-highhalf", {}),
        "single-entry": (samples_build / "pv-hello", {"single_entry": True}),
        "hvm-start-info": (
            samples_build / "hvm64-hello",
            {"handoff": "hvm-start-info", "entry64": "_start"},
        ),
        "pvh-passthrough": (samples_build / "pvh-hello", {"handoff": "pvh-passthrough"}),
    }
    out = {}
    for name, (source, options) in made.items():
        out[name] = folder / name
        patch_file(source, out[name], **options)
    out["unpatched-pv"] = samples_build / "pv-hello"
    out["pv-classic"] = samples_build / "pv-classic"
    out["pv-classic-universal"] = folder / "pv-classic-universal"
    patch_file(out["pv-classic"], out["pv-classic-universal"])
    out["unpatched-pvh"] = samples_build / "pvh-hello"
    return out


# (case, image, loader): each patched sample as each xl type its handoff claims
BOOTS = [
    ("start-info", "xl-pv"),
    ("start-info", "xl-pvh"),
    ("highhalf", "xl-pvh"),
    ("single-entry", "xl-pv"),
    ("single-entry", "xl-pvh"),
    ("hvm-start-info", "xl-pv"),
    ("hvm-start-info", "xl-pvh"),
    ("pvh-passthrough", "xl-pvh"),
    ("unpatched-pv", "xl-pvshim"),
]
# pv-classic's boots, after the matrix's other jobs (about 3 s and 6 s of the run)
PV_CLASSIC = [("pv-classic", "xl-pv"), ("pv-classic-universal", "xl-pvh")]


@pytest.fixture(scope="module")
def matrix(images, boot_module, tmp_path_factory):
    module, _ = boot_module
    jobs = [
        DomuJob(images[name], loader, cmdline=CMDLINE, initrd=module, timeout=60)
        for name, loader in BOOTS
    ]
    jobs += [
        DomuJob(images["unpatched-pvh"], "xl-pv", timeout=60),  # xl refuses it
        DomuJob(images["start-info"], "xl-pvh", cmdline="sample=hang", timeout=HANG_LIMIT),
        # it would hang until its time limit; --exit-on ends it when it says so
        DomuJob(
            images["start-info"],
            "xl-pvh",
            cmdline="sample=hang",
            exit_on=r"action=han[g]",
            timeout=EXIT_ON_LIMIT,
        ),
    ]
    jobs += [DomuJob(images[name], loader, timeout=60) for name, loader in PV_CLASSIC]
    log = tmp_path_factory.mktemp("xl-log") / "serial.log"
    results = boot_domus(jobs, log=log)
    by_case = {(name, loader): r for (name, loader), r in zip(BOOTS, results, strict=False)}
    extras = len(BOOTS) + 3
    by_case["refused"], by_case["hang"], by_case["exit-on"] = results[len(BOOTS) : extras]
    by_case |= dict(zip(PV_CLASSIC, results[extras:], strict=True))
    return by_case, log


@pytest.mark.parametrize(("name", "loader"), BOOTS)
def test_sample_boots_as_a_domu(matrix, name: str, loader: str) -> None:
    results, log = matrix
    result = results[(name, loader)]
    assert result.ok, (result.reason, result.guest_lines[-5:], result.xl_messages, str(log))
    assert result.shutdown_reason == "poweroff", result.xl_messages
    assert result.domain_memory_mib == 32, result.xl_messages
    # Xen spent at least the guest's memory on it
    assert result.host_memory_mib is not None and result.host_memory_mib >= 32, result.xl_messages
    # libxl gave the domain its rings, whatever the guest does with them
    for key in ("store/ring-ref", "store/port", "console/ring-ref", "console/port"):
        assert result.xenstore[key].isdigit(), result.xenstore
    # the rig's stages in order (console lines may still arrive after the end)
    stages = [result.timings[s] for s in ("dom0_up", "toolstack_up", "created", "started", "ended")]
    assert stages == sorted(stages), result.timings


EXPECTED_MODE = {"xl-pv": abi.BootMode.XEN_PV, "xl-pvh": abi.BootMode.XEN_PVH}


@pytest.mark.parametrize(("name", "loader"), [case for case in BOOTS if case[1] in EXPECTED_MODE])
def test_domu_reports_what_xen_gave_it(matrix, images, boot_module, name: str, loader: str) -> None:
    results, _ = matrix
    result = results[(name, loader)]
    report = result.report
    _, module_fnv = boot_module
    assert int(report["mode"]) == EXPECTED_MODE[loader]
    assert report["cmdline"] == CMDLINE
    assert report["result"] == "ok" and "error" not in report
    # every sample reports the frames and ports it found (PV: start_info; PVH: the
    # shim's start_info or HVM params), and they are what libxl wrote in xenstore
    assert int(report["store_mfn"], 16) == int(result.xenstore["store/ring-ref"])
    assert int(report["store_evtchn"]) == int(result.xenstore["store/port"])
    assert int(report["console_mfn"], 16) == int(result.xenstore["console/ring-ref"])
    assert int(report["console_evtchn"]) == int(result.xenstore["console/port"])
    # its report went through the console ring (PVH: also port 0xe9), and it read its
    # own name over the xenstore ring (samples/lib/domu.h)
    assert report["console"] == ("ring" if loader == "xl-pv" else "ring+debugcon")
    assert int(report["store_ring"], 16) and int(report["console_ring"], 16)
    number = BOOTS.index((name, loader)) + 1  # the rig's job number
    assert report["xenstore_name"] == domain_name(images[name], number)
    assert int(report["module_fnv"], 16) == module_fnv  # xl's ramdisk arrived whole


def test_pv_classic_runs_every_step_as_an_xl_pv_domu(matrix, images) -> None:
    results, log = matrix
    result = results[("pv-classic", "xl-pv")]
    assert result.ok, (result.reason, result.guest_lines[-5:], result.xl_messages, str(log))
    assert result.shutdown_reason == "poweroff" and result.report["result"] == "ok"
    assert result.report["console"] == "ring"  # found through the M2P, no port 0xe9 as PV
    pvclassic.assert_pv_run(result.guest_lines, images["pv-classic"], domu=True)


def test_pv_classic_runs_every_step_as_an_xl_pvh_domu_too(matrix, images) -> None:
    """The same PV kernel patched, under real Xen as PVH: the shim's PV ABI layer
    answers every call it makes (traps, callbacks, page tables, events, the timer,
    its console and xenstore rings), each trap frame is the one Xen builds for PV,
    and it powers off as PV does. Its report also goes to port 0xe9."""
    results, log = matrix
    result = results[("pv-classic-universal", "xl-pvh")]
    assert result.ok, (result.reason, result.guest_lines[-5:], result.xl_messages, str(log))
    assert int(result.report["mode"]) == abi.BootMode.XEN_PVH
    assert result.shutdown_reason == "poweroff" and result.report["result"] == "ok"
    assert result.report["console"] == "ring+debugcon"
    pvclassic.assert_pv_run(result.guest_lines, images["pv-classic"], domu=True)


HIGH_RAM_MIB = 5120  # libxl puts what passes its hole (at 0xfc000000) from 4 GiB on


def test_pv_classic_gets_the_ram_above_4_gib_as_pfns_as_an_xl_pvh_domu(images) -> None:
    """A 5 GiB xl PVH domU (its own QEMU, sized to it: about 16 s): the patched PV
    kernel still passes every step, and nr_pages counts the RAM above 4 GiB
    (asm_templates/35_pv_memory.S): more pages than 4 GiB holds, and at most the
    domain's, less the few MiB the shim's layout takes."""
    job = DomuJob(images["pv-classic-universal"], "xl-pvh", memory=HIGH_RAM_MIB, timeout=60)
    [result] = boot_domus([job])
    assert result.ok, (result.reason, result.guest_lines[-5:], result.xl_messages)
    assert result.report["result"] == "ok"
    pvclassic.assert_pv_run(result.guest_lines, images["pv-classic"], domu=True)
    nr_pages = int(result.report["nr_pages"])
    domain_pages = (HIGH_RAM_MIB << 20) // abi.PAGE_SIZE
    assert (1 << 32) // abi.PAGE_SIZE < nr_pages < domain_pages
    assert domain_pages - nr_pages < (32 << 20) // abi.PAGE_SIZE  # mfn_list, M2P, tables


def test_xl_refusal_is_xl_s_own_message(matrix) -> None:
    results, _ = matrix
    refused = results["refused"]
    assert refused.verdict is Verdict.XEN_ERROR and refused.end is End.XL_REFUSED
    assert "no loader found" in refused.reason
    assert any("libxl: error" in line for line in refused.xl_messages)


def test_hanging_guest_ends_at_its_timeout_with_its_output(matrix) -> None:
    results, _ = matrix
    hang = results["hang"]
    assert hang.verdict is Verdict.TIMEOUT and hang.end is End.TIMEOUT
    assert hang.report.get("action") == "hang"  # what it printed before it hung
    ran = hang.timings["ended"] - hang.timings["started"]
    assert ran >= HANG_LIMIT


def test_exit_on_ends_the_guest_as_soon_as_it_matches(matrix) -> None:
    results, _ = matrix
    result = results["exit-on"]
    assert result.verdict is Verdict.OK and result.end is End.EXIT_ON
    assert result.report["action"] == "hang"
    assert result.timings["ended"] - result.timings["created"] < EXIT_ON_LIMIT


# --- the command line: errors ---------------------------------------------------------


def test_boot_cli_xl_refusal_exits_1(images, capsys) -> None:
    status = main(["boot", str(images["unpatched-pvh"]), "--loader", "xl-pv", "--json"])
    out = capsys.readouterr().out
    assert status == ExitCode.FAILED
    assert '"verdict": "xen-error"' in out and "no loader found" in out


@pytest.mark.parametrize("missing", ["qemu", "package"])
def test_boot_cli_rig_cannot_start_exits_4(images, tmp_path, monkeypatch, capsys, missing):
    if missing == "qemu":
        monkeypatch.setenv("PATH", str(tmp_path))  # no qemu-system-x86_64 there
        expected = "qemu-system-x86"
    else:
        # an empty cache and no apt-get: the rig's packages cannot be fetched
        monkeypatch.setenv("SHIMGEN_CACHE", str(tmp_path / "cache"))
        monkeypatch.setenv("PATH", os.pathsep.join(_path_without("apt-get", tmp_path)))
        expected = "cache"
    status = main(["boot", str(images["start-info"]), "--loader", "xl-pvh"])
    err = capsys.readouterr().err
    assert status == ExitCode.MISSING_TOOL, err
    assert expected in err and err.startswith("shimgen: error:")


def _path_without(tool: str, scratch: Path) -> list[str]:
    """PATH with every folder holding `tool` replaced by a folder of symlinks to the rest."""
    import shutil

    folders = []
    for folder in os.environ["PATH"].split(os.pathsep):
        if not (Path(folder) / tool).exists():
            folders.append(folder)
            continue
        copy = scratch / f"bin{len(folders)}"
        copy.mkdir()
        for entry in Path(folder).iterdir():
            if entry.name != tool:
                (copy / entry.name).symlink_to(entry)
        folders.append(str(copy))
    assert shutil.which(tool, path=os.pathsep.join(folders)) is None
    return folders
