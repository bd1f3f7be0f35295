"""SASL PLAIN / LOGIN / OAUTHBEARER / XOAUTH2 on SMTP (AUTH, RFC 4954) and IMAP (AUTHENTICATE,
LOGIN) end to end (issue 3 section 4): a real `mss serve` over the demo deployment, real TLS with
the demo PKI's client certificates, e-CPS tokens minted by the demo issuer, app passwords
made as `mss mailbox app-password` makes them, and stock clients (smtplib, imaplib).

The parties: Claire and Paul (professionals, PER mailboxes, each with a PS card certificate),
the ORG mailbox they are both members of, and the practice software (APP mailbox) whose ORG
certificate carries professionals' tokens.
"""

from __future__ import annotations

import base64
import imaplib
import json
import re
import smtplib
import ssl
import time
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from support import new_app_password

pytestmark = pytest.mark.timeout(120)


# -- the deployment's parties, credentials and clients ------------------------------------------


def _der(path: Path) -> bytes:
    from crypto.validate import load_certificates

    return load_certificates(path.read_bytes())[0].public_bytes(Encoding.DER)


class World:
    def __init__(self, deployment, server) -> None:
        self.dep = deployment
        self.server = server
        self.claire = deployment.mailbox("PER", 0)
        self.paul = deployment.mailbox("PER", 1)
        self.org = deployment.mailbox("ORG")
        self.app = deployment.mailbox("APP")  # its tls_cert is the practice software's ORG certificate
        s = deployment.settings()
        from crypto.tokens import TokenIssuer

        self.issuer = TokenIssuer.load(s.path(s.tokens.signing_key), s.tokens.issuer)
        self.audience = s.tokens.audience
        self.passwords = {
            e["address"]: new_app_password(deployment, e["address"], label="sasl e2e")
            for e in (self.claire, self.paul, self.org)
        }

    def der(self, entry: dict) -> bytes:
        return _der(self.dep.path(entry, "tls_cert"))

    def token(self, who: dict, bound_to: dict, **kw) -> str:
        """An e-CPS token for professional `who`, bound to the certificate of `bound_to`."""
        kw.setdefault("audience", self.audience)
        return self.issuer.issue(who["idnat"], self.der(bound_to), **kw)

    def ctx(self, entry: dict | None) -> ssl.SSLContext:
        return self.dep.client_context(entry)

    def smtps(self, entry: dict | None) -> smtplib.SMTP_SSL:
        c = smtplib.SMTP_SSL(
            self.server.host,
            self.server.port("submissions"),
            local_hostname="client.test",
            context=self.ctx(entry),
            timeout=20,
        )
        c.ehlo()
        return c

    def smtp_starttls(self, entry: dict | None) -> smtplib.SMTP:
        c = smtplib.SMTP(self.server.host, self.server.port("submission"), local_hostname="client.test", timeout=20)
        c.ehlo()
        c.starttls(context=self.ctx(entry))
        c.ehlo()
        return c

    def imaps(self, entry: dict | None) -> imaplib.IMAP4_SSL:
        return imaplib.IMAP4_SSL(self.server.host, self.server.port("imaps"), ssl_context=self.ctx(entry), timeout=20)


@pytest.fixture(scope="module")
def world(deployment, server) -> World:
    return World(deployment, server)


def oauthbearer(token: str, authzid: str | None = None) -> str:
    gs2 = f"n,a={authzid}," if authzid else "n,,"
    return f"{gs2}\x01host=localhost\x01port=465\x01auth=Bearer {token}\x01\x01"


def xoauth2(user: str, token: str) -> str:
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


def plain(user: str, password: str, authzid: str = "") -> str:
    return f"{authzid}\0{user}\0{password}"


def smtp_sasl(message: str, *, error_reply: str = "\x01"):
    """An smtplib auth object: the message first (initial response, or the answer to the empty
    challenge), then the RFC 7628 dummy response to the error challenge."""
    sent = []

    def answer(challenge=None):
        sent.append(challenge)
        return message if len(sent) == 1 else error_reply

    return answer


