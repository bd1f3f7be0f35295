"""Interop with a real Postfix (Debian's package) as a peer operator, both directions.

The Postfix runs in a scratch folder (tests/relay/postfix.py) with a SERV certificate of the
MSS deployment's test PKI, its domain on MSS's whitelist; MSS routes that domain to Postfix's
smtpd, and Postfix's transport map routes MSS's domain to MSS's `mta` port. Both sides
require TLS and verify the other's certificate against the test CA.
"""

from __future__ import annotations

import asyncio
import re
import smtplib
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mail import build_message, openssl_decrypt, smtp_submission
from support import Deployment, ServerProcess, drop_pg_database, make_deployment, start_server, stored_messages

from annuaire.whitelist import import_whitelist
from crypto import dkim
from crypto.pki import TestPKI
from mss.config import resolve_database_url
from mss.db.engine import create_engine
from mss.demo import structure_id, update_relay_config, whitelist_xml
from relay.postfix import ScratchPostfix, free_port, postfix_available

pytestmark = [pytest.mark.skipif(postfix_available() is not None, reason=str(postfix_available()))]

PF_DOMAIN = "postfix-peer.mssante.test"
PF_USERS = ("alice", "bernard")


def _whitelist(dep: Deployment, domains: list[str]) -> None:
    path = dep.directory / "whitelist.xml"
    path.write_bytes(whitelist_xml(domains))

    async def go() -> None:
        engine = create_engine(resolve_database_url(dep.database_url, dep.directory))
        try:
            await import_whitelist(engine, path)
        finally:
            await engine.dispose()

    asyncio.run(go())


@pytest.fixture(scope="module")
def peers(backend, tmp_path_factory) -> Iterator[tuple[Deployment, ServerProcess, ScratchPostfix]]:
    tmp = tmp_path_factory.mktemp(f"postfix-{backend}")
    dep, pg_name = make_deployment(tmp / "mss", backend)
    pf_port = free_port()
    update_relay_config(
        dep.config,
        routes={PF_DOMAIN: f"localhost:{pf_port}"},
        retry_schedule_s=[1.0],
        poll_interval_s=0.5,
        connect_timeout_s=5,
    )
    _whitelist(dep, [dep.domain, PF_DOMAIN])
    pki = TestPKI.load(dep.directory / "pki" / "ca")
    serv = pki.issue_serv(
        ["localhost", PF_DOMAIN], structure_id("69000789"), "POSTFIX PEER", ip_addresses=["127.0.0.1"]
    )
    pf_dir = tmp / "postfix"
    pf_dir.mkdir()
    serv.write_pem(pf_dir / "serv.crt", pf_dir / "serv.key", with_chain=True)
    srv = start_server(dep)
    pf = ScratchPostfix(
        pf_dir,
        PF_DOMAIN,
        PF_USERS,
        pf_dir / "serv.crt",
        pf_dir / "serv.key",
        dep.trust_anchors,
        transports={dep.domain: f"localhost:{srv.port('mta')}"},
        port=pf_port,
    )
    try:
        pf.start()
        yield dep, srv, pf
    finally:
        pf.stop()
        srv.stop()
        if pg_name:
            drop_pg_database(pg_name)


def _wait_store(dep: Deployment, address: str, count: int, timeout: float = 30) -> list[bytes]:
    deadline = time.monotonic() + timeout
    got: list[bytes] = []
    while time.monotonic() < deadline:
        got = asyncio.run(stored_messages(dep, address))
        if len(got) >= count:
            return got
        time.sleep(0.3)
    raise AssertionError(f"{address}: {len(got)} message(s) after {timeout}s, expected {count}")


def _send_to_postfix(pf: ScratchPostfix, sender: str, to: list[str], raw: bytes) -> None:
    """A client injecting mail at Postfix's smtpd (STARTTLS is required there)."""
    ctx = ssl.create_default_context(cafile=str(pf.trust_anchors))
    with smtplib.SMTP("localhost", pf.port, timeout=15) as c:
        c.ehlo("client.test")
        code, _ = c.mail(sender)
        assert code == 530, "Postfix must require STARTTLS first"
        c.rset()
        c.starttls(context=ctx)
        c.ehlo("client.test")
        assert c.sendmail(sender, to, raw) == {}


def test_postfix_delivers_to_mss_over_mutual_tls(peers, tmp_path):
    dep, _, pf = peers
    claire = dep.mailbox("PER", 0)
    before = len(asyncio.run(stored_messages(dep, claire["address"])))
    canary = f"from-postfix-{time.time_ns()}"
    raw, _ = build_message(f"alice@{PF_DOMAIN}", [claire["address"]], "Depuis Postfix", canary)
    _send_to_postfix(pf, f"alice@{PF_DOMAIN}", [claire["address"]], raw)
    found = _wait_store(dep, claire["address"], before + 1)
    inner = openssl_decrypt(dep, claire, found[-1], tmp_path)
    assert canary.encode() in inner
    # Postfix does not sign: MSS records dkim=none (and delivers, RFC 8601 2.7.1).
    fields = re.findall(rb"^Authentication-Results:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*", inner, re.M | re.I)
    assert fields and fields[0].split(b":", 1)[1].split(b";")[0].strip() == dep.domain.encode()
    assert b"dkim=none" in fields[0]
    # Postfix's log: its smtp client verified MSS's certificate (secure level) and got 250.
    log = pf.log_text()
    assert re.search(r"Verified TLS connection established to localhost\[127\.0\.0\.1\]", log), log[-3000:]
    assert re.search(
        r"to=<" + re.escape(claire["address"]) + r">, relay=localhost\[127\.0\.0\.1\]:\d+.*status=sent", log
    )


