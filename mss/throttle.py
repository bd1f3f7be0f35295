"""Failure counters with exponential back-off, in the database so that every node sees them.

OWASP (Authentication Cheat Sheet, "Login Throttling"; PORTAL.md 5.7): count failures per
account, not only per client address, and slow guessing down with an exponential back-off
rather than lock the account: a lockout is a denial of service anyone who knows a login can
cause. Hence: a number of free failures under each key, then a wait that doubles from 1 s
up to `max_backoff_s`, never more; a success resets the keys.

Keys are arbitrary strings chosen by the caller, in families named by their prefix, each
with its own allowance (`Allowance`: free failures, then the back-off's cap), read from the
settings by `allowances`:

- the portal (`[portal]`): `account:<INS>` (the account whoever guesses: many free failures),
  `account:<INS>|<network>` (this account from this client network), `totp:<INS>` and
  `address:<network>`;
- SMTP and IMAP authentication (`[abuse]`, `mss.auth.AuthThrottle`): `auth-mailbox:<address>`
  (the mailbox whoever guesses: many free failures and a short cap, so nobody can keep its
  owner out for long), `auth-mailbox:<address>|<network>` (the guesser's own key) and
  `auth-address:<network>`.

A key belongs to the first family whose prefix it starts with and whose `pair` matches
(whether a `|` follows the prefix); the last family (prefix "") takes the rest. A key whose
last failure is older than `FORGET_AFTER` starts again from zero, and such rows are purged, so
random logins cannot grow the table without bound.

`attempt` reserves the attempt *before* the secret is checked, atomically (row locks on
PostgreSQL, SQLite's single writer), so parallel requests cannot all pass the check before
any failure is written: at most one attempt more than the free ones goes through per
back-off window, however many are sent at once. A success gives the reservation back
(`succeeded`), and deletes the keys it is told to reset.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import case, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.dml import Insert

from crypto.dates import as_utc
from mss.config import Settings
from mss.db.models import ThrottleCounter

FORGET_AFTER = timedelta(hours=24)
ADDRESS_PREFIX = "address:"
ACCOUNT_PREFIX = "account:"
AUTH_ADDRESS_PREFIX = "auth-address:"
AUTH_MAILBOX_PREFIX = "auth-mailbox:"
_PREFIXES = (AUTH_ADDRESS_PREFIX, AUTH_MAILBOX_PREFIX, ADDRESS_PREFIX, ACCOUNT_PREFIX)
_MAX_KEY = 255
_MAX_KEYS = 8  # a request names a handful of keys, never more
_PURGE_BATCH = 500


def utc_now() -> datetime:
    """The throttle's clock: one name, so that a test can hold time still (a back-off window
    of 1 s must not run out between two attempts of a slow test machine)."""
    return datetime.now(UTC)


def backoff_s(failures: int, free: int, cap: int) -> int:
    """Seconds to wait after `failures` failures: 0 for the free ones, then 1, 2, 4... s,
    at most `cap`."""
    over = failures - free
    if over <= 0:
        return 0
    return min(cap, 2 ** min(over - 1, 30))


@dataclass(frozen=True)
class Allowance:
    """A key family: keys starting with `prefix` (and, when `pair` is set, with or without a
    `|` after it) get `free` failures, then a back-off doubling from 1 s up to `max_backoff_s`."""

    prefix: str
    free: int
    max_backoff_s: int
    pair: bool | None = None

    def matches(self, key: str) -> bool:
        if not key.startswith(self.prefix):
            return False
        return self.pair is None or ("|" in key[len(self.prefix) :]) == self.pair


def allowances(settings: Settings) -> tuple[Allowance, ...]:
    """Every family's allowance, from `[abuse]` (SMTP and IMAP) and `[portal]` (the portal)."""
    a, p = settings.abuse, settings.portal
    return (
        Allowance(AUTH_ADDRESS_PREFIX, a.auth_address_free_failures, a.auth_address_max_backoff_s),
        Allowance(AUTH_MAILBOX_PREFIX, a.auth_free_failures, a.auth_max_backoff_s, pair=True),
        Allowance(AUTH_MAILBOX_PREFIX, a.auth_mailbox_free_failures, a.auth_mailbox_max_backoff_s, pair=False),
        Allowance(ADDRESS_PREFIX, p.address_free_failures, p.max_backoff_s),
        Allowance(ACCOUNT_PREFIX, p.account_wide_free_failures, p.max_backoff_s, pair=False),
        Allowance("", p.account_free_failures, p.max_backoff_s),  # account:..|net, totp:
    )


