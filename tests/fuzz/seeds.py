"""The seed corpus: real images and hand-made hostile ones, by name.

Real: the samples (samples/build), the samples after `shimgen patch`, Debian's GRUB
Xen images (ELF32 and ELF64, PV and PVH) and every imagegen case. Hostile: every
case of `hostile` except the big, slow ones (run on their own, not mutated: each run
of them costs seconds).
"""

from __future__ import annotations

from pathlib import Path

import imagegen

from shimgen.verify.debcache import unpacked_package
from shimgen.write.patch import patch_bytes

from . import hostile

SAMPLES = ("pv-hello", "pv-highhalf", "pvh-hello", "pvh-hello.elf32")
PATCHED_SAMPLES = ("pv-hello", "pvh-hello")
GRUB_DIR = "usr/lib/grub-xen"
GRUB_IMAGES = ("grub-i386-xen.bin", "grub-i386-xen_pvh.bin", "grub-x86_64-xen.bin")
SLOW_HOSTILE = frozenset(
    {
        "thousands_of_notes",
        "many_note_segments",
        "many_symbol_tables",
        "thousands_of_segments",
        "thousands_of_segment_types",
    }
)


def samples(build_dir: Path) -> dict[str, bytes]:
    return {f"sample:{name}": (build_dir / name).read_bytes() for name in SAMPLES}


def patched(build_dir: Path) -> dict[str, bytes]:
    result = {}
    for name in PATCHED_SAMPLES:
        data = (build_dir / name).read_bytes()
        result[f"patched:{name}"] = patch_bytes(data, name).data
    return result


def grub() -> dict[str, bytes]:
    directory = unpacked_package("grub-xen-host") / GRUB_DIR
    return {f"grub:{name}": (directory / name).read_bytes() for name in GRUB_IMAGES}


def generated() -> dict[str, bytes]:
    result = {}
    for case in imagegen.cases():
        data = imagegen.write_elf(case.spec)
        if case.gzip:
            data = imagegen.gzip.compress(data, mtime=0)
        result[f"imagegen:{case.name}"] = data
    return result


def hostile_seeds() -> dict[str, bytes]:
    return {
        f"hostile:{name}": build()
        for name, build in hostile.CASES.items()
        if name not in SLOW_HOSTILE
    }


def corpus(build_dir: Path) -> dict[str, bytes]:
    return samples(build_dir) | patched(build_dir) | grub() | generated() | hostile_seeds()
