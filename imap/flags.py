"""Message flags as commands carry them (RFC 9051 2.3.2): one place that validates them.

System flags (`\\Seen`, ...) are case-insensitive: whatever case the client used, they are
stored and compared in their canonical spelling. Keywords are kept as sent.
"""

from __future__ import annotations

from collections.abc import Iterable

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
RECENT = "\\Recent"
_CANONICAL = {f.upper(): f for f in SYSTEM_FLAGS + (RECENT,)}


def canonical_flag(flag: str) -> str:
    """`\\seen` -> `\\Seen`; keywords and unknown names unchanged."""
    return _CANONICAL.get(flag.upper(), flag) if flag.startswith("\\") else flag


def check_flags(flags: Iterable[str]) -> tuple[list[str], str | None]:
    """The flags a STORE or APPEND may set, canonical and without `\\Recent` (the server's
    to set), or the reason the list is refused (an unknown `\\Name`, `\\*`)."""
    out: list[str] = []
    for f in flags:
        c = canonical_flag(f)
        if c.startswith("\\") and c.upper() not in _CANONICAL:
            return [], f"{f} is not a flag that can be stored"
        if c != RECENT and c not in out:
            out.append(c)
    return out, None
