"""ENVELOPE, BODYSTRUCTURE and BODY[section] from stored bytes (RFC 9051 6.4.5, 7.5.2)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from imap import mime
from imap.protocol.commands import Section
from imap.protocol.response import serialise

SMIME = (
    b"From: Claire Martin <claire@h.test>\r\n"
    b'To: paul@h.test, "Secr\xc3\xa9tariat" <sec@h.test>\r\n'
    b"Subject: [...]\r\n"
    b"Date: Mon, 02 Nov 2026 10:00:00 +0100\r\n"
    b"Message-ID: <abc@h.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"Content-Disposition: attachment; filename=smime.p7m\r\n"
    b"\r\n"
    b"MIIBCgYJKoZIhvcNAQcDoIIB+zCCAfcCAQAxggGy\r\n"
    b"MIIBrgIBADCBlTCBjDELMAkGA1UEBhMCRlIx\r\n"
)

MULTI = (
    b"From: a@x.test\r\nTo: b@x.test\r\nSubject: multi\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XX"\r\n\r\n'
    b"preamble\r\n"
    b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello\r\nworld\r\n"
    b"--XX\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: c@x.test\r\nSubject: inner\r\n\r\ninner body\r\n"
    b"--XX\r\nContent-Type: multipart/alternative; boundary=YY\r\n\r\n"
    b"--YY\r\nContent-Type: text/plain\r\n\r\nplain\r\n--YY\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--YY--\r\n"
    b"--XX--\r\nepilogue\r\n"
)


def test_envelope_of_stored_smime_message():
    env = mime.envelope(mime.parse(SMIME))
    assert env[0] == "Mon, 02 Nov 2026 10:00:00 +0100"
    assert env[1] == "[...]"
    assert env[2] == [("Claire Martin", None, "claire", "h.test")]
    assert env[3] == env[2] and env[4] == env[2]  # sender and reply-to default to from
    assert env[5][0] == (None, None, "paul", "h.test") and env[5][1][2:] == ("sec", "h.test")
    assert env[6] is None and env[7] is None and env[8] is None
    assert env[9] == "<abc@h.test>"
    serialise(env)  # 8-bit names serialise (as literals)


def test_bodystructure_of_single_part_smime():
    part = mime.parse(SMIME)
    bs = mime.bodystructure(part)
    body_len = len(SMIME.split(b"\r\n\r\n", 1)[1])
    assert bs[:7] == (
        "APPLICATION",
        "PKCS7-MIME",
        ["smime-type", "enveloped-data", "name", "smime.p7m"],
        None,
        None,
        "BASE64",
        body_len,
    )
    assert bs[8] == ("attachment", ["filename", "smime.p7m"])
    assert mime.bodystructure(part, extended=False) == bs[:7]
    assert serialise(bs).startswith(b'("APPLICATION" "PKCS7-MIME" ("smime-type" "enveloped-data"')


def test_bodystructure_of_multipart():
    bs = mime.bodystructure(mime.parse(MULTI))
    text, msg, alt = bs[0], bs[1], bs[2]
    assert (
        text[:2] == ("TEXT", "PLAIN")
        and text[2] == ["CHARSET", "utf-8"]
        and text[6] == len(b"Hello\r\nworld")
        and text[7] == 2
    )
    assert msg[:2] == ("MESSAGE", "RFC822") and msg[7][1] == "inner" and msg[8][:2] == ("TEXT", "PLAIN")
    assert alt[2] == "ALTERNATIVE"
    assert bs[3] == "MIXED" and bs[4] == ["boundary", "XX"]
    body = mime.bodystructure(mime.parse(MULTI), extended=False)
    assert body[3] == "MIXED" and len(body) == 4


def test_sections():
    m = mime.parse(MULTI)
    assert mime.section_bytes(m, Section()) == MULTI
    assert mime.section_bytes(m, Section((), "HEADER")).endswith(b"\r\n\r\n")
    assert mime.section_bytes(m, Section((1,))) == b"Hello\r\nworld"
    assert mime.section_bytes(m, Section((1,), "MIME")) == b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    assert mime.section_bytes(m, Section((2,), "HEADER")) == b"From: c@x.test\r\nSubject: inner\r\n\r\n"
    assert mime.section_bytes(m, Section((2,), "TEXT")) == b"inner body"
    assert mime.section_bytes(m, Section((2, 1))) == b"inner body"
    assert mime.section_bytes(m, Section((3, 2))) == b"<p>html</p>"
    assert (
        mime.section_bytes(m, Section((), "HEADER.FIELDS", ("SUBJECT", "TO")))
        == b"To: b@x.test\r\nSubject: multi\r\n\r\n"
    )
    not_fields = mime.section_bytes(m, Section((), "HEADER.FIELDS.NOT", ("SUBJECT",)))
    assert b"Subject" not in not_fields and b"From: a@x.test" in not_fields
    assert mime.partial(b"0123456789", (2, 3)) == b"234"
    assert mime.partial(b"0123", (10, 3)) == b""


def test_single_part_sections():
    m = mime.parse(SMIME)
    body = SMIME.split(b"\r\n\r\n", 1)[1]
    assert mime.section_bytes(m, Section((1,))) == body
    assert mime.section_bytes(m, Section((), "TEXT")) == body
    import pytest

    with pytest.raises(mime.SectionError):
        mime.section_bytes(m, Section((2,)))


def test_folded_header_fields_are_kept_whole():
    raw = b"Subject: a\r\n b\r\nTo: x@y\r\n\r\nbody"
    assert (
        mime.section_bytes(mime.parse(raw), Section((), "HEADER.FIELDS", ("SUBJECT",))) == b"Subject: a\r\n b\r\n\r\n"
    )
    assert mime.envelope(mime.parse(raw))[1] == "a  b"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_random_messages_never_break_structure(raw):
    m = mime.parse(raw)
    serialise(mime.bodystructure(m))
    serialise(mime.envelope(m))
    assert mime.section_bytes(m, Section()) == raw
