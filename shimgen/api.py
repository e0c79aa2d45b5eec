"""shimgen's Python API: the functions the ``shimgen`` commands run, with typed results.

Every command of the CLI is a thin layer over one function here, so a script gets
exactly what the command would compute::

    import shimgen

    result = shimgen.patch("kernel.elf", "kernel.universal")
    report = shimgen.inspect("kernel.universal")
    assert shimgen.check("kernel.universal", "both").ok
    assert shimgen.diff("old.universal", "kernel.universal").equal

Each result has ``to_json()``, the same facts the command prints with ``--json``.
Errors are :class:`ShimgenError` subclasses (``BadInput``, ``MissingTool``,
``OutputError``, ``Refused``, ``UsageError``), each with the ``exit_code`` the CLI
ends with. The names in ``__all__`` are the public API (docs/api.md lists them with
their types); anything else in shimgen may change without notice.

Importing this module is cheap: the pipeline (planner, Keystone, Unicorn, capstone)
is imported by the function that needs it, and the result classes defined elsewhere
(``Verdict``, ``DiffReport``, ``BootResult``, ``EmulateResult``) on first access.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BadInput, MissingTool, OutputError, Refused, ShimgenError, UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on the patch path
if TYPE_CHECKING:
    from typing import Any

    HANDOFFS: tuple[str, ...]
    LOADERS: tuple[str, ...]
    from .plan import Plan
    from .read.check import Verdict
    from .read.check import Verdicts as ReaderVerdicts
    from .read.hypercalls import HypercallScan
    from .read.image import Finding, Image
    from .read.shim_view import ShimView
    from .verify.boot import BootResult
    from .verify.diff import DiffReport
    from .verify.emulate import Result as EmulateResult
    from .verify.xenparser import XenParse
    from .write.fileio import EarlyDigest
    from .write.patch import PatchResult as Written

__all__ = [
    "HANDOFFS",
    "LOADERS",
    "BadInput",
    "BootResult",
    "DiffReport",
    "EmulateResult",
    "MissingTool",
    "OutputError",
    "PatchResult",
    "Refused",
    "Report",
    "ShimgenError",
    "UsageError",
    "Verdict",
    "Verdicts",
    "boot",
    "check",
    "diff",
    "emulate",
    "inspect",
    "patch",
]

PathLike = str | Path
MODES = ("pv", "pvh")
# emulate's memory_mib: enough for a small kernel and its boot structures, and below
# the toolstack's special pages under 4 GiB (shimgen/verify/emulate.py FAKE_PARAMS)
EMULATED_MEMORY_RANGE_MIB = (4, 3072)

# Names that live with the stage that defines them: name -> (module, attribute);
# HANDOFFS and LOADERS are tuple[str, ...].
_ELSEWHERE = {
    "HANDOFFS": ("shimgen.plan", "HANDOFFS"),
    "LOADERS": ("shimgen.verify.boot", "LOADERS"),
    "Verdict": ("shimgen.read.check", "Verdict"),
    "DiffReport": ("shimgen.verify.diff", "DiffReport"),
    "BootResult": ("shimgen.verify.boot", "BootResult"),
    "EmulateResult": ("shimgen.verify.emulate", "Result"),
}


def __getattr__(name: str) -> Any:
    if name in _ELSEWHERE:
        import importlib

        module, attribute = _ELSEWHERE[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- patch ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PatchResult:
    """What :func:`patch` did.

    ``plan`` is the planner's decision (shim placement, entries, notes); its
    attributes follow the planner, ``to_json()`` is the stable form of it.
    """

    output: str | None  # None for a dry run
    size: int  # of the output in bytes (what it would be, for a dry run)
    repatched: bool  # the input was a patched image, patched again from its original bytes
    plan: Plan = field(repr=False)

    @property
    def handoff(self) -> str:
        return self.plan.handoff

    def to_json(self) -> dict[str, Any]:
        """What ``shimgen patch --json`` prints."""
        return self.plan.to_json() | {
            "output": self.output,
            "repatched": self.repatched,
            "output_size": self.size,
        }


def patch(
    path: PathLike,
    out: PathLike | None = None,
    *,
    handoff: str = "auto",
    entry: str | None = None,
    entry64: str | None = None,
    single_entry: bool = False,
    force: bool = False,
    dry_run: bool = False,
    replace_pvh_entry: bool = False,
    in_place: bool = False,
    digest: bool = True,
    pv_abi: bool | None = None,
) -> PatchResult:
    """Patch the kernel at ``path`` into a universal image at ``out`` (``shimgen patch``).

    handoff: "auto" or one of HANDOFFS; entry (start-info) and entry64
    (hvm-start-info) name the kernel's entry by symbol or address ("0x100000").
    The input is never modified; ``out`` is written atomically, byte-identical for
    the same input and options, and not at all with ``dry_run``. ``force``
    re-patches an already patched image from its original bytes. A kernel that
    already boots both ways (its own ENTRY and PHYS32_ENTRY) is refused with "auto";
    an explicit handoff keeps its PHYS32_ENTRY unless ``replace_pvh_entry``.
    ``in_place`` (without ``out``) patches ``path`` itself, the same bytes, so that a
    crash leaves the original or the patched image. ``digest=False`` records no
    sha256 of the input (the metadata says so).
    pv_abi: the PV ABI layer (docs/pv-abi.md) in (True) or out (False); None puts it
    in for a start-info kernel that calls hypercalls Xen refuses under PVH.
    Raises BadInput, Refused (exit 6: cannot be patched as asked), OutputError.
    """
    if (out is None) != in_place:
        raise UsageError("give either out or in_place=True")
    from .write.fileio import EarlyDigest  # light: the planner is imported below

    # Hash the input on another core while the planner is imported (~50 ms).
    early = EarlyDigest.start(path) if digest and not dry_run else None
    try:
        done = _patch(
            path,
            out,
            in_place,
            handoff,
            early,
            {
                "entry": entry,
                "force": force,
                "dry_run": dry_run,
                "entry64": entry64,
                "single_entry": single_entry,
                "replace_pvh_entry": replace_pvh_entry,
                "digest": digest,
                "pv_abi": pv_abi,
            },
        )
    finally:
        if early is not None:
            early.close()
    return PatchResult(
        output=None if dry_run else str(path if in_place else out),
        size=done.size,
        repatched=done.repatched,
        plan=done.plan,
    )


def _patch(
    path: PathLike,
    out: PathLike | None,
    in_place: bool,
    handoff: str,
    early: EarlyDigest | None,
    options: dict[str, Any],
) -> Written:
    from .plan import HANDOFFS

    if handoff != "auto" and handoff not in HANDOFFS:
        raise UsageError(f"handoff must be 'auto' or one of {', '.join(HANDOFFS)}")
    if in_place:
        from .write.inplace import patch_in_place

        return patch_in_place(path, handoff=handoff, early=early, **options)
    from .write.patch import patch_file

    return patch_file(path, out, handoff=handoff, early=early, **options)


# --- inspect -------------------------------------------------------------------------

SHIMGEN_NOTE_OWNER = "shimgen"
# What differs between two builds of the same report without any change a loader sees.
VOLATILE_FIELDS = ("path", "sha256")


@dataclass(frozen=True)
class Report:
    """What an image holds (``shimgen inspect``): segments, sections, every note,
    Xen's notes and where they come from, findings, the PV/PVH verdicts and, for a
    patched image, the shim's metadata and disassembly.

    ``image``, ``verdicts`` and ``shim`` are the reader's records; ``to_json()`` and
    ``stable_json()`` are the stable forms.
    """

    path: str
    image: Image = field(repr=False)
    verdicts: ReaderVerdicts = field(repr=False)
    shim: ShimView | None = field(repr=False)
    hypercalls: HypercallScan = field(repr=False)  # the kernel's calls into its page
    shim_error: str | None = None  # a shimgen note that does not decode

    @property
    def patched(self) -> bool:
        return self.shim is not None or self.shim_error is not None

    def to_json(self) -> dict[str, Any]:
        """What ``shimgen inspect --json`` prints."""
        shim: dict[str, Any] | None
        if self.shim_error:
            shim = {"error": self.shim_error}
        else:
            shim = self.shim.to_json() if self.shim else None
        return self.image.to_json() | {
            "verdicts": self.verdicts.to_json(),
            "shim": shim,
            "hypercalls": self.hypercalls.to_json(),
        }

    def stable_json(self) -> dict[str, Any]:
        """to_json() without what changes when nothing a loader sees changed: the path,
        the image's and the original's sha256, and the shimgen note's raw bytes (they
        embed that digest; the note is decoded under shim.metadata). This is what
        the pytest plugin's ``shim_snapshot`` stores."""
        data = {k: v for k, v in self.to_json().items() if k not in VOLATILE_FIELDS}
        data["notes"] = [
            {**note, "desc": "(decoded under shim.metadata)"}
            if note["owner"] == SHIMGEN_NOTE_OWNER
            else note
            for note in data["notes"]
        ]
        shim = data.get("shim")
        if shim and "metadata" in shim:
            metadata = {k: v for k, v in shim["metadata"].items() if k != "original_sha256"}
            data["shim"] = {**shim, "metadata": metadata}
        return data


