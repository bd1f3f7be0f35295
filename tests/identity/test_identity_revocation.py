"""A revocation reaches a running server without restart (issue 3 §1): `mss pki revoke` +
`mss pki crl`, then within `[tls] crl_refresh_s` the next connection is refused. And a stale CRL
fails closed unless configured otherwise."""

from __future__ import annotations

import asyncio
import importlib.util
import smtplib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from identity_support import run_mss

from crypto.pki import TestPKI
from crypto.validate import load_certificates
from mss.core import Core
from mss.errors import AuthenticationFailed

REFRESH_S = 1


def _fast_refresh(dep) -> None:
    text = dep.config.read_text()
    assert "crl_refresh_s = 60" in text
    dep.config.write_text(text.replace("crl_refresh_s = 60", f"crl_refresh_s = {REFRESH_S}"))


def _der(dep, entry) -> bytes:
    return load_certificates(dep.path(entry, "tls_cert").read_bytes())[0].public_bytes(serialization.Encoding.DER)


def _mail_from(dep, port: int, entry) -> int:
    """One SMTP submission session with the entry's card certificate; the reply code to MAIL."""
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.starttls(context=dep.client_context(entry))
        client.ehlo()
        code, _ = client.mail(entry["address"])
        client.rset()
        return code


def _revoke_and_publish(dep, entry) -> None:
    run_mss("pki", "revoke", str(dep.path(entry, "tls_cert")), "--reason", "key_compromise", "-c", str(dep.config))
    run_mss("pki", "crl", "-c", str(dep.config))


async def _wait_refused(check, timeout: float, what: str = "still accepted") -> float:
    """Poll `check()` until it is true (bounded): how long it took."""
    start = asyncio.get_running_loop().time()
    while True:
        if await check():
            return asyncio.get_running_loop().time() - start
        if asyncio.get_running_loop().time() - start > timeout:
            raise AssertionError(f"{what} after {timeout}s")
        await asyncio.sleep(0.2)


@pytest.mark.skipif(importlib.util.find_spec("smtp.server") is None, reason="SMTP front end not in the tree")
async def test_revocation_reaches_a_running_smtp_listener(fresh_deployment, caplog) -> None:
    from smtp.server import start, stop

    dep = fresh_deployment
    _fast_refresh(dep)
    core = await Core.open(dep.settings())
    try:
        servers = await start(core)
        try:
            port = servers["submission"].sockets[0].getsockname()[1]
            victim, bystander = dep.mailbox("PER", 0), dep.mailbox("PER", 1)
            assert await asyncio.to_thread(_mail_from, dep, port, victim) == 250
            assert await asyncio.to_thread(_mail_from, dep, port, bystander) == 250
            await asyncio.to_thread(_revoke_and_publish, dep, victim)

            async def refused() -> bool:
                return await asyncio.to_thread(_mail_from, dep, port, victim) == 530

            waited = await _wait_refused(refused, timeout=REFRESH_S + 10)
            assert waited <= REFRESH_S + 5
            # Refused for the revocation, not for any other certificate problem.
            assert "reason=revoked" in caplog.text
            with pytest.raises(AuthenticationFailed) as exc:
                await core.auth.from_certificate(_der(dep, victim))
            assert exc.value.reason == "revoked"
            # Everyone else is unaffected.
            assert await asyncio.to_thread(_mail_from, dep, port, bystander) == 250
        finally:
            await stop(servers)
    finally:
        await core.close()


async def test_revocation_reaches_a_running_core(fresh_deployment) -> None:
    dep = fresh_deployment
    _fast_refresh(dep)
    core = await Core.open(dep.settings())
    try:
        victim = dep.mailbox("PER", 0)
        der = _der(dep, victim)
        await core.auth.from_certificate(der)
        await asyncio.to_thread(_revoke_and_publish, dep, victim)

        async def refused() -> bool:
            try:
                await core.auth.from_certificate(der)
            except AuthenticationFailed as exc:
                assert exc.reason == "revoked"
                return True
            return False

        await _wait_refused(refused, timeout=REFRESH_S + 10)
    finally:
        await core.close()


