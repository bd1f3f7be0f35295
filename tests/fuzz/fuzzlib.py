"""What every fuzz target shares: where its seed corpus is, and how an invariant fails.

A target is a module `fuzz_<name>.py` with `test_one_input(data: bytes) -> None`. It raises
`InvariantError` (an AssertionError, so libFuzzer records a crash) when a property the code
documents does not hold; any other exception that escapes is a crash too. `run.py` gives the
function to atheris; `test_fuzz_targets.py` runs it over the seeds without atheris.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"


class InvariantError(AssertionError):
    """A documented property of the code under test does not hold for this input."""


def check(condition: object, message: str) -> None:
    """`assert`, but not removed by `python -O` and with a message that names the property."""
    if not condition:
        raise InvariantError(message)


def seeds(target: str) -> list[Path]:
    """The committed seed inputs of `target`, sorted by name."""
    return sorted(p for p in (CORPUS / target).iterdir() if p.is_file())