def message(sender: str, to: str, subject: str) -> bytes:
    return (
        f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nDate: Mon, 02 Nov 2026 10:00:00 +0100\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@client.test>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nBonjour.\r\n"
    ).encode()


def stored(world: World, mailbox: str, folder: str = "INBOX") -> int:
    from support import count_messages

    return count_messages(world.dep, mailbox, folder)


# -- SMTP: what is offered when ------------------------------------------------------------------


def test_smtp_offers_passwords_and_tokens_only_after_tls(world):
    c = smtplib.SMTP(world.server.host, world.server.port("submission"), local_hostname="client.test", timeout=20)
    try:
        c.ehlo()
        assert not c.has_extn("auth")
        code, _ = c.docmd("AUTH", "PLAIN " + base64.b64encode(plain(world.claire["address"], "x").encode()).decode())
        assert code == 530  # STARTTLS first: the credentials are not even read
        c.starttls(context=world.ctx(world.claire))
        c.ehlo()
        assert c.esmtp_features["auth"].split() == ["EXTERNAL", "PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2"]
    finally:
        c.close()
    with world.smtps(world.claire) as c:
        assert c.esmtp_features["auth"].split() == ["EXTERNAL", "PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2"]


# -- SMTP: app passwords -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["login()", "PLAIN over STARTTLS", "LOGIN with initial response", "LOGIN without"])
def test_smtp_app_password_success(world, how):
    addr = world.claire["address"]
    password = world.passwords[addr]
    c = world.smtp_starttls(world.claire) if "STARTTLS" in how else world.smtps(world.claire)
    with c:
        if how == "login()":
            assert c.login(addr, password)[0] == 235
        elif how == "PLAIN over STARTTLS":
            assert c.auth("PLAIN", smtp_sasl(plain(addr, password, authzid=addr)))[0] == 235
        else:
            c.user, c.password = addr, password
            assert c.auth("LOGIN", c.auth_login, initial_response_ok=how.endswith("response"))[0] == 235
        assert c.mail(addr) == (250, b"2.1.0 Sender ok")


def test_smtp_app_password_of_an_org_mailbox_restricts_to_it(world):
    org = world.org["address"]
    with world.smtps(world.claire) as c:
        assert c.login(org, world.passwords[org])[0] == 235
        assert c.mail(world.claire["address"])[0] == 550  # the session acts for the ORG mailbox only
        c.rset()
        assert c.mail(org)[0] == 250


@pytest.mark.parametrize(
    "case",
    ["wrong password", "right password, another principal's mailbox", "authzid other than the user"],
)
def test_smtp_app_password_refusals(world, case):
    claire, paul = world.claire["address"], world.paul["address"]
    user, password, authzid = {
        "wrong password": (claire, "aaaaaa-bbbbbb-cccccc-dddddd", ""),
        "right password, another principal's mailbox": (paul, world.passwords[paul], ""),
        "authzid other than the user": (claire, world.passwords[claire], world.org["address"]),
    }[case]
    total = (stored(world, claire, "Sent"), stored(world, paul, "Sent"))
    with world.smtps(world.claire) as c:
        with pytest.raises(smtplib.SMTPAuthenticationError) as exc:
            c.auth("PLAIN", smtp_sasl(plain(user, password, authzid)))
        assert exc.value.smtp_code == 535 and exc.value.smtp_error.startswith(b"5.7.8 ")
        assert password.encode() not in exc.value.smtp_error
        # still the certificate's principal: Claire, not Paul
        assert c.mail(paul)[0] == 550
    assert (stored(world, claire, "Sent"), stored(world, paul, "Sent")) == total


def test_smtp_app_password_needs_a_client_certificate(world):
    addr = world.claire["address"]
    with world.smtps(None) as c:
        with pytest.raises(smtplib.SMTPAuthenticationError) as exc:
            c.login(addr, world.passwords[addr])
        assert exc.value.smtp_code == 535 and b"certificate" in exc.value.smtp_error


# -- SMTP: tokens --------------------------------------------------------------------------------