async def test_stale_crl_fails_closed_unless_configured_open(fresh_deployment) -> None:
    dep = fresh_deployment
    _fast_refresh(dep)
    per = dep.mailbox("PER", 0)
    der = _der(dep, per)
    core = await Core.open(dep.settings())
    try:
        await core.auth.from_certificate(der)
        now = datetime.now(UTC)
        pki = TestPKI.load(dep.directory / "pki" / "ca")
        await asyncio.to_thread(
            pki.write_crls, this_update=now - timedelta(days=8), next_update=now - timedelta(days=1)
        )

        async def refused() -> bool:
            try:
                await core.auth.from_certificate(der)
            except AuthenticationFailed as exc:
                assert exc.reason == "crl_stale"
                return True
            return False

        await _wait_refused(refused, timeout=REFRESH_S + 10)
    finally:
        await core.close()
    settings = dep.settings()
    settings.tls.crl_fail_closed = False
    core = await Core.open(settings)
    try:
        principal = await core.auth.from_certificate(der)
        assert principal.identifier == per["idnat"]
    finally:
        await core.close()


async def test_unreadable_crl_keeps_the_previous_set(fresh_deployment, caplog) -> None:
    """A CRL file that turns unreadable must not wipe the revocations already loaded: the
    revoked certificate stays refused as `revoked` and everyone else stays accepted."""
    dep = fresh_deployment
    _fast_refresh(dep)
    victim, bystander = dep.mailbox("PER", 0), dep.mailbox("PER", 1)
    victim_der, bystander_der = _der(dep, victim), _der(dep, bystander)
    crl = dep.directory / "pki" / "ca" / "crl" / "personnes.crl"
    assert crl.is_file()
    good: bytes | None = None
    core = await Core.open(dep.settings())
    try:
        await core.auth.from_certificate(victim_der)
        # 1. The running core learns a revocation from the CRL file.
        await asyncio.to_thread(_revoke_and_publish, dep, victim)

        async def victim_revoked() -> bool:
            try:
                await core.auth.from_certificate(victim_der)
            except AuthenticationFailed as exc:
                assert exc.reason == "revoked"
                return True
            return False

        await _wait_refused(victim_revoked, timeout=REFRESH_S + 10)
        good = crl.read_bytes()
        # 2. The CRL file turns to garbage; wait until the refresher has tried (and failed)
        #    to read it at least once, as told by its log.
        caplog.clear()
        crl.write_bytes(b"garbage")

        async def refresh_failed() -> bool:
            return any("CRL refresh failed" in r.getMessage() and crl.name in r.getMessage() for r in caplog.records)

        await _wait_refused(refresh_failed, timeout=REFRESH_S + 10, what="no failed CRL refresh logged")
        # 3. The previous CRLs still apply: the revoked card is still refused for revocation
        #    (not "crl_stale", which would mean the set was dropped), the others still pass.
        with pytest.raises(AuthenticationFailed) as exc:
            await core.auth.from_certificate(victim_der)
        assert exc.value.reason == "revoked"
        principal = await core.auth.from_certificate(bystander_der)
        assert principal.identifier == bystander["idnat"]
    finally:
        if good is not None:
            crl.write_bytes(good)
        await core.close()


@pytest.mark.skipif(
    importlib.util.find_spec("imap.server") is None or importlib.util.find_spec("smtp.server") is None,
    reason="`mss serve` needs both front ends in the tree",
)
async def test_revocation_reaches_mss_serve_process(fresh_deployment) -> None:
    from support import start_server

    dep = fresh_deployment
    _fast_refresh(dep)
    srv = await asyncio.to_thread(start_server, dep)
    try:
        victim = dep.mailbox("PER", 0)
        port = srv.port("submission")
        assert await asyncio.to_thread(_mail_from, dep, port, victim) == 250
        await asyncio.to_thread(_revoke_and_publish, dep, victim)

        async def refused() -> bool:
            return await asyncio.to_thread(_mail_from, dep, port, victim) == 530

        await _wait_refused(refused, timeout=REFRESH_S + 10)
    finally:
        srv.stop()
