"""RFC details of message acceptance, through real clients on a running `mss serve`
(issue 13, "RFC details"): postmaster (RFC 5321 4.5.1), NUL refused (RFC 5322 2.2, 3.5),
bare-LF content normalised or refused (RFC 5321 2.3.8) with the end of data kept strict,
an already-encrypted message keeping only routing fields in clear, and Date and Message-ID
added at submission (RFC 6409 8.3, 8.4). The full-disk replies are in test_storage_full.py.

Every test asserts what a client sees (reply codes) and what was stored (the bytes, opened
with `openssl cms`); every refusal checks that nothing was stored.
"""

from __future__ import annotations

import asyncio
import imaplib
import re
import shutil
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import pytest
from mail import build_message, find_stored, openssl_decrypt, smtp_submission
from support import start_server, stored_messages

from crypto.rfc5322 import scan


@pytest.fixture
def claire(deployment):
    return deployment.mailbox("PER", 0)


@pytest.fixture
def paul(deployment):
    return deployment.mailbox("PER", 1)


@pytest.fixture
def org(deployment):
    return deployment.mailbox("ORG", 0)


def stored(deployment, address: str, folder: str = "INBOX") -> list[bytes]:
    return asyncio.run(stored_messages(deployment, address, folder))


def header_of(message: bytes) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for f in scan(message).fields:
        fields.setdefault(f.key, []).append(f.unfolded)
    return fields


def send_raw_data(client, sender: str, rcpt: str, payload: bytes) -> tuple[int, bytes]:
    """MAIL, RCPT, DATA, then `payload` exactly as given (smtplib would repair line ends)."""
    assert client.mail(sender)[0] == 250
    assert client.rcpt(rcpt)[0] == 250
    assert client.docmd("DATA")[0] == 354
    client.send(payload)
    return client.getreply()


def imap_connect(server, deployment, entry) -> imaplib.IMAP4_SSL:
    m = imaplib.IMAP4_SSL(server.host, server.port("imaps"), ssl_context=deployment.client_context(entry), timeout=20)
    m.authenticate("EXTERNAL", lambda _: b"")
    return m