def inspect(path: PathLike, *, disassemble: bool = True) -> Report:
    """Read the image at ``path`` (ELF32 or ELF64, optionally gzip-compressed) and
    report what it holds (``shimgen inspect``). Raises BadInput for what is not an
    x86 ELF. A corrupt shimgen note is reported in ``shim_error``, not raised."""
    from .read.check import evaluate
    from .read.image import read_image
    from .read.shim_view import CorruptShimNote, shim_view

    image = read_image(path)
    verdicts = evaluate(image)
    try:
        shim, shim_error = shim_view(image, disassemble=disassemble), None
    except CorruptShimNote as error:  # the rest of the image still shows
        shim, shim_error = None, str(error)
    return Report(
        path=str(path),
        image=image,
        verdicts=verdicts,
        shim=shim,
        hypercalls=_kernel_hypercalls(image, shim.meta if shim else None),
        shim_error=shim_error,
    )


def _kernel_hypercalls(image: Image, meta: Any) -> HypercallScan:
    """The kernel's calls into its hypercall page, each marked when the image's PV
    ABI layer answers it (the metadata option ``pv_abi`` names what it answers); a
    patched image's shim code, which makes calls of its own, is left out."""
    from .read.hypercalls import scan_hypercalls

    skip, answers = None, frozenset[str]()
    if meta is not None:
        skip = (meta.shim_vaddr, meta.shim_vaddr + meta.shim_code_size)
        answered = meta.options.get("pv_abi")
        answers = frozenset(answered) if isinstance(answered, list) else frozenset()
    return scan_hypercalls(image, skip, answers)


