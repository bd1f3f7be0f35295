"""BINARY (RFC 3516): FETCH BINARY[part], BINARY.PEEK, BINARY.SIZE, and APPEND with a
literal8, through the sans-IO session."""

from __future__ import annotations

import base64

import pytest
from imap_fakes import ALICE

PAYLOAD = b"\x00\x01binary\xff\x00 payload" * 3  # has NUL: answered as a literal8
QP_TEXT = "café au lait, = égal\r\nline two"  # a soft line break, a hard one (kept as CRLF)
QP_BODY = b"caf=C3=A9 au lait,=\r\n =3D =C3=A9gal\r\nline two\r\n"

MULTI = (
    b"From: Bob <bob@test.mss>\r\nTo: " + ALICE.encode() + b"\r\nSubject: parts\r\n"
    b"Message-ID: <parts@test.mss>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XX"\r\n\r\n'
    b"--XX\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nplain seven bit\r\n"
    b"--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes(PAYLOAD).replace(b"\n", b"\r\n")
    + b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    + QP_BODY
    + b"--XX--\r\n"
)
DER = bytes(range(256)) * 4  # stands for the DER of an enveloped-data
SMIME = (
    b"From: Bob <bob@test.mss>\r\nTo: " + ALICE.encode() + b"\r\nSubject: sealed\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(DER).replace(b"\n", b"\r\n")
)
UNKNOWN = (
    b"From: Bob <bob@test.mss>\r\nSubject: odd\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n"
)


async def _select(alice, core, *raws: bytes) -> None:
    for raw in raws:
        await core.deliver(ALICE, raw)
    assert "s OK" in await alice.line("s SELECT INBOX")


async def _fetch(alice, text: str) -> bytes:
    return await alice.send(text.encode() + b"\r\n")


async def test_binary_is_advertised(alice) -> None:
    assert " BINARY" in await alice.line("c CAPABILITY")


async def test_base64_part_is_decoded_as_a_literal8(alice, core) -> None:
    await _select(alice, core, MULTI)
    out = await _fetch(alice, "f FETCH 1 BINARY.PEEK[2]")
    assert b"* 1 FETCH (BINARY[2] ~{%d}\r\n" % len(PAYLOAD) + PAYLOAD + b")\r\n" in out, out
    assert b"f OK" in out


async def test_quoted_printable_part_is_decoded_without_nul_as_a_literal(alice, core) -> None:
    await _select(alice, core, MULTI)
    out = await _fetch(alice, "f FETCH 1 BINARY.PEEK[3]")
    want = QP_TEXT.encode()
    assert b"* 1 FETCH (BINARY[3] {%d}\r\n" % len(want) + want + b")\r\n" in out, out


async def test_seven_bit_part_is_returned_as_it_is(alice, core) -> None:
    await _select(alice, core, MULTI)
    out = await _fetch(alice, "f FETCH 1 BINARY.PEEK[1]")
    assert b"BINARY[1] {15}\r\nplain seven bit)" in out, out


async def test_binary_size_is_the_decoded_length(alice, core) -> None:
    await _select(alice, core, MULTI)
    out = await _fetch(alice, "f FETCH 1 (BINARY.SIZE[2] BINARY.SIZE[3] BODY.PEEK[2])")
    assert b"BINARY.SIZE[2] %d BINARY.SIZE[3] %d " % (len(PAYLOAD), len(QP_TEXT.encode())) in out, out
    encoded = base64.encodebytes(PAYLOAD).replace(b"\n", b"\r\n")[:-2]  # its CRLF goes with the boundary
    assert b"BODY[2] {%d}\r\n" % len(encoded) + encoded + b")" in out  # BODY[] is still the encoded bytes


async def test_partial_counts_in_decoded_octets(alice, core) -> None:
    await _select(alice, core, MULTI)
    out = await _fetch(alice, "f FETCH 1 BINARY.PEEK[2]<0.10>")
    assert b"BINARY[2]<0> ~{10}\r\n" + PAYLOAD[:10] + b")" in out, out
    out = await _fetch(alice, "g FETCH 1 BINARY.PEEK[3]<3.6>")
    assert b"BINARY[3]<3> {6}\r\n" + QP_TEXT.encode()[3:9] + b")" in out, out


async def test_single_part_smime_message_gives_the_der(alice, core) -> None:
    await _select(alice, core, SMIME)
    out = await _fetch(alice, "f FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1])")
    assert b"BINARY.SIZE[1] 1024 BINARY[1] ~{1024}\r\n" + DER + b")" in out, out


async def test_empty_section_is_the_whole_message_as_stored(alice, core) -> None:
    await _select(alice, core, SMIME)
    out = await _fetch(alice, "f FETCH 1 BINARY.PEEK[]")
    assert b"BINARY[] {%d}\r\n" % len(SMIME) + SMIME + b")" in out, out