def test_mss_delivers_to_postfix_signed_and_over_mutual_tls(peers):
    dep, srv, pf = peers
    paul = dep.mailbox("PER", 1)
    canary = f"from-mss-{time.time_ns()}"
    raw, msgid = build_message(paul["address"], [f"bernard@{PF_DOMAIN}"], "Vers Postfix", canary)
    with smtp_submission(srv, paul) as c:
        assert c.sendmail(paul["address"], [f"bernard@{PF_DOMAIN}"], raw) == {}
    [got] = pf.wait_for_mail("bernard", 1)
    data = got.as_bytes()
    assert canary.encode() in data  # no certificate of bernard known: clear inside mutual TLS
    assert got["Message-ID"] == msgid
    # DKIM-signed with the demo's key: verifies with its public record (the Maildir file has
    # LF line ends; the fields Postfix added on top are not signed).
    txt = dep.doc["dkim"]["txt"].encode()
    delivered = pf.maildir("bernard")[0].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert dkim.verify(delivered, dnsfunc=lambda name, timeout=5: txt)
    # Postfix's smtpd saw MSS's SERV certificate, verified by the test CA.
    log = pf.log_text()
    assert "Trusted TLS connection established from localhost[127.0.0.1]" in log
    assert re.search(
        rb'Client CN "localhost", Issuer "AC IGC-SANTE FORT ORGANISATIONS" \(verified OK\)', pf.maildir("bernard")[0]
    )


def test_an_unknown_postfix_user_returns_a_failure_dsn_to_the_mss_sender(peers, tmp_path):
    dep, srv, _ = peers
    claire = dep.mailbox("PER", 0)
    before = len(asyncio.run(stored_messages(dep, claire["address"])))
    raw, _ = build_message(claire["address"], [f"nobody@{PF_DOMAIN}"], "Inconnu", "Personne.")
    with smtp_submission(srv, claire) as c:
        assert c.sendmail(claire["address"], [f"nobody@{PF_DOMAIN}"], raw) == {}
    found = _wait_store(dep, claire["address"], before + 1)
    dsns = [
        m for m in (openssl_decrypt(dep, claire, x, tmp_path) for x in found) if b"nobody@" + PF_DOMAIN.encode() in m
    ]
    assert dsns and b"Status: 5.1.1" in dsns[-1] and b"report-type=delivery-status" in dsns[-1]


def test_postfix_reports_a_success_dsn_back_to_mss(peers, tmp_path):
    """NOTIFY=SUCCESS passed on by MSS (Postfix offers DSN): Postfix delivers and sends the
    success DSN (null sender) back to MSS's mta listener, where it lands in the sender's INBOX."""
    dep, srv, pf = peers
    paul = dep.mailbox("PER", 1)
    before = len(asyncio.run(stored_messages(dep, paul["address"])))
    raw, _ = build_message(paul["address"], [f"alice@{PF_DOMAIN}"], "Accuse", "Merci.")
    with smtp_submission(srv, paul) as c:
        refused = c.sendmail(
            paul["address"],
            [f"alice@{PF_DOMAIN}"],
            raw,
            mail_options=["ENVID=pf-envid-1", "RET=HDRS"],
            rcpt_options=["NOTIFY=SUCCESS"],
        )
        assert refused == {}
    pf.wait_for_mail("alice", 1)
    found = _wait_store(dep, paul["address"], before + 1)
    dsns = [m for m in (openssl_decrypt(dep, paul, x, tmp_path) for x in found) if b"pf-envid-1" in m]
    assert dsns and b"Action: delivered" in dsns[-1] and b"Status: 2.0.0" in dsns[-1]


def test_postfix_requires_a_client_certificate_chain_it_can_verify(peers, tmp_path):
    """The scratch Postfix itself: STARTTLS required, a wrong CA fails the handshake (so the
    interop above really is verified TLS, not opportunistic)."""
    _, _, pf = peers
    other = TestPKI.create(tmp_path / "other-ca")
    (tmp_path / "other.pem").write_bytes(other.trust_anchors_pem())
    ctx = ssl.create_default_context(cafile=str(tmp_path / "other.pem"))
    with smtplib.SMTP("localhost", pf.port, timeout=10) as c:
        c.ehlo("client.test")
        with pytest.raises(ssl.SSLCertVerificationError):
            c.starttls(context=ctx)
    assert Path(pf.config_directory / "main.cf").read_text().count("smtpd_tls_security_level = encrypt") == 1
