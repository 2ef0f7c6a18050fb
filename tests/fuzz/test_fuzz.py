"""Each fuzz target, seeded and bounded (a few seconds), and every saved regression case.

The long run is `python -m tests.fuzz` (see README "Fuzzing"); a failure it finds is kept
under tests/fuzz/corpus/<target>/ and replayed here from then on.
"""

from __future__ import annotations

import pytest

from tests.fuzz.engine import fuzz, replay
from tests.fuzz.targets import MODULES, target

SEED = 20261207
# Inputs per target in the normal run: about 2-4 s each on the slow 2-core CI machine.
INPUTS = {"ike": 2500, "esp": 20000, "replay": 20000, "udpencap": 50000, "profile": 2500,
          "control": 2500}
SECONDS_CAP = 8.0  # a loaded machine stops early rather than stalling the suite


def _explain(failures) -> str:
    return "\n".join(f"{f.signature} [{f.kind}]: input {f.data[:120]!r}...\n{f.detail}"
                     for f in failures)


@pytest.mark.parametrize("name", list(MODULES))
def test_fuzz_target(name: str) -> None:
    report = fuzz(target(name), SEED, inputs=INPUTS[name], seconds=SECONDS_CAP)
    assert report.inputs >= min(INPUTS[name], 200), report.line()
    assert not report.failures, (
        f"{report.line()}\nreproduce and keep the inputs: python -m tests.fuzz --target "
        f"{name} --inputs {INPUTS[name]} --seed {SEED}\n"
        + _explain(report.failures.values()))


@pytest.mark.parametrize("name", list(MODULES))
def test_fuzz_corpus(name: str) -> None:
    failures = replay(target(name))
    assert not failures, _explain(failures)