async def test_binary_sets_seen_and_peek_does_not(alice, core) -> None:
    await _select(alice, core, MULTI, MULTI)
    out = await alice.line("p FETCH 1 BINARY.PEEK[1]")
    assert "FLAGS" not in out, out
    out = await alice.line("p2 FETCH 1 BINARY.SIZE[1]")
    assert "FLAGS" not in out, out
    assert "* SEARCH 1 2\r\n" in await alice.line("u SEARCH UNSEEN")
    out = await alice.line("b FETCH 2 BINARY[1]")
    assert "* 2 FETCH (BINARY[1] {15}\r\nplain seven bit FLAGS (\\Recent \\Seen))" in out, out
    assert "* SEARCH 1\r\n" in await alice.line("u2 SEARCH UNSEEN")


async def test_unknown_cte_fails_the_request_and_sets_nothing(alice, core) -> None:
    await _select(alice, core, MULTI, UNKNOWN)
    out = await alice.line("f FETCH 1:2 BINARY[1]")
    assert out.startswith("f NO [UNKNOWN-CTE]"), out
    assert "FETCH (" not in out
    out = await alice.line("z FETCH 2 BINARY.SIZE[1]")
    assert out.startswith("z NO [UNKNOWN-CTE]"), out
    assert "* SEARCH 1 2\r\n" in await alice.line("u SEARCH UNSEEN")  # \Seen was not set
    # BODY[] of the same part is the stored bytes, whatever their encoding.
    assert "BODY[1] {13}\r\nbegin 644 x\r\n" in await alice.line("b FETCH 2 BODY.PEEK[1]")


async def test_missing_part_is_empty(alice, core) -> None:
    await _select(alice, core, MULTI)
    out = await alice.line("f FETCH 1 (BINARY.PEEK[9] BINARY.SIZE[9])")
    assert "BINARY[9] {0}\r\n BINARY.SIZE[9] 0)" in out, out


@pytest.mark.parametrize(
    "att",
    [
        "BINARY[HEADER]",
        "BINARY[1.TEXT]",
        "BINARY[1.MIME]",
        "BINARY.PEEK[TEXT]",
        "BINARY.SIZE[1]<0.5>",
        "BINARY[1.]",
        "BINARY[0]",
        "BINARY",
        "BINARY.SIZE",
    ],
)
async def test_sections_other_than_a_part_path_are_bad(alice, core, att) -> None:
    await _select(alice, core, MULTI)
    out = await alice.line(f"f FETCH 1 {att}")
    assert out.startswith("f BAD"), out
    assert "* SEARCH 1\r\n" in await alice.line("u SEARCH UNSEEN")


async def test_uid_fetch_binary(alice, core) -> None:
    await _select(alice, core, MULTI)
    out = await alice.line("u UID FETCH 1 BINARY.SIZE[3]")
    assert f"* 1 FETCH (UID 1 BINARY.SIZE[3] {len(QP_TEXT.encode())})" in out, out


# -- APPEND with a literal8 (RFC 3516 4.4) ---------------------------------------------------


async def test_append_literal8_without_binary_content_is_stored(alice) -> None:
    msg = b"From: a@test.mss\r\nSubject: eight\r\n\r\ncaf\xc3\xa9\r\n"
    out = await alice.send(b"a APPEND INBOX ~{%d}\r\n" % len(msg) + msg + b"\r\n")
    assert b"a OK [APPENDUID" in out, out
    await alice.line("s SELECT INBOX")
    out = await alice.send(b"f FETCH 1 BODY.PEEK[]\r\n")
    assert b"BODY[] {%d}\r\n" % len(msg) + msg in out, out


async def test_append_literal8_non_synchronising(alice) -> None:
    msg = b"From: a@test.mss\r\n\r\nx\r\n"
    out = await alice.send(b"a APPEND INBOX (\\Seen) ~{%d+}\r\n" % len(msg) + msg + b"\r\n")
    assert b"a OK [APPENDUID" in out, out


@pytest.mark.parametrize("content", [b"nul \x00 here", b"bare \n line", b"bare \r cr"])
async def test_append_literal8_with_binary_content_is_unknown_cte(alice, core, content) -> None:
    msg = b"From: a@test.mss\r\nContent-Transfer-Encoding: binary\r\n\r\n" + content + b"\r\n"
    out = await alice.send(b"a APPEND INBOX ~{%d}\r\n" % len(msg) + msg + b"\r\n")
    assert out.startswith(b"+ ") and b"\r\na NO [UNKNOWN-CTE]" in out, out
    assert core.sealer.appended == []
    assert "MESSAGES 0" in await alice.line("t STATUS INBOX (MESSAGES)")


async def test_append_plain_literal_with_nul_is_still_refused_as_malformed(alice, core) -> None:
    msg = b"From: a@test.mss\r\n\r\nnul \x00 here\r\n"
    out = await alice.send(b"a APPEND INBOX {%d+}\r\n" % len(msg) + msg + b"\r\n")
    assert out.startswith(b"a NO [CANNOT]"), out
    assert core.sealer.appended == []