# -- postmaster (RFC 5321 4.5.1) ------------------------------------------------------------


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "smtps"])
@pytest.mark.parametrize("form", ["postmaster", "POSTMASTER", "PostMaster@{domain}", "postmaster@{DOMAIN}"])
def test_postmaster_is_accepted_and_stored_encrypted_for_the_postmaster_mailbox(
    server, deployment, claire, paul, org, tmp_path, form, implicit
):
    """`RCPT TO:<postmaster>` (no domain, any case) and postmaster@<own domain> land in the
    configured postmaster mailbox (the demo's ORG mailbox), encrypted to every member's key."""
    rcpt = form.format(domain=deployment.domain, DOMAIN=deployment.domain.upper())
    raw, msgid = build_message(claire["address"], [f"postmaster@{deployment.domain}"], "pm", "Bonjour postmaster.")
    with smtp_submission(server, claire, implicit=implicit) as c:
        assert c.mail(claire["address"]) == (250, b"2.1.0 Sender ok")
        assert c.rcpt(rcpt) == (250, b"2.1.5 Recipient ok")
        code, _ = c.data(raw)
        assert code == 250
    message = find_stored(stored(deployment, org["address"]), msgid)
    assert b"Bonjour postmaster" not in message
    for member in (claire, paul):  # an ORG mailbox: readable by each member, with their own key
        assert b"Bonjour postmaster." in openssl_decrypt(deployment, member, message, tmp_path)


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is a Debian package `make test` installs")
def test_swaks_to_bare_postmaster(server, deployment, claire, org, tmp_path):
    marker = uuid.uuid4().hex
    before = len(stored(deployment, org["address"]))
    done = subprocess.run(
        [
            "swaks", "--server", f"{server.host}:{server.port('submission')}", "-tls", "--tls-verify",
            "--tls-ca-path", str(deployment.trust_anchors),
            "--tls-cert", str(deployment.path(claire, "tls_cert")), "--tls-key", str(deployment.path(claire, "tls_key")),
            "--from", claire["address"], "--to", "postmaster", "--body", f"swaks {marker}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "<~  250 2.1.5 Recipient ok" in done.stdout
    messages = stored(deployment, org["address"])
    assert len(messages) == before + 1
    assert f"swaks {marker}".encode() in openssl_decrypt(deployment, claire, messages[-1], tmp_path)


def test_postmaster_of_another_domain_is_not_ours(server, deployment, claire):
    with smtp_submission(server, claire) as c:
        assert c.mail(claire["address"])[0] == 250
        code, text = c.rcpt("postmaster@elsewhere.example")
        assert (code, text[:6]) == (550, b"5.7.1 ")


def test_bare_postmaster_is_no_sender(server, deployment, claire):
    """Only RCPT takes the dotless form; MAIL FROM:<postmaster> stays a syntax error."""
    with smtp_submission(server, claire) as c:
        code, text = c.mail("postmaster")
        assert (code, text[:6]) == (553, b"5.1.7 ")


# -- NUL (RFC 5322 2.2, 3.5) ---------------------------------------------------------------------


@pytest.mark.parametrize("where", ["body", "header"])
def test_nul_in_smtp_data_is_550_5_6_0_and_nothing_is_stored(server, deployment, claire, paul, where):
    extra = "X-Note: a\x00b\r\n" if where == "header" else ""
    body = "line with a NUL \x00 inside" if where == "body" else "clean"
    raw, _ = build_message(claire["address"], [paul["address"]], "nul", body, extra=extra)
    before = len(stored(deployment, paul["address"]))
    with smtp_submission(server, claire) as c:
        code, text = send_raw_data(c, claire["address"], paul["address"], raw + b".\r\n")
        assert (code, text[:6]) == (550, b"5.6.0 "), text
        assert b"NUL" in text
        assert c.noop()[0] == 250  # the session goes on
    assert len(stored(deployment, paul["address"])) == before


def test_nul_in_imap_append_is_no_and_nothing_is_stored(server, deployment, claire):
    raw, _ = build_message(claire["address"], [claire["address"]], "nul", "a NUL \x00 here")
    before = len(stored(deployment, claire["address"], "Drafts"))
    m = imap_connect(server, deployment, claire)
    try:
        typ, data = m.append("Drafts", None, None, raw)
        assert typ == "NO" and b"[CANNOT]" in data[0] and b"NUL" in data[0], data
    finally:
        m.logout()
    assert len(stored(deployment, claire["address"], "Drafts")) == before


# -- bare LF content (RFC 5321 2.3.8) -------------------------------------------------------------


def lf_message(sender: str, to: str, msgid: str, lines: list[str]) -> bytes:
    """What practice software writes: every line ended by LF alone."""
    head = [f"From: <{sender}>", f"To: <{to}>", "Subject: lf", f"Message-ID: {msgid}", "MIME-Version: 1.0"]
    return ("\n".join([*head, "Content-Type: text/plain; charset=utf-8", "", *lines]) + "\n").encode()


def test_bare_lf_content_is_normalised_to_crlf(server, deployment, claire, paul, tmp_path):
    """LF-only lines (many, so the content is longer than one 1000-octet line) are stored as
    CRLF lines, dot-stuffed LF lines are un-stuffed, and DATA still ends at <CRLF>.<CRLF>."""
    msgid = f"<{uuid.uuid4().hex}@client.test>"
    lines = [f"ligne {i:03d} " + "x" * 60 for i in range(100)] + ["..point au début", "fin"]
    payload = lf_message(claire["address"], paul["address"], msgid, lines)
    assert len(payload) > 5000 and b"\r" not in payload
    with smtp_submission(server, claire) as c:
        code, text = send_raw_data(c, claire["address"], paul["address"], payload + b"\r\n.\r\n")
        assert (code, text) == (250, b"2.0.0 Ok: stored")
    inner = openssl_decrypt(deployment, paul, find_stored(stored(deployment, paul["address"]), msgid), tmp_path)
    section = scan(inner)
    body = section.body
    # The client's own header is inside the envelope with CRLF line ends, its lines intact.
    assert b"Subject: lf\r\n" in inner and inner.count(b"\r\n") == inner.count(b"\n")
    for i in (0, 57, 99):
        assert f"ligne {i:03d} ".encode() + b"x" * 60 + b"\r\n" in body
    assert b"\r\n.point au d\xc3\xa9but\r\nfin\r\n" in body


@pytest.mark.parametrize("smuggle", [b"\n.\n", b"\n.\r\n", b"\r\n.\n"], ids=["LF.LF", "LF.CRLF", "CRLF.LF"])
def test_a_lone_dot_beside_a_bare_lf_never_ends_data_and_is_refused_whole(server, deployment, claire, paul, smuggle):
    """Normalising bare LF does not make `\\n.\\n` an end of data: the smuggled transaction is
    never run, and the message is refused whole (one reply, then our NOOP's)."""
    before = len(stored(deployment, paul["address"]))
    first = lf_message(claire["address"], paul["address"], "<first@client.test>", ["first"])
    inner = f"MAIL FROM:<{claire['address']}>\r\nRCPT TO:<{paul['address']}>\r\nDATA\r\n".encode() + lf_message(
        claire["address"], paul["address"], "<smuggled@client.test>", ["smuggled"]
    )
    with smtp_submission(server, claire) as c:
        code, text = send_raw_data(
            c, claire["address"], paul["address"], first.rstrip(b"\n") + smuggle + inner + b"\r\n.\r\n"
        )
        assert (code, text[:6]) == (550, b"5.6.0 "), text
        assert c.noop() == (250, b"2.0.0 OK")
    assert len(stored(deployment, paul["address"])) == before


def test_an_over_long_lf_line_is_still_500(server, deployment, claire, paul):
    """Line length counts a bare LF as a line end (RFC 5321 4.5.3.1.6: 998 octets)."""
    before = len(stored(deployment, paul["address"]))
    payload = lf_message(claire["address"], paul["address"], "<long@client.test>", ["short", "y" * 1000, "short"])
    with smtp_submission(server, claire) as c:
        code, text = send_raw_data(c, claire["address"], paul["address"], payload + b"\r\n.\r\n")
        assert code == 500 and b"Line too long" in text
    assert len(stored(deployment, paul["address"])) == before


def test_998_octet_lf_lines_are_accepted(server, deployment, claire, paul):
    msgid = f"<{uuid.uuid4().hex}@client.test>"
    payload = lf_message(claire["address"], paul["address"], msgid, ["z" * 998, "z" * 998])
    with smtp_submission(server, claire) as c:
        code, _ = send_raw_data(c, claire["address"], paul["address"], payload + b"\r\n.\r\n")
        assert code == 250
    find_stored(stored(deployment, paul["address"]), msgid)


# -- already encrypted: only routing fields stay in clear ------------------------------------------


def encrypt_with_openssl(deployment, entry, inner: bytes, tmp_path) -> bytes:
    src = tmp_path / f"inner-{uuid.uuid4().hex}.eml"
    src.write_bytes(inner)
    out = subprocess.run(
        ["openssl", "cms", "-encrypt", "-aes256", "-in", str(src), str(deployment.path(entry, "smime_cert"))],
        capture_output=True,
        check=True,
    ).stdout
    return out.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def test_already_encrypted_message_keeps_only_routing_fields_in_clear(server, deployment, claire, paul, tmp_path):
    inner = b"Content-Type: text/plain; charset=utf-8\r\n\r\nCompte rendu chiffre par le client.\r\n"
    smime = encrypt_with_openssl(deployment, paul, inner, tmp_path)
    msgid = f"<{uuid.uuid4().hex}@client.test>"
    outer = (
        f"From: <{claire['address']}>\r\nTo: <{paul['address']}>\r\nSubject: Suivi\r\n"
        f"Date: Mon, 02 Nov 2026 10:00:00 +0100\r\nMessage-ID: {msgid}\r\n"
        "Reply-To: <secretariat@client.test>\r\nX-Diagnosis: secret diagnosis\r\nX-Mailer: LPS 1.0\r\n"
        "Comments: also secret\r\n"
    ).encode() + smime
    with smtp_submission(server, claire) as c:
        c.sendmail(claire["address"], [paul["address"]], outer)
    message = find_stored(stored(deployment, paul["address"]), msgid)
    fields = header_of(message)
    assert (
        b"secret diagnosis" not in message
        and b"also secret" not in message
        and "x-diagnosis" not in fields
        and "x-mailer" not in fields
    )
    assert "comments" not in fields
    assert fields["from"] == [f"<{claire['address']}>"] and fields["to"] == [f"<{paul['address']}>"]
    assert fields["subject"] == ["Suivi"] and fields["message-id"] == [msgid] and "reply-to" in fields
    assert fields["content-type"][0].startswith("application/") and "pkcs7-mime" in fields["content-type"][0]
    assert "mime-version" in fields and "content-transfer-encoding" in fields
    # The CMS object is the client's, untouched: it still opens with the recipient's key.
    assert b"Compte rendu chiffre par le client." in openssl_decrypt(deployment, paul, message, tmp_path)


# -- Date and Message-ID completed at submission (RFC 6409 8.3, 8.4) ---------------------------------


def test_missing_date_and_message_id_are_added(server, deployment, claire, paul, tmp_path):
    marker = uuid.uuid4().hex
    raw = (
        f"From: <{claire['address']}>\r\nTo: <{paul['address']}>\r\nSubject: sans date {marker}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nCorps.\r\n"
    ).encode()
    before = len(stored(deployment, paul["address"]))
    start = datetime.now(UTC).replace(microsecond=0)
    with smtp_submission(server, claire) as c:
        c.sendmail(claire["address"], [paul["address"]], raw)
    end = datetime.now(UTC)
    messages = stored(deployment, paul["address"])
    assert len(messages) == before + 1
    message = messages[-1]
    inner = openssl_decrypt(deployment, paul, message, tmp_path)
    assert marker.encode() in inner
    for fields in (header_of(inner), header_of(message)):  # inside the envelope and outside
        assert len(fields["date"]) == 1 and len(fields["message-id"]) == 1
        assert start - timedelta(seconds=1) <= parsedate_to_datetime(fields["date"][0]) <= end
        assert re.fullmatch(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}", fields["date"][0])
        assert re.fullmatch(rf"<[0-9a-f]{{32}}@{re.escape(deployment.domain)}>", fields["message-id"][0])
    assert header_of(inner)["message-id"] == header_of(message)["message-id"]


def test_existing_date_and_message_id_are_kept(server, deployment, claire, paul, tmp_path):
    raw, msgid = build_message(claire["address"], [paul["address"]], "avec date", "Corps.")
    date = header_of(raw)["date"][0]
    with smtp_submission(server, claire) as c:
        c.sendmail(claire["address"], [paul["address"]], raw)
    inner = openssl_decrypt(deployment, paul, find_stored(stored(deployment, paul["address"]), msgid), tmp_path)
    fields = header_of(inner)
    assert fields["date"] == [date] and fields["message-id"] == [msgid]
    assert inner.startswith(b"From: ")  # nothing added on top


def test_imap_append_adds_nothing(server, deployment, claire):
    """A draft is the client's own copy, not a submission: APPEND stores it as written."""
    marker = uuid.uuid4().hex
    raw = f"From: <{claire['address']}>\r\nSubject: brouillon {marker}\r\n\r\nTexte.\r\n".encode()
    m = imap_connect(server, deployment, claire)
    try:
        typ, _ = m.append("Drafts", None, None, raw)
        assert typ == "OK"
    finally:
        m.logout()
    outer = header_of(stored(deployment, claire["address"], "Drafts")[-1])
    assert "date" not in outer and "message-id" not in outer


# -- settings: no postmaster mailbox, bare LF refused ------------------------------------------------


@pytest.fixture
def strict_server(fresh_deployment):
    """A server whose operator refuses bare LF and configured no postmaster mailbox."""
    config = fresh_deployment.config
    text = config.read_text(encoding="utf-8")
    text = re.sub(r'(?m)^postmaster = ".*"\n', "", text)
    text = text.replace("[limits]\n", '[limits]\nbare_newline = "reject"\n', 1)
    config.write_text(text, encoding="utf-8")
    srv = start_server(fresh_deployment)
    yield srv
    srv.stop()


def test_operator_settings_reject_bare_lf_and_no_postmaster(strict_server, fresh_deployment):
    dep = strict_server.deployment
    claire, paul = dep.mailbox("PER", 0), dep.mailbox("PER", 1)
    payload = lf_message(claire["address"], paul["address"], "<lf@client.test>", ["one", "two"])
    with smtp_submission(strict_server, claire) as c:
        code, text = send_raw_data(c, claire["address"], paul["address"], payload + b"\r\n.\r\n")
        assert (code, text[:6]) == (550, b"5.5.2 ") and b"RFC 5321 2.3.8" in text
        # CRLF content is of course still accepted.
        raw, msgid = build_message(claire["address"], [paul["address"]], "crlf", "ok")
        c.sendmail(claire["address"], [paul["address"]], raw)
        # No postmaster mailbox configured or created: refused, and the log says what to do.
        assert c.mail(claire["address"])[0] == 250
        code, text = c.rcpt("postmaster")
        assert (code, text[:6]) == (550, b"5.1.1 ")
    assert len(stored(dep, paul["address"])) == 1
    find_stored(stored(dep, paul["address"]), msgid)
    logs = strict_server.log_text() + (dep.directory / "mss.log").read_text(encoding="utf-8", errors="replace")
    assert "[delivery] postmaster" in logs
