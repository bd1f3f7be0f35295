"""Per-mailbox application passwords, for clients that cannot do SASL EXTERNAL.

An app password is a second factor *next to* the client certificate, never instead of it: the
front end calls `Authenticator.from_app_password`, which validates the certificate first and
then checks the password of the mailbox named by the user name. Only an Argon2id hash (RFC 9106,
PHC string from argon2-cffi) is stored; the clear password is printed once by
`mss mailbox app-password` and never written anywhere.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from annuaire.local import normalize_address
from annuaire.model import AppPassword, LocalMailbox
from mss import audit
from mss.password_cache import VerifiedPasswords

# OWASP's Password Storage Cheat Sheet, Argon2id: m=19 MiB, t=2, p=1. RFC 9106's second
# option (t=3, 64 MiB, p=4, argon2-cffi's defaults, what older hashes used) cost about a second
# per login on a 2-core node; an app password is random (about 124 bits), so the hash guards
# against a stolen database, not a guessable secret. Older hashes are rehashed at their next
# successful login (`check_app_password`).
ARGON2_TIME_COST = 2
ARGON2_MEMORY_KIB = 19 * 1024
ARGON2_PARALLELISM = 1
_HASHER = PasswordHasher(time_cost=ARGON2_TIME_COST, memory_cost=ARGON2_MEMORY_KIB, parallelism=ARGON2_PARALLELISM)
#: Argon2id verifications done by this process (tests see the cache avoid them).
VERIFICATIONS = {"count": 0}
# 4 groups of 6 characters from an unambiguous alphabet (~124 bits): easy to type on a phone.
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
MAX_PER_MAILBOX = 20


def generate_app_password() -> str:
    return "-".join("".join(secrets.choice(_ALPHABET) for _ in range(6)) for _ in range(4))


def _normalise(password: str) -> str:
    # People retype them: ignore spaces and case (the alphabet is lower-case only).
    return password.replace(" ", "").strip().lower()


@dataclass(frozen=True)
class AppPasswordInfo:
    id: int
    address: str
    label: str
    created_at: datetime
    last_used_at: datetime | None


async def create_app_password(
    session: AsyncSession, address: str, *, label: str = "", actor: str | None = None, audited: bool = True
) -> tuple[int, str]:
    """Store the hash of a new password for `address`; returns (id, the clear password).
    Audited (`app_password.created`, by `actor`, default the `mss` user) in the same transaction,
    unless `audited` is false (pass `settings.audit.enabled`)."""
    address = normalize_address(address)
    if await session.get(LocalMailbox, address) is None:
        raise LookupError(f"no local mailbox {address}")
    count = len((await session.execute(select(AppPassword.id).where(AppPassword.address == address))).all())
    if count >= MAX_PER_MAILBOX:
        raise ValueError(f"{address} already has {count} app passwords; revoke some first")
    password = generate_app_password()
    hashed = await asyncio.to_thread(_HASHER.hash, _normalise(password))
    row = AppPassword(address=address, label=label, hash=hashed, created_at=datetime.now(UTC))
    session.add(row)
    await session.flush()
    if audited:
        await audit.append(
            session,
            [
                audit.Record.of(
                    "app_password.created", actor=actor or audit.cli_actor(), subject=address, id=row.id, label=label
                )
            ],
        )
    return row.id, password


async def list_app_passwords(session: AsyncSession, address: str | None = None) -> list[AppPasswordInfo]:
    q = select(AppPassword).order_by(AppPassword.address, AppPassword.id)
    if address is not None:
        q = q.where(AppPassword.address == normalize_address(address))
    return [
        AppPasswordInfo(r.id, r.address, r.label, r.created_at, r.last_used_at)
        for r in (await session.execute(q)).scalars()
    ]


async def revoke_app_passwords(
    session: AsyncSession,
    address: str,
    ids: list[int] | None = None,
    *,
    actor: str | None = None,
    audited: bool = True,
) -> int:
    """Delete the mailbox's app passwords `ids` (all without); how many. Audited
    (`app_password.revoked`, outcome `none` when nothing matched) in the same transaction,
    unless `audited` is false (pass `settings.audit.enabled`)."""
    address = normalize_address(address)
    q = delete(AppPassword).where(AppPassword.address == address)
    if ids:
        q = q.where(AppPassword.id.in_(ids))
    res = await session.execute(q)
    count = res.rowcount or 0
    if not audited:
        return count
    event = audit.Record.of(
        "app_password.revoked",
        actor=actor or audit.cli_actor(),
        subject=address,
        outcome="ok" if count else "none",
        ids=",".join(str(i) for i in ids) if ids else "all",
        count=count,
    )
    await audit.append(session, [event])
    return count


def _matches(hashes: list[tuple[int, str]], password: str) -> int | None:
    """Id of the matching hash. Every hash is tried so the time does not tell which matched."""
    found = None
    for row_id, hashed in hashes:
        VERIFICATIONS["count"] += 1
        try:
            if _HASHER.verify(hashed, password) and found is None:
                found = row_id
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            pass
    return found


def needs_rehash(hashed: str) -> bool:
    """Whether a stored hash was made with other parameters than today's."""
    try:
        return _HASHER.check_needs_rehash(hashed)
    except InvalidHashError:
        return False


@functools.cache
def _dummy_hash() -> str:
    """Verified when the mailbox has no app password, so that "none" and "wrong" cost the same."""
    return _HASHER.hash(generate_app_password())


async def check_app_password(
    sessions: async_sessionmaker,
    address: str,
    password: str,
    *,
    thumbprint: bytes = b"",
    cache: VerifiedPasswords | None = None,
) -> bool:
    """Whether `password` is one of the mailbox's app passwords.

    The mailbox's rows are read every time. With `cache` (`mss.password_cache`), a password
    verified with the same certificate `thumbprint` within the cache's TTL is accepted without
    Argon2id, but only while its row still exists with the same hash: a revoked or replaced
    password is refused at once, on every node. A hash made with older parameters is replaced
    by one with today's (`needs_rehash`) after a successful check."""
    address = normalize_address(address)
    if not password or len(password) > 256:
        return False
    typed = _normalise(password)
    async with sessions() as s:
        rows = (await s.execute(select(AppPassword.id, AppPassword.hash).where(AppPassword.address == address))).all()
    stored = {r[0]: r[1] for r in rows}
    cached = cache.get(address, thumbprint, typed) if cache is not None else None
    if cached is not None and stored.get(cached[0]) == cached[1]:
        found: int | None = cached[0]
    else:
        if cached is not None and cache is not None:
            cache.forget(address, thumbprint, typed)  # revoked or replaced since
        hashes = list(stored.items()) or [(-1, _dummy_hash())]
        found = await asyncio.to_thread(_matches, hashes, typed)
        if found is None or found < 0:
            return False
    values: dict[str, object] = {"last_used_at": datetime.now(UTC)}
    old_hash = stored[found]
    if needs_rehash(old_hash):
        values["hash"] = await asyncio.to_thread(_HASHER.hash, typed)
    async with sessions() as s, s.begin():
        # Only the row as it was read: a concurrent revocation or replacement wins.
        await s.execute(
            update(AppPassword).where(AppPassword.id == found, AppPassword.hash == old_hash).values(**values)
        )
    if cache is not None:
        cache.put(address, thumbprint, typed, found, str(values.get("hash", old_hash)))
    return True
