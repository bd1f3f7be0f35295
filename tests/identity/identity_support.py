"""Constants and helpers shared by the identity tests (a unique module name: importable
from any test module without clashing with the other folders' conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ISSUER = "https://idp.sante.test/auth/realms/esante-wallet"
AUDIENCE = "mss-test"
PS_ID = "810001045367"
ROOT = Path(__file__).resolve().parents[2]


def run_mss(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """`python -m mss ARGS` as an operator would run it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **kw.pop("env", {})}
    res = subprocess.run(
        [sys.executable, "-m", "mss", *args],
        cwd=kw.pop("cwd", ROOT),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        **kw,
    )
    if check and res.returncode != 0:
        raise AssertionError(f"mss {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res