# --- check ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdicts:
    """Whether an image boots in the asked modes (``shimgen check``).

    ``pv`` and ``pvh`` are the verdicts of shimgen's rules (Xen 4.17's libelf and
    libxenguest, plus QEMU's and linux-loader's PVH rules as warnings); a mode that
    was not asked is None. ``libxenguest`` holds Xen's own parser's answers when
    asked for (``xen_parser=True``).
    """

    path: str
    modes: tuple[str, ...]
    pv: Verdict | None
    pvh: Verdict | None
    strict: bool = False
    libxenguest: dict[str, XenParse] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    # PVH only: what the kernel's PV-only hypercalls mean for a PVH boot (a warning;
    # a problem with strict), and the calls themselves
    pvh_hypercalls: str | None = None
    hypercalls: HypercallScan | None = field(default=None, repr=False)
    xen_caps: tuple[str, ...] = ()  # the hypervisor's guest types the verdicts assume

    def verdict(self, mode: str) -> Verdict:
        found = self.pv if mode == "pv" else self.pvh if mode == "pvh" else None
        if found is None:
            raise KeyError(f"mode {mode!r} was not checked (checked: {', '.join(self.modes)})")
        return found

    def problems(self, mode: str) -> list[str]:
        """Why the image does not boot in mode (with strict, PVH loader warnings too)."""
        verdict = self.verdict(mode)
        extra = self.pvh_warnings() if self.strict and mode == "pvh" else []
        return [*verdict.reasons, *extra]

    def pvh_warnings(self) -> list[str]:
        """What may keep a PVH boot from working though its loaders accept the image:
        QEMU's and linux-loader's rules, and PV-only hypercalls the kernel makes."""
        warnings = list(self.verdict("pvh").warnings)
        return warnings + ([self.pvh_hypercalls] if self.pvh_hypercalls else [])

    @property
    def ok(self) -> bool:
        """Bootable in every asked mode, and accepted by libxenguest when it was asked."""
        bootable = all(self.verdict(m).ok and not self.problems(m) for m in self.modes)
        return bootable and all(a.accepted_by_elf_loader for a in self.libxenguest.values())

    def to_json(self) -> dict[str, Any]:
        """What ``shimgen check --json`` prints."""
        return {
            "image": self.path,
            "modes": list(self.modes),
            "xen_caps": list(self.xen_caps),
            "ok": self.ok,
            **{mode: self.verdict(mode).to_json() for mode in self.modes},
            "libxenguest": {
                mode: {
                    "ok": answer.accepted_by_elf_loader,
                    "loader": answer.loader,
                    "guest_type": answer.guest_type,
                    "error": answer.error,
                }
                for mode, answer in self.libxenguest.items()
            },
            "findings": [f.__dict__ for f in self.findings],
            **(
                {"pvh_hypercalls": self.pvh_hypercalls, "hypercalls": self.hypercalls.to_json()}
                if self.hypercalls is not None
                else {}
            ),
        }


