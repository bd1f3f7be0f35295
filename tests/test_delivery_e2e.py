"""End to end: send with smtplib and a health-PKI certificate, find the message stored
encrypted, and open it with `openssl cms` and the recipient's key only."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from email import message_from_bytes
from email.policy import compat32

import pytest
from mail import build_message, find_stored, openssl_decrypt, smtp_submission
from support import scan_files, stored_messages


def _split(raw: bytes) -> tuple[list[bytes], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), body


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit-tls"])
def test_sent_message_is_stored_encrypted_and_openssl_decrypts_it(server, deployment, implicit, tmp_path):
    claire, paul = deployment.mailbox("PER", 0), deployment.mailbox("PER", 1)
    canary = f"CANARY-{uuid.uuid4().hex}"
    raw, msgid = build_message(
        claire["address"], [paul["address"]], f"Résultats {canary}", f"Bonjour,\nvoici {canary}.\n"
    )
    with smtp_submission(server, claire, implicit=implicit) as smtp:
        refused = smtp.sendmail(claire["address"], [paul["address"]], raw)
    assert refused == {}

    stored = find_stored(asyncio.run(stored_messages(deployment, paul["address"])), msgid)
    assert canary.encode() not in stored
    outer = message_from_bytes(stored, policy=compat32)
    assert outer.get_content_type() == "application/pkcs7-mime"
    assert outer["Subject"] == "[...]"
    assert outer["Message-ID"] == msgid

    inner = openssl_decrypt(deployment, paul, stored, tmp_path)
    inner_lines, inner_body = _split(inner.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    orig_lines, orig_body = _split(raw)
    assert inner_body.rstrip(b"\r\n") == orig_body.rstrip(b"\r\n")
    for line in orig_lines:
        if line.lower().startswith(b"content-type:"):
            ct = [ln for ln in inner_lines if ln.lower().startswith(b"content-type:")]
            assert ct and ct[0].startswith(line), (line, ct)
            assert b'hp="cipher"' in inner
        else:
            assert line in inner_lines, line
    assert b"HP-Outer: Subject: [...]" in inner

    # The sender's key cannot open the recipient's copy.
    with pytest.raises(subprocess.CalledProcessError):
        openssl_decrypt(deployment, claire, stored, tmp_path)


def test_org_mailbox_is_encrypted_to_every_member(server, deployment, tmp_path):
    claire, paul = deployment.mailbox("PER", 0), deployment.mailbox("PER", 1)
    org = deployment.mailbox("ORG")
    raw, msgid = build_message(claire["address"], [org["address"]], "Pour le secrétariat", "Merci.\n")
    with smtp_submission(server, claire) as smtp:
        assert smtp.sendmail(claire["address"], [org["address"]], raw) == {}
    stored = find_stored(asyncio.run(stored_messages(deployment, org["address"])), msgid)
    for member in (claire, paul):
        assert b"Merci." in openssl_decrypt(deployment, member, stored, tmp_path)


def test_practice_software_keeps_an_encrypted_sent_copy(server, deployment, tmp_path):
    app, claire = deployment.mailbox("APP"), deployment.mailbox("PER", 0)
    canary = f"CANARY-{uuid.uuid4().hex}"
    raw, msgid = build_message(app["address"], [claire["address"]], canary, canary, extra="X-MSS-NIL: demo-lps/1.0\r\n")
    with smtp_submission(server, app, implicit=True) as smtp:
        assert smtp.sendmail(app["address"], [claire["address"]], raw) == {}
    sent = find_stored(asyncio.run(stored_messages(deployment, app["address"], "Sent")), msgid)
    assert canary.encode() not in sent
    assert canary.encode() in openssl_decrypt(deployment, app, sent, tmp_path)
    inbox = find_stored(asyncio.run(stored_messages(deployment, claire["address"])), msgid)
    assert canary.encode() in openssl_decrypt(deployment, claire, inbox, tmp_path)


def test_a_professional_has_no_sent_copy_by_default(server, deployment):
    claire, paul = deployment.mailbox("PER", 0), deployment.mailbox("PER", 1)
    raw, msgid = build_message(claire["address"], [paul["address"]], "no copy", "x\n")
    with smtp_submission(server, claire) as smtp:
        smtp.sendmail(claire["address"], [paul["address"]], raw)
    sent = asyncio.run(stored_messages(deployment, claire["address"], "Sent"))
    assert not [m for m in sent if msgid.encode() in m]
    find_stored(asyncio.run(stored_messages(deployment, paul["address"])), msgid)  # it was delivered


def test_canary_appears_in_no_byte_the_server_wrote(server, deployment):
    """DESIGN.md "Proof": subject and body never reach the database, the WAL or a log."""
    claire, paul = deployment.mailbox("PER", 0), deployment.mailbox("PER", 1)
    org, app = deployment.mailbox("ORG"), deployment.mailbox("APP")
    canary = f"CANARY-{uuid.uuid4().hex}"
    raw, _ = build_message(claire["address"], [paul["address"], org["address"]], f"Sujet {canary}", f"Corps {canary}\n")
    with smtp_submission(server, claire) as smtp:
        smtp.sendmail(claire["address"], [paul["address"], org["address"]], raw)
    raw2, _ = build_message(app["address"], [claire["address"]], f"LPS {canary}", f"LPS {canary}\n")
    with smtp_submission(server, app, implicit=True) as smtp:
        smtp.sendmail(app["address"], [claire["address"]], raw2)

    needle = canary.encode()
    scanned, found = scan_files(deployment.directory, [needle])
    assert not found, f"canary found in {found}"
    assert len(scanned) > 5
    assert list(deployment.directory.glob("mss.db*")) or deployment.backend == "postgresql"
    if deployment.backend == "postgresql":
        dbname = deployment.database_url.rsplit("/", 1)[1]
        dump = subprocess.run(
            ["pg_dump", "-h", "127.0.0.1", "-U", "postgres", "--data-only", dbname],
            capture_output=True,
            check=True,
        ).stdout
        assert b"[...]" in dump  # the outer placeholder subject is there, in clear
        assert needle not in dump
        assert needle.hex().encode() not in dump  # bytea columns are dumped as hex


def _imap(server, deployment, entry, authzid: str = ""):
    import imaplib

    m = imaplib.IMAP4_SSL(server.host, server.port("imaps"), ssl_context=deployment.client_context(entry), timeout=20)
    m.authenticate("EXTERNAL", lambda _: authzid.encode())
    return m


def test_smtp_to_imap_to_openssl_round_trip(server, deployment, tmp_path):
    """The whole slice: smtplib sends, imaplib reads the stored S/MIME message as it is,
    and only the recipient's key opens it."""
    claire, paul = deployment.mailbox("PER", 0), deployment.mailbox("PER", 1)
    canary = f"CANARY-{uuid.uuid4().hex}"
    raw, msgid = build_message(claire["address"], [paul["address"]], f"IMAP {canary}", f"via IMAP {canary}\n")
    with smtp_submission(server, claire) as smtp:
        assert smtp.sendmail(claire["address"], [paul["address"]], raw) == {}

    m = _imap(server, deployment, paul)
    try:
        assert m.select("INBOX")[0] == "OK"
        typ, data = m.uid("SEARCH", None, "HEADER", "Message-ID", msgid)
        assert typ == "OK" and len(data[0].split()) == 1
        uid = data[0].split()[0]
        typ, fetched = m.uid("FETCH", uid, "(BODY.PEEK[])")
        assert typ == "OK"
        served = fetched[0][1]
        assert canary.encode() not in served
        typ, size = m.uid("FETCH", uid, "(RFC822.SIZE)")
        assert f"RFC822.SIZE {len(served)}".encode() in size[0]
        inner = openssl_decrypt(deployment, paul, served, tmp_path)
        assert f"Subject: IMAP {canary}".encode() in inner and f"via IMAP {canary}".encode() in inner
        # Fetching with PEEK left it unseen.
        typ, flags = m.uid("FETCH", uid, "(FLAGS)")
        assert b"\\Seen" not in flags[0]
    finally:
        m.logout()


