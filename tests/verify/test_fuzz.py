"""Fuzzing every reader of images: no traceback, no hang, only documented statuses.

Inputs: hand-made hostile ELFs (tests/fuzz/hostile.py), structure-aware mutations
of real images (samples, patched samples, GRUB's Xen images, imagegen cases) and
the crashers kept in tests/regressions. Oracles: tests/fuzz/oracle.py.

Deterministic and bounded: hypothesis runs derandomized with a fixed number of
examples (SHIMGEN_FUZZ_SCALE=10 runs ten times as many, for a longer local hunt).
The whole module takes about 80 s on two CPUs. Its hang limits count CPU seconds, so a
machine busy with other work does not turn a slow case into a hang.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path

import pytest
from fuzz import hostile, oracle, seeds
from fuzz.mutate import Mutant, mutants
from hypothesis import HealthCheck, given, settings

from shimgen.read.check import evaluate
from shimgen.read.image import image_from_bytes

SCALE = float(os.environ.get("SHIMGEN_FUZZ_SCALE", "1"))
IN_PROCESS_EXAMPLES = int(1500 * SCALE)
CLI_EXAMPLES = int(20 * SCALE)
REGRESSIONS = Path(__file__).parent.parent / "regressions"


def _hostile_params() -> list[str]:
    return sorted(hostile.CASES)


def fuzz_settings(examples: int) -> settings:
    return settings(
        derandomize=True,
        database=None,
        deadline=None,
        max_examples=max(1, examples),
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


@pytest.fixture(scope="module")
def corpus(samples_build: Path) -> dict[str, bytes]:
    return seeds.corpus(samples_build)


# --- the seeds themselves -------------------------------------------------------------


def test_base_of_hostile_cases_is_a_valid_pv_kernel() -> None:
    """Each hostile case breaks one thing of a kernel that is otherwise fine."""
    verdicts = evaluate(image_from_bytes(hostile.base().build()))
    assert verdicts.pv.ok, verdicts.pv.reasons
    assert oracle.check_in_process(hostile.base().build()) == "patched"


def test_corpus_holds_every_kind_of_seed(corpus: dict[str, bytes]) -> None:
    kinds = collections.Counter(name.split(":")[0] for name in corpus)
    assert set(kinds) == {"sample", "patched", "grub", "imagegen", "hostile"}
    assert len(set(corpus.values())) == len(corpus), "two seeds are the same bytes"


# --- hostile cases, one by one -----------------------------------------------------------


@pytest.mark.parametrize("name", _hostile_params())
def test_hostile_case_in_process(name: str) -> None:
    other = hostile.base().build()
    seconds = oracle.IN_PROCESS_SECONDS
    oracle.check_in_process(hostile.build(name), other=other, seconds=seconds)


@pytest.mark.parametrize("name", _hostile_params())
def test_hostile_case_cli(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_bytes(hostile.build(name))
    base = tmp_path / "base"
    base.write_bytes(hostile.base().build())
    oracle.check_cli(
        path,
        other=base,
        seconds=oracle.CLI_SECONDS,
        human=True,
    )
    base.unlink()


# --- mutations of everything -------------------------------------------------------------


def test_mutated_images_in_process(corpus: dict[str, bytes]) -> None:
    outcomes: collections.Counter[str] = collections.Counter()

    @fuzz_settings(IN_PROCESS_EXAMPLES)
    @given(mutants(corpus, by_kind=True))
    def run(mutant: Mutant) -> None:
        with oracle.keep_on_failure(mutant.data):
            outcomes[oracle.check_in_process(mutant.data, other=corpus[mutant.seed])] += 1

    run()
    print(f"in-process outcomes: {dict(outcomes)}")
    # A fuzzer whose inputs all bounce off the first check tests nothing.
    assert {"rejected", "read, patch refused", "patched", "re-patched"} <= set(outcomes)


def test_mutated_images_cli(corpus: dict[str, bytes], tmp_path_factory) -> None:
    seed_dir = tmp_path_factory.mktemp("seeds")
    # Not the known problems: their rich output fails whatever the mutation.

    @fuzz_settings(CLI_EXAMPLES)
    @given(mutants(corpus))
    def run(mutant: Mutant) -> None:
        path = tmp_path_factory.mktemp("mutant") / "input"
        path.write_bytes(mutant.data)
        other = seed_dir / mutant.seed.replace(":", "_")
        other.write_bytes(corpus[mutant.seed])
        with oracle.keep_on_failure(mutant.data):
            oracle.check_cli(path, other=other)

    run()


# --- kept crashers ----------------------------------------------------------------------


def _regressions() -> list[Path]:
    return sorted(p for p in REGRESSIONS.iterdir() if p.name != "README.md")


def test_every_regression_input_is_explained() -> None:
    readme = (REGRESSIONS / "README.md").read_text()
    listed = {line.split("`")[1] for line in readme.splitlines() if line.startswith("- `")}
    assert listed == {p.name for p in _regressions()}


@pytest.mark.parametrize("path", _regressions(), ids=lambda p: p.name)
def test_regression_in_process(path: Path) -> None:
    oracle.check_in_process(path.read_bytes(), other=hostile.base().build())


@pytest.mark.parametrize("path", _regressions(), ids=lambda p: p.name)
def test_regression_cli(path: Path, tmp_path: Path) -> None:
    copy = tmp_path / path.name
    copy.write_bytes(path.read_bytes())
    oracle.check_cli(copy)


def test_the_hang_limit_counts_cpu_not_the_clock() -> None:
    """A loop is caught however loaded the machine; time spent waiting is not counted
    (the limits are CPU seconds, so a busy machine does not turn slow cases into hangs)."""
    import time

    with pytest.raises(oracle.Hang, match="of CPU"), oracle.time_limit(0.2):
        while True:
            pass
    with oracle.time_limit(0.2):
        time.sleep(0.4)