def test_smtp_oauthbearer_on_the_org_certificate_sends_as_the_professional(world):
    claire, paul = world.claire["address"], world.paul["address"]
    token = world.token(world.claire, bound_to=world.app)
    before = stored(world, paul)
    with world.smtps(world.app) as c:
        # The practice software's certificate alone does not act for Claire ...
        assert c.mail(claire)[0] == 550
        c.rset()
        # ... Claire's token on that connection does.
        assert c.auth("OAUTHBEARER", smtp_sasl(oauthbearer(token))) == (235, b"2.7.0 Authentication successful")
        assert c.mail(claire) == (250, b"2.1.0 Sender ok")
        assert c.rcpt(paul)[0] == 250
        assert c.data(message(claire, paul, "oauthbearer e2e"))[0] == 250
    assert stored(world, paul) == before + 1


def test_smtp_xoauth2_user_narrows_to_the_org_mailbox(world):
    org = world.org["address"]
    token = world.token(world.claire, bound_to=world.app)
    with world.smtp_starttls(world.app) as c:
        assert c.auth("XOAUTH2", smtp_sasl(xoauth2(org, token), error_reply=""))[0] == 235
        assert c.mail(world.claire["address"])[0] == 550
        c.rset()
        assert c.mail(org)[0] == 250


def _token_refusals():
    return {
        "expired": lambda w: w.token(w.claire, w.app, now=time.time() - 3600, ttl=300),
        "bound to another certificate": lambda w: w.token(w.claire, w.claire),
        "wrong audience": lambda w: w.token(w.claire, w.app, audience="not-mss"),
        "authzid of another professional": lambda w: w.token(w.claire, w.app),
    }


@pytest.mark.parametrize("mechanism", ["OAUTHBEARER", "XOAUTH2"])
@pytest.mark.parametrize("case", list(_token_refusals()))
def test_smtp_token_refusals(world, mechanism, case):
    token = _token_refusals()[case](world)
    authzid = world.paul["address"] if case.startswith("authzid") else None
    challenges: list[bytes] = []

    def answer(challenge=None):
        if challenge is None:
            return oauthbearer(token, authzid) if mechanism == "OAUTHBEARER" else xoauth2(authzid or "", token)
        challenges.append(challenge)
        return "\x01" if mechanism == "OAUTHBEARER" else ""

    with world.smtps(world.app) as c:
        with pytest.raises(smtplib.SMTPAuthenticationError) as exc:
            c.auth(mechanism, answer)
        assert exc.value.smtp_code == 535 and exc.value.smtp_error.startswith(b"5.7.8 ")
        assert len(challenges) == 1 and "status" in json.loads(challenges[0])  # RFC 7628 3.2.2
        assert c.mail(world.claire["address"])[0] == 550  # still only the ORG certificate
    assert token not in world.server.log_text()


def test_smtp_token_with_a_long_line_and_without_initial_response(world):
    # A token padded with claims: the AUTH line exceeds 512 octets (RFC 4954 4 allows 12288).
    token = world.token(world.claire, bound_to=world.app, extra={"padding": "x" * 3000})
    with world.smtps(world.app) as c:
        assert c.auth("OAUTHBEARER", smtp_sasl(oauthbearer(token)))[0] == 235
    with world.smtps(world.app) as c:
        assert c.auth("OAUTHBEARER", smtp_sasl(oauthbearer(token)), initial_response_ok=False)[0] == 235


def test_smtp_three_failures_close_the_connection(world):
    addr = world.claire["address"]
    with world.smtps(world.claire) as c:
        for _ in range(2):
            assert c.docmd("AUTH", "PLAIN " + base64.b64encode(plain(addr, "wrong-pass").encode()).decode())[0] == 535
        assert c.docmd("AUTH", "PLAIN " + base64.b64encode(plain(addr, "wrong-pass").encode()).decode())[0] == 535
        code, text = c.getreply()
        assert code == 421 and b"Too many failed authentication attempts" in text
        with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError)):
            c.noop()


# -- IMAP ----------------------------------------------------------------------------------------