def check(
    path: PathLike,
    mode: str = "both",
    *,
    strict: bool = False,
    xen_parser: bool = False,
    xen_caps: tuple[str, ...] | None = None,
) -> Verdicts:
    """Decide whether the image at ``path`` boots as PV, PVH or both (``shimgen check``).

    mode: "pv", "pvh" or "both". strict: QEMU's and linux-loader's warnings
    (Firecracker, Cloud Hypervisor) fail PVH too. xen_parser: also ask Xen's own
    parser, libxenguest (needs gcc and libxen-dev; MissingTool otherwise).
    xen_caps: the guest types the hypervisor offers, Xen's own strings
    ("xen-3.0-x86_64", "hvm-3.0-x86_32"...); default Debian's Xen 4.17, which has
    no 32-bit PV. A verdict's ``details["guest_type"]`` is the one the image needs.
    """
    from .read.check import DEFAULT_XEN_CAPS, evaluate
    from .read.image import read_image
    from .read.shim_view import CorruptShimNote, shim_meta

    modes = _modes(mode)
    caps = DEFAULT_XEN_CAPS if xen_caps is None else tuple(xen_caps)
    if not caps:
        raise UsageError("xen_caps: give at least one guest type, e.g. xen-3.0-x86_64")
    image = read_image(path)
    verdicts = evaluate(image, caps)
    scan, warning = None, None
    if "pvh" in modes:
        try:
            meta = shim_meta(image)
        except CorruptShimNote:
            meta = None  # inspect reports it; the kernel's calls are still found
        scan = _kernel_hypercalls(image, meta)
        warning = scan.pvh_warning(meta.handoff if meta else None)
    answers: dict[str, XenParse] = {}
    if xen_parser:
        from .verify import xenparser

        answers = {m: xenparser.parse(path, m, xen_caps=" ".join(caps)) for m in modes}
    return Verdicts(
        path=str(path),
        modes=modes,
        xen_caps=caps,
        pv=verdicts.pv if "pv" in modes else None,
        pvh=verdicts.pvh if "pvh" in modes else None,
        strict=strict,
        libxenguest=answers,
        findings=list(image.findings),
        pvh_hypercalls=warning,
        hypercalls=scan,
    )


def _modes(mode: str) -> tuple[str, ...]:
    if mode == "both":
        return MODES
    if mode not in MODES:
        raise UsageError(f"mode must be 'pv', 'pvh' or 'both', not {mode!r}")
    return (mode,)


# --- diff ----------------------------------------------------------------------------


def diff(a: PathLike, b: PathLike) -> DiffReport:
    """The structural difference of two images as their loaders see them
    (``shimgen diff``): ``.equal``, ``.differences`` by category, ``.ignored``
    (layout-only changes), ``.summary()``, ``.to_text()`` (what the command prints)."""
    from .verify.diff import diff_files

    return diff_files(a, b)


# --- boot ----------------------------------------------------------------------------


