"""The pieces behind tests/test_rfc_details.py, driven directly: `smtp.data.DataLines` (bare
LF, smuggling signatures, line length; sans-IO), `mss.message.complete_submission` (RFC 6409
8.3, 8.4, with an injected clock), the clear header of an already-encrypted message with the
Subject hidden too, and no completion for mail relayed by another operator (a SERV principal).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from support import stored_messages

from crypto.rfc5322 import scan
from crypto.smime import protect_and_encrypt
from mss.message import ParsedMessage, complete_submission, parse_message
from mss.principal import Principal
from mss.sealing import prepare
from smtp.data import DataLines

# -- DataLines -------------------------------------------------------------------------------------


def test_a_crlf_piece_passes_unchanged():
    lines = DataLines()
    assert lines.feed(b"Subject: x\r\n") == b"Subject: x\r\n"
    assert lines.feed(b".\r\n") == b".\r\n"  # aiosmtpd's own end of data, untouched
    assert not (lines.bare_lf or lines.lone_dot or lines.too_long)


def test_bare_lf_lines_become_crlf_and_are_unstuffed():
    lines = DataLines()
    out = lines.feed(b"one\n..two\n\nthree\r\n")
    assert out == b"one\r\n.two\r\n\r\nthree\r\n"
    assert lines.bare_lf and not lines.lone_dot and not lines.too_long


def test_the_first_line_of_a_piece_is_left_to_aiosmtpd():
    """aiosmtpd removes the first dot of every piece itself (RFC 5321 4.5.2)."""
    assert DataLines().feed(b"..first\nsecond\r\n") == b"..first\r\nsecond\r\n"


@pytest.mark.parametrize("piece", [b"a\n.\nb\r\n", b".\nMAIL FROM:<x@y.test>\r\n", b"a\n.\r\n"])
def test_a_lone_dot_beside_a_bare_lf_is_noted(piece):
    lines = DataLines()
    lines.feed(piece)
    assert lines.lone_dot


def test_reject_mode_keeps_the_piece_and_notes_it():
    lines = DataLines("reject")
    assert lines.feed(b"a\nb\r\n") == b"a\nb\r\n"
    assert lines.bare_lf and lines.mode == "reject"


@pytest.mark.parametrize(
    "piece, too_long",
    [
        # RFC 5321 4.5.3.1.6: 1000 octets with the CRLF, the stuffing dot not counted.
        (b"x" * 998 + b"\r\n", False),
        (b"x" * 999 + b"\r\n", True),
        (b"." + b"x" * 998 + b"\r\n", False),
        (b"." + b"x" * 999 + b"\r\n", True),
        (b"x" * 998 + b"\n" + b"y" * 998 + b"\r\n", False),
        (b"x" * 998 + b"\n" + b"y" * 999 + b"\r\n", True),
        (b"short\n" + b"y" * 999 + b"\nshort\r\n", True),
    ],
)
def test_line_length_counts_bare_lf_as_a_line_end(piece, too_long):
    lines = DataLines()
    lines.feed(piece)
    assert lines.too_long is too_long


# -- complete_submission ---------------------------------------------------------------------------

NOW = datetime(2026, 12, 2, 14, 29, 13, 123456, tzinfo=UTC)


def _parsed(head: str) -> ParsedMessage:
    return parse_message((head + "\r\nBody.\r\n").encode(), max_size=1 << 20)


def test_date_and_message_id_are_added_on_top():
    message = _parsed("From: <a@x.test>\r\nSubject: s\r\n")
    done = complete_submission(message, domain="hopital.test", now=NOW)
    section = scan(done.raw)
    assert [f.key for f in section.fields[:2]] == ["date", "message-id"]
    assert section.get("Date").unfolded == "Wed, 02 Dec 2026 14:29:13 +0000"
    msgid = section.get("Message-ID").unfolded
    assert msgid.startswith("<") and msgid.endswith("@hopital.test>") and len(msgid) == 32 + len("<@hopital.test>")
    assert done.outer.date == "Wed, 02 Dec 2026 14:29:13 +0000" and done.outer.message_id == msgid
    assert done.body == b"Body.\r\n" and done.raw.endswith(message.raw)
    assert complete_submission(message, domain="hopital.test", now=NOW).outer.message_id != msgid  # random


def test_present_fields_are_never_touched():
    message = _parsed("From: <a@x.test>\r\nDate: whenever\r\nMessage-ID: <m@x.test>\r\n")
    assert complete_submission(message, domain="hopital.test", now=NOW) is message


def test_only_what_is_missing_is_added():
    message = _parsed("From: <a@x.test>\r\nmessage-id: <m@x.test>\r\n")
    done = complete_submission(message, domain="hopital.test", now=NOW + timedelta(hours=1))
    assert done.raw == b"Date: Wed, 02 Dec 2026 15:29:13 +0000\r\n" + message.raw


# -- already encrypted, Subject hidden too -----------------------------------------------------------


def _certificate() -> x509.Certificate:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "recipient")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


@pytest.mark.parametrize("hide_subject", [False, True])
def test_an_encrypted_message_keeps_only_routing_fields(hide_subject):
    smime = protect_and_encrypt(b"From: <a@x.test>\r\n\r\nsecret body\r\n", [_certificate()])
    section = scan(smime)
    clear = [f.terminated for f in section.fields if f.key not in ("from", "subject")]
    raw = (
        b"From: <a@x.test>\r\nSubject: Suivi\r\nX-Diagnosis: secret\r\nReferences: <r@x.test>\r\n"
        + b"".join(clear)
        + b"\r\n"
        + section.body
    )
    message = parse_message(raw, max_size=1 << 20)
    assert message.encrypted
    sealable = prepare(message, placeholder_subject="[...]", hide_subject_of_encrypted=hide_subject)
    assert sealable.as_is is not None and sealable.protected is None
    kept = scan(sealable.as_is)
    assert kept.get("X-Diagnosis") is None and b"secret" not in sealable.as_is
    assert kept.get("References").unfolded == "<r@x.test>"
    assert kept.get("Subject").unfolded == ("[...]" if hide_subject else "Suivi")
    assert kept.body == section.body  # the CMS object as it came
    assert parse_message(sealable.as_is, max_size=1 << 20).encrypted


def test_an_encrypted_message_with_nothing_to_drop_is_kept_byte_for_byte():
    smime = protect_and_encrypt(b"From: <a@x.test>\r\n\r\nbody\r\n", [_certificate()])
    message = parse_message(smime, max_size=1 << 20)
    assert prepare(message, placeholder_subject="[...]", hide_subject_of_encrypted=False).as_is == smime


# -- not for mail relayed from another operator ----------------------------------------------------


async def test_a_serv_principal_s_message_is_not_completed(fresh_deployment):
    """Another operator's MTA (a SERV principal, the inbound relay's) relays mail as it came."""
    from mss.core import Core

    claire = fresh_deployment.mailbox("PER", 0)
    core = await Core.open(fresh_deployment.settings())
    try:
        peer = Principal("SERV", "1750001232", "another operator", frozenset(), domains=frozenset({"b.mssante.test"}))
        tx = core.submission.begin(peer)
        tx.mail_from("bob@b.mssante.test")
        await tx.add_recipient(claire["address"])
        await tx.deliver(b"From: <bob@b.mssante.test>\r\nSubject: relayed\r\n\r\nBody.\r\n")
    finally:
        await core.close()
    (stored,) = await stored_messages(fresh_deployment, claire["address"])
    fields = {f.key for f in scan(stored).fields}
    assert "date" not in fields and "message-id" not in fields
