"""A short-lived cache of verified app passwords, so a client that logs in often does not pay
an Argon2id verification each time (Dovecot's auth cache does the same for its passdb).

What is cached: that the password typed with one client certificate (its SHA-256 thumbprint)
for one mailbox matched the app password with id N, whose stored hash was H. What is kept is
a keyed hash of (mailbox, thumbprint, password) under a random key made at start-up and never
written anywhere, never the password itself.

What a hit skips: only the Argon2id computation. `mss.credentials.check_app_password` still
reads the mailbox's app passwords at each login and accepts a hit only if the row N exists
with the same hash H. So revoking or replacing a password (`mss mailbox app-password
--revoke`, from any process or node) takes effect at the next login, cache or not; the
certificate is validated (chain, CRL) before any password is looked at, so a revoked
certificate is refused too.

Risks, and why they are accepted:
- A process memory dump gives the keyed hashes and the key: an attacker can then test guesses
  at SHA-256 speed instead of Argon2id speed, for the passwords used in the last TTL seconds.
  App passwords are random (about 124 bits, `mss.credentials.generate_app_password`), so
  no guessing speed finds one; an attacker who can read the process memory can read the
  passwords as clients send them anyway.
- Bounded: at most `max_entries` (LRU) for at most `ttl_s` each; `ttl_s = 0` turns it off
  (`[abuse] app_password_cache_s`).
- A wrong password is never cached: failures always cost a full Argon2id check, and are
  counted by the throttle.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class _Entry:
    row_id: int
    stored_hash: str
    expires: float


class VerifiedPasswords:
    """(mailbox, certificate thumbprint, password) -> the app password row it matched."""

    def __init__(self, ttl_s: float, *, max_entries: int = 10_000, clock=time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def _slot(self, address: str, thumbprint: bytes, password: str) -> bytes:
        material = b"\0".join((address.encode(), thumbprint, password.encode()))
        return hmac.digest(self._key, material, hashlib.sha256)

    def get(self, address: str, thumbprint: bytes, password: str) -> tuple[int, str] | None:
        """(row id, stored hash) of a verification still fresh, else None."""
        if self.ttl_s <= 0:
            return None
        slot = self._slot(address, thumbprint, password)
        entry = self._entries.get(slot)
        if entry is None or entry.expires <= self._clock():
            if entry is not None:
                del self._entries[slot]
            self.misses += 1
            return None
        self._entries.move_to_end(slot)
        self.hits += 1
        return entry.row_id, entry.stored_hash

    def put(self, address: str, thumbprint: bytes, password: str, row_id: int, stored_hash: str) -> None:
        if self.ttl_s <= 0:
            return
        slot = self._slot(address, thumbprint, password)
        self._entries[slot] = _Entry(row_id, stored_hash, self._clock() + self.ttl_s)
        self._entries.move_to_end(slot)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, address: str, thumbprint: bytes, password: str) -> None:
        self._entries.pop(self._slot(address, thumbprint, password), None)

    def __len__(self) -> int:
        return len(self._entries)