def boot(
    path: PathLike,
    loader: str,
    *,
    machine: str | None = None,
    cmdline: str = "",
    initrd: PathLike | None = None,
    expect: str | None = None,
    timeout: float = 30.0,
    log: PathLike | None = None,
    xen: PathLike | None = None,
    exit_on: str | None = None,
    exit_ok: int | None = None,
    memory: int | None = None,
    on_progress: Callable[[str], None] | None = None,
    shutdown_on: str | None = None,
) -> BootResult:
    """Boot the image for real and report what the kernel printed (``shimgen boot``).

    loader: one of LOADERS. machine (qemu-pvh only): "q35" (default), "pc" or
    "microvm". initrd: a module for the kernel. expect: a regex the guest's output
    must hold too. log: where to save the raw console log. xen: the hypervisor
    (default Debian's 4.17, fetched once into $SHIMGEN_CACHE). on_progress gets
    each stage's name. exit_on: a regex that ends the boot as soon as the guest
    printed it (verdict ok). exit_ok: the isa-debug-exit value meaning success
    (default the samples' 0x10; not for xl loaders). memory: the domU's MiB (xl
    loaders). shutdown_on (xl loaders): a regex; once the guest's output matches it,
    dom0 asks the guest to power off (xl shutdown). ``.ok`` is True when the guest
    ended well.
    Raises MissingTool when QEMU or Xen are missing, BadInput, UsageError.
    """
    from .verify.boot import DEBUG_EXIT_OK, DEFAULT_MACHINE, BootOptions
    from .verify.boot import boot as run_boot

    try:
        options = BootOptions(
            loader=loader,
            machine=machine or DEFAULT_MACHINE,
            cmdline=cmdline,
            initrd=None if initrd is None else Path(initrd),
            expect=expect,
            timeout=timeout,
            log=None if log is None else Path(log),
            xen=None if xen is None else Path(xen),
            exit_on=exit_on,
            exit_ok=DEBUG_EXIT_OK if exit_ok is None else exit_ok,
            memory=memory,
            shutdown_on=shutdown_on,
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    return run_boot(Path(path), options, on_progress=on_progress)


# --- emulate -------------------------------------------------------------------------


def emulate(
    path: PathLike,
    mode: str,
    *,
    cmdline: str | bytes = b"",
    xen: bool = True,
    hvm_version: int = 1,
    bad_magic: bool = False,
    other_hypervisor: bool = False,
    hvm_fields: Mapping[str, int] | None = None,
    info_at: int | None = None,
    cmdline_unterminated: bool = False,
    wrong_mode: bool = False,
    run_kernel: bool = False,
    trace: bool = False,
    memory_mib: int | None = None,
) -> EmulateResult:
    """Run a patched image's shim in Unicorn from the start state Xen (or, with
    ``xen=False``, QEMU) builds, up to the kernel's entry (``shimgen emulate``).

    mode: "pv" or "pvh". The hostile-loader options: hvm_fields (hvm_start_info
    fields written over the loader's), info_at (its physical address),
    cmdline_unterminated, wrong_mode (each entry in the other CPU mode),
    other_hypervisor (another hypervisor's cpuid leaves first). ``.reached_kernel``
    is True when the kernel's entry was reached. run_kernel: go on past the kernel's
    entry up to its hlt (outcome "kernel-halted"). memory_mib: the guest's RAM (a PC's
    memory map, RAM from 0 up; default 128 MiB). Raises Refused for PV on an
    image without a PV entry, UsageError for an unknown field or mode or a memory size
    outside EMULATED_MEMORY_RANGE_MIB.
    """
    from .read.image import read_image
    from .verify.emulate import StartState
    from .verify.emulate import emulate as run_emulate

    if mode not in MODES:
        raise UsageError(f"mode must be 'pv' or 'pvh', not {mode!r}")
    if hvm_version not in (0, 1):
        raise UsageError(f"hvm_version must be 0 or 1, not {hvm_version!r}")
    low, high = EMULATED_MEMORY_RANGE_MIB
    if memory_mib is not None and not low <= memory_mib <= high:
        raise UsageError(f"memory must be {low} to {high} MiB, not {memory_mib}")
    sized = {} if memory_mib is None else {"ram_size": memory_mib << 20}
    state = StartState(
        mode=mode,
        cmdline=cmdline.encode() if isinstance(cmdline, str) else bytes(cmdline),
        xen=xen,
        hvm_version=hvm_version,
        bad_magic=bad_magic,
        other_hypervisor=other_hypervisor,
        hvm_fields=_checked_hvm_fields(hvm_fields or {}, hvm_version),
        info_at=info_at,
        cmdline_unterminated=cmdline_unterminated,
        wrong_mode=wrong_mode,
        run_kernel=run_kernel,
        **sized,
    )
    return run_emulate(read_image(path), state, trace=trace)


def _checked_hvm_fields(fields: Mapping[str, int], version: int) -> dict[str, int]:
    """fields checked against the hvm_start_info layout (structs/) and field widths."""
    from .structs import hvm_start_info

    widths = {leaf.path: leaf.size for leaf in hvm_start_info(version).leaves()}
    for name, value in fields.items():
        width = widths.get(name)
        if width is None:
            known = ", ".join(widths)
            raise UsageError(f"hvm_start_info v{version} has no field {name!r} ({known})")
        if not 0 <= value < 1 << (8 * width):
            raise UsageError(f"{name}: {value:#x} does not fit in {width} bytes")
    return dict(fields)