def imap_authenticate(m: imaplib.IMAP4, mechanism: str, message: str, *, error_reply: bytes = b"\x01"):
    calls: list[bytes] = []

    def answer(challenge: bytes) -> bytes:
        calls.append(challenge)
        return message.encode() if len(calls) == 1 else error_reply

    try:
        return m.authenticate(mechanism, answer)
    finally:
        imap_authenticate.challenges = calls[1:]


def test_imap_capabilities_and_login_before_and_after_tls(world):
    m = imaplib.IMAP4(world.server.host, world.server.port("imap"), timeout=20)
    try:
        assert "LOGINDISABLED" in m.capabilities and not any(c.startswith("AUTH=") for c in m.capabilities)
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            m.login(world.claire["address"], world.passwords[world.claire["address"]])
        m.starttls(ssl_context=world.ctx(world.claire))
        caps = m.capabilities
        assert {"AUTH=EXTERNAL", "AUTH=PLAIN", "AUTH=OAUTHBEARER", "AUTH=XOAUTH2", "SASL-IR"} <= set(caps)
        assert "LOGINDISABLED" not in caps
        typ, _ = m.login(world.claire["address"], world.passwords[world.claire["address"]])
        assert typ == "OK"
        assert m.select("INBOX")[0] == "OK"
    finally:
        m.logout()


def test_imap_authenticate_plain(world):
    addr = world.org["address"]
    m = world.imaps(world.paul)  # Paul is a member of the ORG mailbox
    try:
        typ, data = imap_authenticate(m, "PLAIN", plain(addr, world.passwords[addr]))
        assert typ == "OK" and addr.encode() in data[0]
    finally:
        m.logout()


def test_imap_oauthbearer_on_the_org_certificate_reads_the_professionals_mailbox(world):
    claire = world.claire["address"]
    # Put something in Claire's INBOX to find: sent by Paul over his own certificate.
    subject = f"for claire {uuid.uuid4().hex[:8]}"
    with world.smtps(world.paul) as c:
        c.sendmail(world.paul["address"], [claire], message(world.paul["address"], claire, subject))
    m = world.imaps(world.app)
    try:
        typ, data = imap_authenticate(m, "OAUTHBEARER", oauthbearer(world.token(world.claire, world.app)))
        assert typ == "OK" and claire.encode() in data[0]
        assert m.select("INBOX")[0] == "OK"
        typ, found = m.search(None, "ALL")
        assert typ == "OK" and found[0].split()
    finally:
        m.logout()


def test_imap_xoauth2(world):
    org = world.org["address"]
    m = world.imaps(world.app)
    try:
        typ, data = imap_authenticate(m, "XOAUTH2", xoauth2(org, world.token(world.paul, world.app)))
        assert typ == "OK" and org.encode() in data[0]
    finally:
        m.logout()


IMAP_REFUSALS = {
    "app password wrong": ("PLAIN", lambda w: plain(w.claire["address"], "aaaaaa-bbbbbb-cccccc-dddddd"), "claire"),
    "app password of another principal's mailbox": (
        "PLAIN",
        lambda w: plain(w.paul["address"], w.passwords[w.paul["address"]]),
        "claire",
    ),
    "token expired": ("OAUTHBEARER", lambda w: oauthbearer(w.token(w.claire, w.app, now=time.time() - 3600)), "app"),
    "token bound to another certificate": ("OAUTHBEARER", lambda w: oauthbearer(w.token(w.claire, w.claire)), "app"),
    "token with wrong audience": ("XOAUTH2", lambda w: xoauth2("", w.token(w.claire, w.app, audience="other")), "app"),
    "token on a connection without certificate": ("OAUTHBEARER", lambda w: oauthbearer(w.token(w.claire, w.app)), None),
}


@pytest.mark.parametrize("case", list(IMAP_REFUSALS))
def test_imap_refusals(world, case):
    mechanism, make, conn = IMAP_REFUSALS[case]
    msg = make(world)
    m = world.imaps(getattr(world, conn) if conn else None)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            imap_authenticate(m, mechanism, msg, error_reply=b"\x01" if mechanism == "OAUTHBEARER" else b"")
        if mechanism != "PLAIN":
            assert len(imap_authenticate.challenges) == 1
            assert "status" in json.loads(imap_authenticate.challenges[0])
        assert m.state == "NONAUTH"
    finally:
        m.logout()


