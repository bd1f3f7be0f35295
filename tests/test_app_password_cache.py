"""App passwords: OWASP's Argon2id parameters, rehash on login, and the verified-password cache
(`mss.credentials`, `mss.password_cache`), on each database backend.

Argon2id work is counted (`mss.credentials.VERIFICATIONS`), not timed: a cache hit is a login
that did no verification at all.
"""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from annuaire.local import LocalDirectory
from annuaire.model import AppPassword
from mss.credentials import (
    VERIFICATIONS,
    check_app_password,
    create_app_password,
    needs_rehash,
    revoke_app_passwords,
)
from mss.db.engine import create_engine, sessionmaker, upgrade
from mss.password_cache import VerifiedPasswords

ADDRESS = "claire.martin@hopital.test"
CERT_A, CERT_B = b"A" * 32, b"B" * 32


@pytest.fixture
async def sessions(empty_database_url):
    await upgrade(empty_database_url)
    engine = create_engine(empty_database_url)
    make = sessionmaker(engine)
    async with make() as s, s.begin():
        await LocalDirectory(s).add_mailbox(ADDRESS, "PER", idnat="810000000001")
    yield make
    await engine.dispose()


async def _new_password(sessions) -> tuple[int, str]:
    async with sessions() as s, s.begin():
        return await create_app_password(s, ADDRESS, audited=False)


async def _stored_hash(sessions, row_id: int) -> str:
    async with sessions() as s:
        return (await s.execute(select(AppPassword.hash).where(AppPassword.id == row_id))).scalar_one()


def _verifications() -> int:
    return VERIFICATIONS["count"]


async def test_new_hashes_use_owasp_parameters(sessions) -> None:
    row_id, _ = await _new_password(sessions)
    stored = await _stored_hash(sessions, row_id)
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert not needs_rehash(stored)


async def test_an_older_hash_is_replaced_at_the_next_successful_login(sessions) -> None:
    row_id, password = await _new_password(sessions)
    old = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4).hash(password)
    async with sessions() as s, s.begin():
        (await s.get(AppPassword, row_id)).hash = old
    assert needs_rehash(old)
    assert not await check_app_password(sessions, ADDRESS, "wrong-password")
    assert await _stored_hash(sessions, row_id) == old  # a failure changes nothing
    assert await check_app_password(sessions, ADDRESS, password)
    new = await _stored_hash(sessions, row_id)
    assert new != old and new.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert await check_app_password(sessions, ADDRESS, password)  # the new hash verifies


async def test_a_cache_hit_skips_argon2_but_not_the_database(sessions) -> None:
    _, password = await _new_password(sessions)
    cache = VerifiedPasswords(60)
    assert await check_app_password(sessions, ADDRESS, password, thumbprint=CERT_A, cache=cache)
    before = _verifications()
    assert await check_app_password(sessions, ADDRESS, password, thumbprint=CERT_A, cache=cache)
    assert _verifications() == before and cache.hits == 1
    # Another certificate is another entry: verified in full.
    assert await check_app_password(sessions, ADDRESS, password, thumbprint=CERT_B, cache=cache)
    assert _verifications() > before


async def test_a_wrong_password_is_never_cached(sessions) -> None:
    await _new_password(sessions)
    cache = VerifiedPasswords(60)
    for _ in range(2):
        before = _verifications()
        assert not await check_app_password(sessions, ADDRESS, "not-it", thumbprint=CERT_A, cache=cache)
        assert _verifications() > before  # every failure pays the full check
    assert len(cache) == 0


async def test_a_revoked_password_is_refused_at_once_despite_the_cache(sessions) -> None:
    _, password = await _new_password(sessions)
    cache = VerifiedPasswords(60)
    assert await check_app_password(sessions, ADDRESS, password, thumbprint=CERT_A, cache=cache)
    async with sessions() as s, s.begin():
        assert await revoke_app_passwords(s, ADDRESS, audited=False) == 1
    assert not await check_app_password(sessions, ADDRESS, password, thumbprint=CERT_A, cache=cache)
    assert len(cache) == 0


async def test_entries_expire_and_the_cache_is_bounded() -> None:
    now = [1000.0]
    cache = VerifiedPasswords(60, max_entries=2, clock=lambda: now[0])
    cache.put(ADDRESS, CERT_A, "p1", 1, "h1")
    assert cache.get(ADDRESS, CERT_A, "p1") == (1, "h1")
    assert cache.get(ADDRESS, CERT_A, "p2") is None and cache.get(ADDRESS, CERT_B, "p1") is None
    now[0] += 61
    assert cache.get(ADDRESS, CERT_A, "p1") is None and len(cache) == 0
    for i in range(3):
        cache.put(ADDRESS, CERT_A, f"p{i}", i, "h")
    assert len(cache) == 2 and cache.get(ADDRESS, CERT_A, "p0") is None  # least recently used went
    off = VerifiedPasswords(0)
    off.put(ADDRESS, CERT_A, "p", 1, "h")
    assert off.get(ADDRESS, CERT_A, "p") is None and len(off) == 0