def stored_key(key: str) -> str:
    """The key as stored: long keys (a pasted novel as a login) and keys with control
    characters (a NUL, which PostgreSQL text refuses) become a hash, keeping their family's
    prefix and a final `|` for a pair key, so that they keep their allowance."""
    if len(key) <= _MAX_KEY and key.isprintable():
        return key
    prefix = next((p for p in _PREFIXES if key.startswith(p)), "")
    pair = "|" if "|" in key[len(prefix) :] else ""
    return prefix + "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest() + pair


def _keys(keys: Sequence[str]) -> list[str]:
    return sorted({stored_key(k) for k in list(keys)[:_MAX_KEYS]})


def insert_for(s: AsyncSession) -> Callable[..., Insert]:
    """The dialect's INSERT with ON CONFLICT (SQLite and PostgreSQL spell it the same)."""
    return pg_insert if s.bind.dialect.name == "postgresql" else sqlite_insert


async def _locked(s: AsyncSession, names: Sequence[str]) -> Sequence[ThrottleCounter]:
    """The counters, locked for this transaction: on PostgreSQL row locks taken in key order
    (every caller locks all its keys this way before it writes any, so two requests never
    wait on each other in a cycle); on SQLite a write first, which takes the database's one
    write lock (a plain SELECT would leave a read-modify-write race)."""
    names = sorted(names)
    if s.bind.dialect.name != "postgresql":
        touch = update(ThrottleCounter).where(ThrottleCounter.key.in_(names))
        await s.execute(touch.values(failures=ThrottleCounter.failures))
    query = select(ThrottleCounter).where(ThrottleCounter.key.in_(names)).order_by(ThrottleCounter.key)
    return (await s.execute(query.with_for_update())).scalars().all()


