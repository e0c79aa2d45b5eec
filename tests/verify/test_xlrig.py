"""The xl rig's dom0 pieces without booting: the cpio writer, the NEEDED and module
dependency readers, the bzImage unpacker, the init script; and the rig's log parser
and verdicts on real serial logs recorded from a rig run (tests/data/xlrig-*.log)."""

from __future__ import annotations

import lzma
import shutil
import subprocess
from pathlib import Path

import pytest

from shimgen.errors import MissingTool
from shimgen.verify.console import End, QemuRun, Verdict
from shimgen.verify.xlboot import DomuJob, RigParser, _job_result, domain_name, jobs_archive
from shimgen.verify.xlrig import (
    CPIO_ALIGN,
    Cpio,
    init_script,
    module_dependencies,
    needed_libraries,
    vmlinux_from_bzimage,
)

DATA = Path(__file__).parent.parent / "data"


def _busybox() -> Path:
    from shimgen.verify.debcache import unpacked_package

    try:
        return unpacked_package("busybox-static") / "bin" / "busybox"
    except MissingTool as error:
        pytest.skip(str(error))


def test_cpio_lists_what_was_written(tmp_path: Path) -> None:
    archive = Cpio()
    archive.file("a/b/file", b"hello", 0o755)
    archive.symlink("a/link", "b/file")
    archive.char_device("dev/console", 5, 1)
    data = archive.finish()
    assert len(data) % CPIO_ALIGN == 0  # a second archive can follow directly
    listing = subprocess.run(
        [str(_busybox()), "cpio", "-t"], input=data, capture_output=True, check=True
    ).stdout.decode()
    assert listing.split() == ["a", "a/b", "a/b/file", "a/link", "dev", "dev/console"]
    # and it unpacks to the same bytes
    subprocess.run(
        [str(_busybox()), "cpio", "-i", "-d", "a/b/file"],
        input=data,
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    assert (tmp_path / "a/b/file").read_bytes() == b"hello"


def test_cpio_is_deterministic() -> None:
    def build() -> bytes:
        archive = Cpio()
        archive.file("x", b"1")
        return archive.finish()

    assert build() == build()


def test_needed_libraries_match_readelf() -> None:
    readelf = shutil.which("readelf")
    program = Path("/bin/ls")
    if readelf is None or not program.is_file():
        pytest.skip("readelf or /bin/ls missing")
    dynamic = subprocess.run([readelf, "-d", str(program)], capture_output=True, text=True).stdout
    expected = [line.split("[")[1].rstrip("]") for line in dynamic.splitlines() if "NEEDED" in line]
    assert needed_libraries(program.read_bytes(), "ls") == expected
    assert expected


def test_a_static_program_needs_nothing() -> None:
    assert needed_libraries(_busybox().read_bytes(), "busybox") == []


def test_module_dependencies_read_modinfo(tmp_path: Path) -> None:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc missing")
    source = 'static const char m[] __attribute__((section(".modinfo"), used)) = '
    source += '"license=GPL\\0depends=xen-privcmd,foo_bar\\0name=x";'
    obj = tmp_path / "x.ko"
    build = subprocess.run(
        [gcc, "-c", "-x", "c", "-", "-o", str(obj)], input=source.encode(), capture_output=True
    )
    assert build.returncode == 0, build.stderr
    assert module_dependencies(obj.read_bytes(), "x.ko") == ["xen-privcmd", "foo_bar"]


def _bzimage(payload: bytes) -> bytes:
    setup_sects = 1
    image = bytearray((setup_sects + 1) * 512)
    image[0x1F1] = setup_sects
    image[0x202:0x206] = b"HdrS"
    compressed = lzma.compress(payload, format=lzma.FORMAT_XZ) + len(payload).to_bytes(4, "little")
    image[0x248:0x24C] = (16).to_bytes(4, "little")
    image[0x24C:0x250] = len(compressed).to_bytes(4, "little")
    return bytes(image) + b"\0" * 16 + compressed


def test_vmlinux_comes_out_of_a_bzimage() -> None:
    kernel = b"\x7fELF" + bytes(range(256)) * 10
    assert vmlinux_from_bzimage(_bzimage(kernel), "k") == kernel


def test_a_file_that_is_no_bzimage_is_refused() -> None:
    with pytest.raises(MissingTool, match="not a bzImage"):
        vmlinux_from_bzimage(b"\0" * 4096, "k")


def test_init_script_is_valid_shell() -> None:
    script = init_script()
    assert "@" not in script.replace("@xlrig", "")  # every placeholder was filled
    subprocess.run(["sh", "-n"], input=script.encode(), check=True)


def test_domain_names_are_unique_and_tame() -> None:
    assert domain_name(Path("/x/my kernel,v2"), 3) == "my_kernel_v2-3"
    assert domain_name(Path("a"), 1) != domain_name(Path("a"), 2)


def test_jobs_archive_holds_each_job(tmp_path: Path) -> None:
    from shimgen.verify.xlrig import Dom0Files

    image = tmp_path / "k"
    image.write_bytes(b"\x7fELF")
    files = Dom0Files(kernel=image, initramfs=image, pv_shim=image, packages=())
    data = jobs_archive([DomuJob(image, "xl-pv", cmdline="c"), DomuJob(image, "xl-pvshim")], files)
    listing = subprocess.run(
        [str(_busybox()), "cpio", "-t"], input=data, capture_output=True, check=True
    ).stdout.decode()
    names = set(listing.split())
    assert {"jobs/1/xl.cfg", "jobs/1/kernel", "jobs/2/kernel", "jobs/order"} <= names
    assert "usr/lib/xen-4.17/boot/xen-shim" in names  # only because job 2 needs it


def test_shutdown_on_reaches_dom0_and_matches_across_lines(tmp_path: Path) -> None:
    """A job's shutdown_on goes into its folder; dom0 matches it against the guest's
    whole output with busybox's grep -Ez, so "T.*T" waits for a second T line."""
    from shimgen.verify.xlrig import Dom0Files

    image = tmp_path / "k"
    image.write_bytes(b"\x7fELF")
    files = Dom0Files(kernel=image, initramfs=image, pv_shim=image, packages=())
    data = jobs_archive([DomuJob(image, "xl-pvh", shutdown_on="T.*T")], files)
    busybox = str(_busybox())
    listing = subprocess.run([busybox, "cpio", "-t"], input=data, capture_output=True, check=True)
    assert "jobs/1/shutdown_on" in listing.stdout.decode().split()
    assert "grep -Ezq -f $dir/shutdown_on" in init_script()
    (tmp_path / "pattern").write_text("T.*T\n")
    for text, matches in ((b"T1\nx\n", False), (b"T1\nx\nT2\n", True)):
        grep = [busybox, "grep", "-Ezq", "-f", str(tmp_path / "pattern")]
        assert (subprocess.run(grep, input=text).returncode == 0) is matches, text


# --- the log parser on recorded logs ------------------------------------------------

# The jobs of the recorded run, in order (tests/data/xlrig-matrix.log): a patched
# pv-hello as PVH and as PV, an unpatched pvh-hello as PV (xl refuses it), a guest that
# hangs (3 s limit) and one whose check fails (SHUTDOWN_crash).
RECORDED_JOBS = [
    DomuJob(Path("pv-hello.u"), "xl-pvh", cmdline="recorded pvh"),
    DomuJob(Path("pv-hello.u"), "xl-pv", cmdline="recorded pv"),
    DomuJob(Path("pvh-hello"), "xl-pv"),
    DomuJob(Path("pv-hello.u"), "xl-pvh", cmdline="sample=hang", timeout=3),
    DomuJob(Path("pv-hello.u"), "xl-pvh", cmdline="sample=fail"),
]


def _replay(jobs=RECORDED_JOBS, name: str = "xlrig-matrix.log", drop: int = 0):
    parser = RigParser(jobs)
    lines = (DATA / name).read_text().splitlines()
    for line in lines[: len(lines) - drop]:
        parser.feed(line)
    run = QemuRun(status=None, timed_out=drop > 0, wall_time=1.0, pid=0, stderr=[], timeout=9.0)
    return parser, [_job_result(n, job, parser, run, []) for n, job in enumerate(jobs, 1)]


def test_recorded_run_verdicts() -> None:
    parser, results = _replay()
    assert parser.all_done and parser.end is End.DOM0_POWEROFF
    assert [r.verdict for r in results] == [
        Verdict.OK,
        Verdict.OK,
        Verdict.XEN_ERROR,
        Verdict.TIMEOUT,
        Verdict.GUEST_FAILED,
    ]
    assert [r.end for r in results] == [
        End.DOMU_POWEROFF,
        End.DOMU_POWEROFF,
        End.XL_REFUSED,
        End.TIMEOUT,
        End.DOMU_CRASH,
    ]
    assert [r.shutdown_reason for r in results] == ["poweroff", "poweroff", None, None, "crash"]


def test_recorded_pvh_guest_report_and_xenstore() -> None:
    _, results = _replay()
    pvh = results[0]
    # its port 0xe9 lines came before dom0 reported the domid: they still belong to it
    assert pvh.report_complete and pvh.report["cmdline"] == "recorded pvh"
    assert int(pvh.report["store_mfn"], 16) == int(pvh.xenstore["store/ring-ref"])
    assert int(pvh.report["console_mfn"], 16) == int(pvh.xenstore["console/ring-ref"])
    assert pvh.report["store_evtchn"] == pvh.xenstore["store/port"]
    assert pvh.domain_memory_mib == 32
    assert list(pvh.timings) == [
        "dom0_up",
        "toolstack_up",
        "created",
        "started",
        "first_output",
        "ended",
    ]
    # the PV guest prints nothing (console_io is refused to a domU) but has its rings
    assert results[1].guest_lines == [] and results[1].xenstore["console/port"] == "2"


def test_recorded_refusal_shows_xl_s_own_message() -> None:
    _, results = _replay()
    refused = results[2]
    assert "xc_dom_find_loader: no loader found" in refused.reason
    assert refused.xenstore == {} and "started" not in refused.timings


def test_recorded_hang_keeps_its_output() -> None:
    _, results = _replay()
    hung = results[3]
    assert hung.report.get("action") == "hang"
    assert "3 s" in hung.reason


def test_a_rig_cut_short_reports_every_unfinished_job() -> None:
    lines = (DATA / "xlrig-matrix.log").read_text().splitlines()
    cut = len(lines) - next(i for i, line in enumerate(lines) if "@xlrig 4 create" in line)
    parser, results = _replay(drop=cut)
    assert not parser.all_done
    assert [r.verdict for r in results[:3]] == [Verdict.OK, Verdict.OK, Verdict.XEN_ERROR]
    assert all(r.verdict is Verdict.TIMEOUT for r in results[3:])
    assert all("ran out of time" in r.reason for r in results[3:])


def test_exit_on_in_the_last_job_ends_the_run() -> None:
    jobs = [*RECORDED_JOBS[:4], DomuJob(Path("p"), "xl-pvh", exit_on=r"action=fai[l]")]
    parser, results = _replay(jobs)
    assert results[-1].verdict is Verdict.OK and results[-1].end is End.EXIT_ON
    assert parser.final


def test_an_unterminated_console_line_does_not_eat_a_marker() -> None:
    parser = RigParser(RECORDED_JOBS[:1])
    lines = (
        "@xlrig 1 create",
        "@xlrig 1 con: last words @xlrig 1 ended",
        "@xlrig 1 con: \r@xlrig 1 done",
    )
    for line in lines:
        parser.feed(line)
    record = parser.records[1]
    assert record.done and "ended" in record.times
    assert [text for _, text in record.console] == ["last words"]


def test_a_debug_port_line_inside_a_dom0_line_is_split_out() -> None:
    parser = RigParser(RECORDED_JOBS[:1])
    lines = (
        "@xlrig 1 create",
        "@xlrig 1 con: key=1(d1) shimgen-sample: other=2",
        "@xlrig 1 started domid=1",
    )
    for line in lines:
        parser.feed(line)
    assert [text for _, text in parser.records[1].console] == ["key=1"]
    assert [text for _, text in parser.guest_output(1)][-1] == "shimgen-sample: other=2"
