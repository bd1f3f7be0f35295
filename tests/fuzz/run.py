"""Run one fuzz target under atheris (libFuzzer): `python tests/fuzz/run.py imap --seconds 600`.

The target's module is imported inside `atheris.instrument_imports`, so the project's
packages (and aiosmtpd, for the SMTP target) are instrumented for coverage. New corpus
entries go to var/fuzz/<target>/ (the committed seeds in tests/fuzz/corpus/<target>/ are only
read), crashes to var/fuzz/crashes/<target>-*. Extra arguments after `--` go to libFuzzer
(e.g. `-- -runs=1000` or a crash file to reproduce it).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

TARGETS = ("imap", "headers", "sasl", "smtp", "annuaire")
# What coverage is collected for: the code under test, not the standard library.
INSTRUMENTED = ("imap", "crypto", "mss", "smtp", "annuaire", "aiosmtpd", "email")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", choices=TARGETS)
    ap.add_argument("--seconds", type=int, default=600, help="-max_total_time (default 600)")
    ap.add_argument("--rss-limit-mb", type=int, default=2048)
    ap.add_argument("--timeout", type=int, default=10, help="seconds one input may take")
    ap.add_argument("--out", type=Path, default=ROOT / "var" / "fuzz")
    args = ap.parse_args(argv)

    import atheris  # only here: the seed test imports the targets without atheris

    with atheris.instrument_imports(include=list(INSTRUMENTED)):
        module = importlib.import_module(f"fuzz_{args.target}")

    corpus = args.out / args.target
    crashes = args.out / "crashes"
    corpus.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    # libFuzzer re-runs argv[0] as a shell command for -minimize_crash and -fork: make it one
    # that reaches this runner again (its own arguments then come after the "--").
    libfuzzer = [
        f"{sys.executable} {Path(__file__).resolve()} {args.target} --seconds {args.seconds} --",
        f"-max_total_time={args.seconds}",
        f"-rss_limit_mb={args.rss_limit_mb}",
        f"-max_len={module.MAX_LEN}",
        f"-timeout={args.timeout}",
        f"-artifact_prefix={crashes}/{args.target}-",
        "-print_final_stats=1",
        *extra,
    ]
    if not any(not a.startswith("-") for a in extra):  # no file/dir given: fuzz the corpus
        libfuzzer += [str(corpus), str(HERE / "corpus" / args.target)]
    # Thousands of sessions a second: no log I/O (the targets check replies and results, and
    # the seed test, which runs inside pytest, keeps the project's logging as it is).
    logging.disable(logging.CRITICAL)
    atheris.Setup(libfuzzer, module.test_one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
