"""`python -m bench COMMAND`: the benchmarks that have a command (bench/README.md).

python -m bench compare [--quick]   MSS against Postfix -> LMTP -> Dovecot, same load
python -m bench imap [--quick]      MSS's IMAP against Dovecot's on the same folder
python -m bench idle [--quick]      memory per IDLE connection, push latency to every idler
python -m bench annuaire [--quick]  national directory import (full, unchanged, 1 % diff) and look-ups
"""

from __future__ import annotations

import sys


def main() -> None:
    commands = {
        "compare": "bench.compare",
        "imap": "bench.imap_compare",
        "idle": "bench.idle_bench",
        "annuaire": "bench.annuaire_bench",
    }
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__.strip(), file=sys.stderr)
        raise SystemExit(2)
    import importlib

    module = importlib.import_module(commands[sys.argv[1]])
    module.main(sys.argv[2:])


if __name__ == "__main__":
    main()