def test_imap_append_is_encrypted_before_it_is_stored(server, deployment, tmp_path):
    """A draft saved by a mail client is never stored in clear either."""
    claire = deployment.mailbox("PER", 0)
    canary = f"CANARY-{uuid.uuid4().hex}"
    raw, msgid = build_message(claire["address"], ["someone@example.org"], f"Brouillon {canary}", f"draft {canary}\n")
    m = _imap(server, deployment, claire)
    try:
        typ, data = m.append("Drafts", "(\\Draft)", None, raw)
        assert typ == "OK" and b"APPENDUID" in data[0]
    finally:
        m.logout()
    stored = find_stored(asyncio.run(stored_messages(deployment, claire["address"], "Drafts")), msgid)
    assert canary.encode() not in stored
    assert canary.encode() in openssl_decrypt(deployment, claire, stored, tmp_path)


def test_message_encrypted_by_the_sender_is_stored_as_it_came(server, deployment, tmp_path):
    claire, paul = deployment.mailbox("PER", 0), deployment.mailbox("PER", 1)
    canary = f"CANARY-{uuid.uuid4().hex}"
    inner, _ = build_message(claire["address"], [paul["address"]], "inner", f"encrypted by the client {canary}\n")
    src = tmp_path / "inner.eml"
    src.write_bytes(inner)
    out = subprocess.run(
        [
            "openssl",
            "cms",
            "-encrypt",
            "-aes256",
            "-in",
            str(src),
            "-subject",
            f"Clear {canary}",
            "-from",
            claire["address"],
            "-to",
            paul["address"],
            str(deployment.path(paul, "smime_cert")),
        ],
        capture_output=True,
        check=True,
    ).stdout
    msgid = f"<{uuid.uuid4().hex}@client.test>"
    sent = f"Message-ID: {msgid}\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n".encode() + out.replace(
        b"\r\n", b"\n"
    ).replace(b"\n", b"\r\n")
    with smtp_submission(server, claire) as smtp:
        assert smtp.sendmail(claire["address"], [paul["address"]], sent) == {}
    stored = find_stored(asyncio.run(stored_messages(deployment, paul["address"])), msgid)
    assert stored == sent  # DESIGN.md: a message its sender encrypted is stored as it came
    assert canary.encode() in openssl_decrypt(deployment, paul, stored, tmp_path)


def test_clear_text_dressed_as_enveloped_data_is_encrypted_all_the_same(server, deployment, tmp_path):
    """The enveloped-data OID followed by clear text must not pass for ciphertext."""
    import base64

    claire, paul = deployment.mailbox("PER", 0), deployment.mailbox("PER", 1)
    canary = f"CANARY-{uuid.uuid4().hex}"
    fake = bytes.fromhex("308006092a864886f70d010703") + f"diagnosis {canary} ".encode() * 30
    msgid = f"<{uuid.uuid4().hex}@client.test>"
    b64 = base64.encodebytes(fake).replace(b"\n", b"\r\n")
    sent = (
        f"From: <{claire['address']}>\r\nTo: <{paul['address']}>\r\nMessage-ID: {msgid}\r\n"
        "Date: Tue, 24 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode() + b64
    with smtp_submission(server, claire) as smtp:
        assert smtp.sendmail(claire["address"], [paul["address"]], sent) == {}
    stored = find_stored(asyncio.run(stored_messages(deployment, paul["address"])), msgid)
    assert canary.encode() not in stored and b64.strip() not in stored
    assert b64.strip()[:60] in openssl_decrypt(deployment, paul, stored, tmp_path)
