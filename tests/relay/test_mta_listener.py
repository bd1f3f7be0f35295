"""The `mta` listener (smtp/mta.py): another operator's MTA, over real STARTTLS on
127.0.0.1 with SERV certificates of the deployment's test PKI, a real CRL and the
database whitelist, delivering into the real core (SQLite, and PostgreSQL when configured).

Every refusal the issue lists has its test (the reply, and the reason in the log), and a
good peer's message is stored. In process (tests/smtp/smtp_support.py) so that the log and
the core's calls can be read."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "smtp"))

from smtp_support import SmtpServer, client_context, message
from support import Deployment, drop_pg_database, make_deployment

from annuaire.whitelist import import_whitelist
from crypto.pki import TestPKI
from mss.config import resolve_database_url
from mss.db.engine import create_engine
from mss.demo import PEER_OPERATOR, whitelist_xml
from mss.records import MailDsn, RcptDsn

PEER = "peer.test"
THIRD = "third.test"  # another operator of the trust space: never relayed to by a peer


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclass
class Env:
    dep: Deployment
    server: SmtpServer
    good: Pair
    stranger: Pair
    revoked: Pair
    own: Pair
    ps: Pair

    @property
    def local(self) -> str:
        return self.dep.mailbox("PER", 0)["address"]


@pytest.fixture(scope="module")
def env(backend, tmp_path_factory) -> Env:
    tmp = tmp_path_factory.mktemp(f"mta-{backend}")
    dep, pg_name = make_deployment(tmp / "demo", backend)
    wl = tmp / "whitelist.xml"
    wl.write_bytes(whitelist_xml([dep.domain, PEER, THIRD]))

    async def load() -> None:
        engine = create_engine(resolve_database_url(dep.database_url, dep.directory))
        try:
            await import_whitelist(engine, wl)
        finally:
            await engine.dispose()

    asyncio.run(load())
    pki = TestPKI.load(dep.directory / "pki" / "ca")
    sid, org = PEER_OPERATOR.structure_id, PEER_OPERATOR.structure_name

    def write(name: str, issued) -> Pair:
        pair = Pair(tmp / f"{name}.crt", tmp / f"{name}.key")
        issued.write_pem(pair.cert, pair.key, with_chain=True)
        return pair

    revoked = pki.issue_serv(["mx.peer.test", PEER], sid, org)
    pki.revoke(revoked.cert)
    pki.write_crls()  # before the server starts: its validator loads them
    claire = dep.mailbox("PER", 0)
    server = SmtpServer(dep).start()
    env = Env(
        dep,
        server,
        good=write("good", pki.issue_serv(["mx.peer.test", PEER], sid, org)),
        stranger=write("stranger", pki.issue_serv(["mx.stranger.test", "stranger.test"], sid, org)),
        revoked=write("revoked", revoked),
        own=write("own", pki.issue_serv(["localhost", dep.domain], sid, org)),
        ps=Pair(dep.path(claire, "tls_cert"), dep.path(claire, "tls_key")),
    )
    yield env
    server.close()
    if pg_name:
        drop_pg_database(pg_name)


def peer_client(env: Env, pair: Pair | None) -> smtplib.SMTP:
    """EHLO, STARTTLS with `pair` as the client certificate (None: none), EHLO."""
    ctx = client_context(env.dep, pair.cert if pair else None, pair.key if pair else None)
    client = smtplib.SMTP(env.server.host, env.server.port("mta"), local_hostname="mx.peer.test", timeout=20)
    client.ehlo()
    client.starttls(context=ctx)
    client.ehlo()
    return client


def refused_at_mail(env: Env, pair: Pair | None, sender: str = f"claire@{PEER}") -> tuple[int, bytes, str]:
    mark = env.server.log_mark()
    client = peer_client(env, pair)
    try:
        code, text = client.mail(sender)
        rcpt = client.rcpt(env.local)
        assert rcpt[0] == 503  # no transaction was begun
    finally:
        client.quit()
    return code, text, env.server.log_since(mark)


# -- EHLO, TLS, AUTH ----------------------------------------------------------------------------


def test_ehlo_offers_starttls_then_the_mta_extensions_and_never_auth(env):
    client = smtplib.SMTP(env.server.host, env.server.port("mta"), local_hostname="mx.peer.test", timeout=20)
    try:
        code, text = client.ehlo()
        assert code == 250
        assert client.has_extn("starttls") and not client.has_extn("auth")
        code, text = client.mail(f"a@{PEER}")
        assert code == 530 and text.startswith(b"5.7.0")
        client.starttls(context=client_context(env.dep, env.good.cert, env.good.key))
        client.ehlo()
        for ext in ("size", "8bitmime", "smtputf8", "pipelining", "enhancedstatuscodes", "dsn"):
            assert client.has_extn(ext), ext
        assert not client.has_extn("auth") and not client.has_extn("starttls")
        code, text = client.docmd("AUTH", "EXTERNAL =")
        assert code == 502 and text.startswith(b"5.5.1")
    finally:
        client.quit()


def test_submission_ehlo_offers_dsn_too(env):
    client = smtplib.SMTP(env.server.host, env.server.port("submission"), local_hostname="client.test", timeout=20)
    try:
        client.ehlo()
        client.starttls(context=env.dep.client_context(env.dep.mailbox("PER", 0)))
        client.ehlo()
        assert client.has_extn("dsn") and client.has_extn("auth")
    finally:
        client.quit()


# -- refusals of the peer ------------------------------------------------------------------------


def test_no_certificate_is_refused_at_mail(env):
    code, text, log = refused_at_mail(env, None)
    assert code == 530 and text.startswith(b"5.7.0") and b"SERV certificate" in text
    assert "operator refused" in log and "reason=no_certificate" in log


def test_a_professional_card_is_refused(env):
    code, text, log = refused_at_mail(env, env.ps)
    assert code == 550 and text.startswith(b"5.7.1") and b"SERV certificate is required" in text
    assert "reason=not_serv" in log and "kind=PS" in log


def test_a_serv_certificate_of_a_domain_not_on_the_whitelist_is_refused(env):
    code, text, log = refused_at_mail(env, env.stranger, "x@stranger.test")
    assert code == 550 and text.startswith(b"5.7.1") and b"whitelist" in text
    assert "reason=domain_not_whitelisted" in log and "mx.stranger.test" in log


def test_a_revoked_serv_certificate_is_refused(env):
    code, text, log = refused_at_mail(env, env.revoked)
    assert code == 550 and text.startswith(b"5.7.1")
    assert b"revoked" not in text  # the reason is for the log only (DESIGN.md, Identity)
    assert "reason=revoked" in log


def test_a_certificate_naming_our_own_domain_is_no_peer(env):
    code, text, log = refused_at_mail(env, env.own, f"x@{env.dep.domain}")
    assert code == 550 and text.startswith(b"5.7.1")
    assert "reason=own_domain" in log


def test_mail_from_another_domain_than_the_certificates_is_refused(env):
    total = env.server.total_stored()
    client = peer_client(env, env.good)
    try:
        code, text = client.mail(f"claire@{THIRD}")
        assert code == 550 and text.startswith(b"5.7.1") and b"your certificate speaks for" in text
        code, text = client.mail(f"claire@{env.dep.domain}")  # our own users are not the peer's to send as
        assert code == 550 and text.startswith(b"5.7.1")
    finally:
        client.quit()
    assert env.server.total_stored() == total


def test_a_relay_attempt_to_a_third_domain_is_refused(env):
    client = peer_client(env, env.good)
    try:
        assert client.mail(f"claire@{PEER}")[0] == 250
        for target in (f"bob@{THIRD}", "bob@elsewhere.example"):
            code, text = client.rcpt(target)
            assert code == 550 and text.startswith(b"5.7.1"), (target, text)
        assert b"Relaying denied" in client.rcpt(f"bob@{THIRD}")[1]
        assert client.rcpt(env.local)[0] == 250  # our own mailbox, in the same transaction
    finally:
        client.quit()


def test_dsn_parameter_errors_are_501(env):
    client = peer_client(env, env.good)
    try:
        code, text = client.mail(f"claire@{PEER}", ["RET=BODY"])
        assert code == 501 and text.startswith(b"5.5.4")
        assert client.mail(f"claire@{PEER}", ["RET=HDRS"])[0] == 250
        code, text = client.rcpt(env.local, ["NOTIFY=NEVER,SUCCESS"])
        assert code == 501 and text.startswith(b"5.5.4")
        code, text = client.rcpt(env.local, ["ORCPT=rfc822;a+ZZ"])
        assert code == 501 and text.startswith(b"5.5.4")
    finally:
        client.quit()


def test_relay_disabled_greets_554(env):
    settings = env.dep.settings()
    settings.relay.enabled = False

    class Disabled(Deployment):
        def settings(self):  # type: ignore[override]
            return settings

    server = SmtpServer(Disabled(env.dep.directory, env.dep.doc, env.dep.database_url, env.dep.backend)).start()
    try:
        with pytest.raises(smtplib.SMTPConnectError) as err:
            smtplib.SMTP(server.host, server.port("mta"), local_hostname="mx.peer.test", timeout=10)
        assert err.value.smtp_code == 554 and err.value.smtp_error.startswith(b"5.7.1 ")
    finally:
        server.close()


# -- a good peer --------------------------------------------------------------------------------


def test_a_good_peer_delivers_to_a_local_mailbox_with_its_dsn_parameters(env):
    calls: list[dict] = []
    core = env.server.core
    begin = core.submission.begin

    def spying_begin(principal, **kw):
        tx = begin(principal, **kw)
        calls.append({"principal": principal, **kw})
        mail_from, add_recipient = tx.mail_from, tx.add_recipient

        def mail(address, dsn=None, size=None):
            calls[-1]["mail"] = (address, dsn)
            return mail_from(address, dsn, size)

        async def rcpt(address, dsn=None):
            calls[-1].setdefault("rcpt", []).append((address, dsn))
            return await add_recipient(address, dsn)

        tx.mail_from, tx.add_recipient = mail, rcpt
        return tx

    before = env.server.stored(env.local)
    with env.server.patched(core.submission, "begin", spying_begin):
        client = peer_client(env, env.good)
        try:
            assert client.mail(f"Claire@{PEER}", ["RET=HDRS", "ENVID=QQ+2B314159"])[0] == 250
            code, _ = client.rcpt(env.local, ["NOTIFY=FAILURE,DELAY", f"ORCPT=rfc822;{env.local.upper()}"])
            assert code == 250
            code, text = client.data(message(f"claire@{PEER}", env.local, subject="inter-operateurs"))
            assert code == 250, text
        finally:
            client.quit()
    assert env.server.stored(env.local) == before + 1
    (call,) = calls
    assert call["principal"].kind == "SERV" and call["principal"].domains == frozenset({PEER})
    assert call["mail"] == (f"Claire@{PEER}", MailDsn(ret="HDRS", envid="QQ+314159"))
    assert call["rcpt"] == [(env.local, RcptDsn(frozenset({"FAILURE", "DELAY"}), f"rfc822;{env.local.upper()}"))]
    trace = call["trace"]
    assert trace.helo == "mx.peer.test" and trace.peer.startswith("127.0.0.1:")
    assert trace.protocol == "ESMTPS"  # TLS, no SMTP AUTH (RFC 3848)
    assert trace.tls and trace.tls.startswith("TLSv1.")


def test_the_null_sender_of_a_dsn_is_accepted(env):
    before = env.server.stored(env.local)
    client = peer_client(env, env.good)
    try:
        assert client.mail("")[0] == 250  # MAIL FROM:<>
        assert client.rcpt(env.local)[0] == 250
        code, text = client.data(message(f"MAILER-DAEMON@{PEER}", env.local, subject="Delivery Status Notification"))
        assert code == 250, text
    finally:
        client.quit()
    assert env.server.stored(env.local) == before + 1


def test_the_null_sender_is_still_refused_on_submission(env):
    claire = env.dep.mailbox("PER", 0)
    client = smtplib.SMTP(env.server.host, env.server.port("submission"), local_hostname="client.test", timeout=20)
    try:
        client.ehlo()
        client.starttls(context=env.dep.client_context(claire))
        client.ehlo()
        code, _ = client.mail("")
        assert code == 553
    finally:
        client.quit()


def _raw_session(env: Env, body: bytes) -> bytes:
    """A peer session sending `body` as DATA exactly as given; the reply to the end of data."""
    ctx = client_context(env.dep, env.good.cert, env.good.key)
    with socket.create_connection((env.server.host, env.server.port("mta")), timeout=20) as raw:
        f = raw.makefile("rb")
        assert f.readline().startswith(b"220")

        def cmd(line: bytes) -> bytes:
            s.sendall(line + b"\r\n")
            reply = f.readline()
            while reply[3:4] == b"-":
                reply = f.readline()
            return reply

        s = raw
        assert cmd(b"EHLO mx.peer.test").startswith(b"250")
        assert cmd(b"STARTTLS").startswith(b"220")
        s = ctx.wrap_socket(raw, server_hostname="localhost")
        f = s.makefile("rb")
        assert cmd(b"EHLO mx.peer.test").startswith(b"250")
        assert cmd(f"MAIL FROM:<claire@{PEER}>".encode()).startswith(b"250")
        assert cmd(f"RCPT TO:<{env.local}>".encode()).startswith(b"250")
        assert cmd(b"DATA").startswith(b"354")
        s.sendall(body + b"\r\n.\r\n")
        reply = f.readline()
        s.sendall(b"QUIT\r\n")
        return reply


def test_a_smuggled_end_of_data_from_a_peer_is_refused_whole(env):
    before = env.server.stored(env.local)
    body = message(f"claire@{PEER}", env.local) + (
        b"\n.\nMAIL FROM:<ceo@" + PEER.encode() + b">\r\nRCPT TO:<" + env.local.encode() + b">\r\nDATA\r\nforged\r\n"
    )
    reply = _raw_session(env, body)
    assert reply.startswith(b"550 5.6.0"), reply
    assert env.server.stored(env.local) == before


def test_bare_lf_lines_from_a_peer_are_normalised(env):
    before = env.server.stored(env.local)
    body = message(f"claire@{PEER}", env.local, body="ligne un\nligne deux\r\n")
    reply = _raw_session(env, body)
    assert reply.startswith(b"250"), reply
    assert env.server.stored(env.local) == before + 1


def test_submission_hands_the_core_its_trace_and_dsn_parameters(env):
    """The submission listener too: TraceInfo with ESMTPSA (RFC 3848), RET/ENVID and
    NOTIFY/ORCPT as sent (xtext decoded, case kept)."""
    claire = env.dep.mailbox("PER", 0)
    paul = env.dep.mailbox("PER", 1)["address"]
    calls: list[dict] = []
    core = env.server.core
    begin = core.submission.begin

    def spying_begin(principal, **kw):
        tx = begin(principal, **kw)
        calls.append({"trace": kw.get("trace")})
        add_recipient = tx.add_recipient

        async def rcpt(address, dsn=None):
            calls[-1]["rcpt"] = dsn
            return await add_recipient(address, dsn)

        tx.add_recipient = rcpt
        return tx

    with env.server.patched(core.submission, "begin", spying_begin):
        client = smtplib.SMTP(env.server.host, env.server.port("submission"), local_hostname="poste.test", timeout=20)
        try:
            client.ehlo()
            client.starttls(context=env.dep.client_context(claire))
            client.ehlo()
            assert client.mail(claire["address"], ["RET=FULL", "ENVID=Dossier+2042"])[0] == 250
            assert client.rcpt(paul, ["NOTIFY=NEVER", "ORCPT=rfc822;Paul+2BX@Demo"])[0] == 250
            assert client.data(message(claire["address"], paul))[0] == 250
        finally:
            client.quit()
    (call,) = calls
    assert call["trace"].protocol == "ESMTPSA" and call["trace"].helo == "poste.test"
    assert call["rcpt"] == RcptDsn(frozenset(), "rfc822;Paul+X@Demo")


def _deliver(env: Env, raw: bytes) -> tuple[int, bytes]:
    client = peer_client(env, env.good)
    try:
        assert client.mail(f"claire@{PEER}")[0] == 250
        assert client.rcpt(env.local)[0] == 250
        return client.data(raw)
    finally:
        client.quit()


def test_a_forged_dkim_signature_is_refused_at_the_port_when_refusal_is_on(env):
    """The issue's refusal "a forged DKIM signature when refusal is on", on the wire: signed
    with a key that is not the one the peer's selector publishes -> 550 5.7.20, nothing stored;
    the same message with refusal off is delivered (recorded dkim=fail)."""
    from crypto import dkim as dk

    published, forger = dk.generate(PEER, "mss", "rsa"), dk.generate(PEER, "mss", "rsa")
    raw = message(f"claire@{PEER}", env.local, subject="forged")
    forged = dk.sign(raw, forger) + raw
    relay = env.server.core.settings.relay
    before = env.server.stored(env.local)
    with env.server.patched(relay, "dkim_keys", {published.record_name: published.txt_value()}):
        with env.server.patched(relay, "refuse_dkim_fail", True):
            code, text = _deliver(env, forged)
            assert (code, text[:6]) == (550, b"5.7.20"), text
            assert env.server.stored(env.local) == before
            # A good signature still passes with refusal on.
            code, text = _deliver(env, dk.sign(raw, published) + raw)
            assert code == 250, text
        code, text = _deliver(env, forged)
        assert code == 250, text
    assert env.server.stored(env.local) == before + 2


def test_a_mail_loop_is_refused_at_the_port(env):
    hops = env.server.core.settings.relay.max_hops
    trace = b"".join(
        b"Received: from h%d by h%d; Wed, 02 Dec 2026 10:00:00 +0000\r\n" % (i, i + 1) for i in range(hops)
    )
    before = env.server.stored(env.local)
    code, text = _deliver(env, trace + message(f"claire@{PEER}", env.local, subject="loop"))
    assert (code, text[:5]) == (554, b"5.4.6"), text
    assert env.server.stored(env.local) == before