def test_imap_login_with_app_password_of_another_principal_is_refused(world):
    paul = world.paul["address"]
    m = world.imaps(world.claire)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            m.login(paul, world.passwords[paul])
    finally:
        m.logout()


def test_imap_three_failures_end_the_connection(world):
    addr = world.claire["address"]
    m = world.imaps(world.claire)
    for _ in range(3):
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            m.login(addr, "wrong-pass")
    # the NO was followed by BYE and the server closed the connection
    with pytest.raises(imaplib.IMAP4.abort):
        m.noop()
    m.shutdown()


def test_imap_authenticate_login(world):
    """AUTHENTICATE LOGIN (draft-murchison-sasl-login): offered after TLS like the other
    mechanisms, "Username:" then "Password:" (imaplib sends no initial response)."""
    addr = world.claire["address"]
    m = world.imaps(world.claire)
    try:
        assert "AUTH=LOGIN" in m.capabilities
        answers = {b"Username:": addr.encode(), b"Password:": world.passwords[addr].encode()}
        challenges: list[bytes] = []

        def answer(challenge: bytes) -> bytes:
            challenges.append(challenge)
            return answers[challenge]

        typ, data = m.authenticate("LOGIN", answer)
        assert typ == "OK" and addr.encode() in data[0]
        assert challenges == [b"Username:", b"Password:"]
        assert m.select("INBOX")[0] == "OK"
    finally:
        m.logout()


def test_imap_authenticate_login_refused(world):
    addr = world.claire["address"]
    m = world.imaps(world.claire)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            m.authenticate("LOGIN", lambda c: addr.encode() if c == b"Username:" else b"aaaaaa-bbbbbb-cccccc-dddddd")
        assert m.state == "NONAUTH"
    finally:
        m.logout()


FORGED_MARK = "forged-" + uuid.uuid4().hex[:8]


def test_authzid_with_crlf_and_nul_forges_no_log_line(world):
    """A card holder sends an authzid with CR/LF (and NUL) in base64 on IMAP and SMTP: the
    server's log file gets no line of the client's making and no NUL."""
    forged = f"{world.paul['address']}\r\n2026-11-02 10:00:00,000 INFO mss.auth auth ok {FORGED_MARK} id=1"
    m = world.imaps(world.claire)
    try:
        for authzid in (forged, forged + "\0"):
            with pytest.raises(imaplib.IMAP4.error):
                m.authenticate("EXTERNAL", lambda _, a=authzid: a.encode())
    finally:
        m.logout()
    with world.smtps(world.claire) as c:
        assert c.docmd("AUTH", "EXTERNAL " + base64.b64encode(forged.encode()).decode())[0] == 535
        user = base64.b64encode(f"\0{forged}\0x".encode()).decode()
        assert c.docmd("AUTH", "PLAIN " + user)[0] == 535

    text = ""
    for _ in range(50):  # the server writes its log asynchronously to the test
        text = world.server.log_text()
        if text.count(FORGED_MARK) >= 3:
            break
        time.sleep(0.1)
    assert "\x00" not in text
    assert not any(line.startswith("2026-11-02 10:00:00,000") for line in text.splitlines())
    marked = [line for line in text.splitlines() if FORGED_MARK in line]
    assert len(marked) >= 3
    for line in marked:
        # every such line is one of ours: a timestamp, a level, mss.auth; the CR/LF escaped
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (INFO|WARNING) mss\.auth auth ", line), line
        assert "\\r\\n" in line or "\\x0d\\x0a" in line, line


# -- what the server logs --------------------------------------------------------------------------


def test_no_password_or_token_in_the_server_log(world):
    # Runs last in this module: every password and token used above went past the server.
    text = world.server.log_text()
    for password in world.passwords.values():
        assert password not in text
    assert "Bearer" not in text and "eyJ" not in text  # no JWT (base64url JSON header) anywhere
    assert "mech=OAUTHBEARER" in text or "mechanism=OAUTHBEARER" in text