class Throttle:
    """`throttle_wait` / `throttle_failed` / `throttle_succeeded` of `PatientPortal`, and the
    counters of `mss.auth.AuthThrottle`."""

    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._settings = settings
        self._sessions = sessions

    def allowance(self, key: str) -> Allowance:
        """The family `key` (as stored) belongs to (read each time: settings may change)."""
        return next(a for a in allowances(self._settings) if a.matches(key))

    def _backoff(self, key: str, failures: int) -> int:
        a = self.allowance(key)
        return backoff_s(failures, a.free, a.max_backoff_s)

    async def attempt(self, keys: Sequence[str], *, now: datetime | None = None) -> float:
        """Reserve one attempt under every key: 0 when it may go on (it already counts as a
        failure until `succeeded` gives it back), else the seconds to wait (nothing counted)."""
        names = _keys(keys)
        if not names:
            return 0.0
        now = now or utc_now()
        cutoff = now - FORGET_AFTER
        async with self._sessions() as s, s.begin():
            insert = insert_for(s)
            for key in names:  # sorted: every node locks in the same order
                await s.execute(
                    insert(ThrottleCounter)
                    .values(key=key, failures=0, last_failure_at=now, blocked_until=None)
                    .on_conflict_do_nothing(index_elements=[ThrottleCounter.key])
                )
            rows = await _locked(s, names)
            waits = [
                (as_utc(r.blocked_until) - now).total_seconds()
                for r in rows
                if r.blocked_until is not None and as_utc(r.blocked_until) > now
            ]
            if waits:
                # Refused: nothing is counted, and the rows this call made go again (a
                # refused flood must not grow the table).
                fresh = [r.key for r in rows if r.failures == 0 and r.blocked_until is None]
                if fresh:
                    await s.execute(delete(ThrottleCounter).where(ThrottleCounter.key.in_(fresh)))
                await self._purge(s, cutoff)
                return max(waits)
            for r in rows:
                r.failures = 1 if as_utc(r.last_failure_at) < cutoff else r.failures + 1
                r.last_failure_at = now
                wait = self._backoff(r.key, r.failures)
                r.blocked_until = now + timedelta(seconds=wait) if wait else None
            await self._purge(s, cutoff)
        return 0.0

    @staticmethod
    async def _purge(s: AsyncSession, cutoff: datetime) -> None:
        """Forget counters whose last failure is older than `FORGET_AFTER`, a bounded batch at
        a time, skipping rows another transaction holds (PostgreSQL): random logins cannot
        pile up, and the purge never waits on, nor deadlocks with, a live attempt."""
        old = (
            select(ThrottleCounter.key)
            .where(ThrottleCounter.last_failure_at < cutoff)
            .limit(_PURGE_BATCH)
            .with_for_update(skip_locked=True)
        )
        await s.execute(delete(ThrottleCounter).where(ThrottleCounter.key.in_(old.scalar_subquery())))

    async def wait(self, keys: Sequence[str], *, now: datetime | None = None) -> float:
        """Seconds before another attempt under these keys is allowed (0: now)."""
        names = _keys(keys)
        if not names:
            return 0.0
        now = now or utc_now()
        async with self._sessions() as s:
            rows = (
                await s.execute(select(ThrottleCounter.blocked_until).where(ThrottleCounter.key.in_(names)))
            ).scalars()
            waits = [(as_utc(b) - now).total_seconds() for b in rows if b is not None]
        return max([0.0, *waits])

    async def failed(self, keys: Sequence[str], *, now: datetime | None = None) -> None:
        """Count one failure under each key; its back-off starts now. Atomic per key (an
        upsert that increments in SQL), so concurrent failures on two nodes both count."""
        names = _keys(keys)
        now = now or utc_now()
        cutoff = now - FORGET_AFTER
        async with self._sessions() as s, s.begin():
            insert = insert_for(s)
            for key in names:
                stmt = insert(ThrottleCounter).values(key=key, failures=1, last_failure_at=now, blocked_until=None)
                stmt = stmt.on_conflict_do_update(
                    index_elements=[ThrottleCounter.key],
                    set_={
                        "failures": case(
                            (ThrottleCounter.last_failure_at < cutoff, 1), else_=ThrottleCounter.failures + 1
                        ),
                        "last_failure_at": now,
                    },
                ).returning(ThrottleCounter.failures)
                failures = (await s.execute(stmt)).scalar_one()
                wait = self._backoff(key, failures)
                if wait:
                    await s.execute(
                        update(ThrottleCounter)
                        .where(ThrottleCounter.key == key)
                        .values(blocked_until=now + timedelta(seconds=wait))
                    )
            # Forgotten counters go, so random logins do not pile up.
            await s.execute(delete(ThrottleCounter).where(ThrottleCounter.last_failure_at < cutoff))

    async def succeeded(self, keys: Sequence[str], reset: Sequence[str] = ()) -> None:
        """The attempt reserved under `keys` succeeded: give the reservation back, and forget
        the `reset` keys altogether. Account-wide and address keys are only refunded, never
        reset, so a guesser cannot clear them by signing in to a space of their own."""
        gone = _keys(reset)
        names = sorted(set(_keys(keys)) | set(gone))
        if not names:
            return
        async with self._sessions() as s, s.begin():
            # Every key locked first, in order, then written: the same order as `attempt`.
            rows = await _locked(s, names)
            if gone:
                await s.execute(delete(ThrottleCounter).where(ThrottleCounter.key.in_(gone)))
            for r in rows:
                if r.key in gone:
                    continue
                r.failures = max(0, r.failures - 1)
                # The attempt was allowed, so any earlier wait was over; the one its own
                # reservation may have started goes with it.
                r.blocked_until = None
