"""Every fuzz target's function over its committed seed corpus, without atheris.

This keeps the seeds valid (a seed that breaks an invariant fails `make test`) and the
targets importable; the coverage-guided runs themselves are `make fuzz` (docs/operations.md).
"""

from __future__ import annotations

import importlib

import pytest
from fuzzlib import CORPUS, InvariantError, check, seeds

TARGETS = ("imap", "headers", "sasl", "smtp", "annuaire")
CASES = [(t, p) for t in TARGETS for p in seeds(t)]


def test_every_target_has_seeds_and_nothing_big():
    assert sorted(p.name for p in CORPUS.iterdir() if p.is_dir()) == sorted(TARGETS)
    for target in TARGETS:
        files = seeds(target)
        assert len(files) >= 5, target
        module = importlib.import_module(f"fuzz_{target}")
        for p in files:
            assert p.stat().st_size <= module.MAX_LEN, p  # libFuzzer would cut it at -max_len


@pytest.mark.parametrize(("target", "seed"), CASES, ids=[f"{t}/{p.name}" for t, p in CASES])
def test_seed_passes_the_target(target, seed):
    module = importlib.import_module(f"fuzz_{target}")
    module.test_one_input(seed.read_bytes())


def test_an_invariant_failure_is_an_assertion():
    # libFuzzer records an uncaught exception as a crash; check() must raise one even under -O.
    with pytest.raises(AssertionError):
        check(False, "x")
    assert issubclass(InvariantError, AssertionError)


@pytest.mark.parametrize("target", TARGETS)
def test_target_survives_arbitrary_small_inputs(target):
    """A few inputs no seed has (empty, one octet, binary): the target itself must not fail."""
    module = importlib.import_module(f"fuzz_{target}")
    for data in (b"", b"\n", b"\r\n", b"\x00", b"\xff" * 40, bytes(range(256))):
        module.test_one_input(data)
