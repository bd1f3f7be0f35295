"""UTF8=ACCEPT (RFC 6855) and modified UTF-7 mailbox names (RFC 3501 5.1.3), through the
sans-IO session: names are modified UTF-7 until ENABLE UTF8=ACCEPT, UTF-8 after it."""

from __future__ import annotations

import pytest

from imap import mutf7


async def _utf8(alice) -> None:
    out = await alice.line("e ENABLE UTF8=ACCEPT")
    assert "* ENABLED UTF8=ACCEPT\r\n" in out and "e OK" in out, out


async def test_utf8_accept_is_advertised_and_enabled_once(alice) -> None:
    assert " UTF8=ACCEPT" in await alice.line("c CAPABILITY")
    await _utf8(alice)
    out = await alice.line("e2 ENABLE UTF8=ACCEPT")
    assert "* ENABLED\r\n" in out, out  # RFC 5161 3: already enabled, not listed again


# -- before ENABLE: modified UTF-7 ---------------------------------------------------------


async def test_rev1_names_are_modified_utf7_both_ways(alice) -> None:
    assert "c OK" in await alice.line("c CREATE Envoy&AOk-s")
    out = await alice.line('l LIST "" Envoy*')
    assert '* LIST (\\HasNoChildren) "/" "Envoy&AOk-s"\r\n' in out, out
    out = await alice.line("s STATUS Envoy&AOk-s (MESSAGES)")
    assert '* STATUS "Envoy&AOk-s" (MESSAGES 0)\r\n' in out, out
    assert "x OK" in await alice.line("x SELECT Envoy&AOk-s")
    # The core has the Unicode name: a UTF-8 session sees it so.
    await alice.line("u UNSELECT")
    await _utf8(alice)
    out = (await alice.send(b'l LIST "" Envoy*\r\n')).decode()
    assert '* LIST (\\HasNoChildren) "/" "Envoyés"\r\n' in out, out


async def test_rev1_ampersand_and_pattern_and_rename(alice) -> None:
    assert "c OK" in await alice.line('c CREATE "Tom &- Jerry"')
    assert '"/" "Tom &- Jerry"\r\n' in await alice.line('l LIST "" Tom*')
    assert "r OK" in await alice.line('r RENAME "Tom &- Jerry" &ZeVnLIqe-/&W1A-')
    out = await alice.line('l2 LIST "" &ZeVnLIqe-*')
    assert '* LIST (\\Noselect \\HasChildren) "/" "&ZeVnLIqe-"\r\n' in out, out
    assert '* LIST (\\HasNoChildren) "/" "&ZeVnLIqe-/&W1A-"\r\n' in out, out


@pytest.mark.parametrize("name", ["A&B", "&", "&AOk", "&AGE-", "&Jjo!-", "&AOk-&AOk-"])
async def test_invalid_modified_utf7_is_bad_and_creates_nothing(alice, core, name) -> None:
    before = await alice.line('l LIST "" *')
    out = await alice.line(f'c CREATE "{name}"')
    assert out.startswith("c BAD"), out
    assert "5.1.3" in out
    assert await alice.line('l LIST "" *') == before


async def test_rev1_8bit_name_is_taken_as_utf8_and_listed_in_modified_utf7(alice) -> None:
    # A client that ignores RFC 3501 5.1.3 and sends UTF-8: taken as it is, as before.
    out = await alice.send('c CREATE "Café"\r\n'.encode())
    assert b"c OK" in out
    assert '"/" "Caf&AOk-"\r\n' in await alice.line('l LIST "" Caf*')


# -- after ENABLE UTF8=ACCEPT: UTF-8 --------------------------------------------------------


async def test_utf8_names_after_enable(alice) -> None:
    await _utf8(alice)
    assert b"c OK" in await alice.send('c CREATE "Brouillons/Été"\r\n'.encode())
    out = (await alice.send(b'l LIST "" "Brouillons/*"\r\n')).decode()
    assert '* LIST (\\HasNoChildren) "/" "Brouillons/Été"\r\n' in out, out
    out = (await alice.send('s STATUS "Brouillons/Été" (MESSAGES)\r\n'.encode())).decode()
    assert '* STATUS "Brouillons/Été" (MESSAGES 0)\r\n' in out, out
    assert b"x OK [READ-WRITE]" in await alice.send('x SELECT "Brouillons/Été"\r\n'.encode())
    # `&` is itself now, not a shift into base64.
    assert "a OK" in await alice.line('a CREATE "A&B"')
    assert '"/" "A&B"\r\n' in await alice.line('l2 LIST "" "A*"')


async def test_list_status_return_uses_the_same_form(alice) -> None:
    await alice.send('c CREATE "Café"\r\n'.encode())
    out = await alice.line('l LIST "" Caf* RETURN (STATUS (MESSAGES))')
    assert '* STATUS "Caf&AOk-" (MESSAGES 0)\r\n' in out, out
    await _utf8(alice)
    out = (await alice.send(b'l LIST "" Caf* RETURN (STATUS (MESSAGES))\r\n')).decode()
    assert '* STATUS "Café" (MESSAGES 0)\r\n' in out, out


async def test_copy_to_a_utf8_name(alice, core) -> None:
    await alice.send('c CREATE "Reçus"\r\n'.encode())
    msg = b"From: a@test.mss\r\n\r\nx\r\n"
    assert b"a OK" in await alice.send(b"a APPEND INBOX {%d+}\r\n" % len(msg) + msg + b"\r\n")
    await alice.line("s SELECT INBOX")
    assert "k OK" in await alice.line("k COPY 1 Re&AOc-us")
    await alice.line("u UNSELECT")
    await _utf8(alice)
    out = (await alice.send('t STATUS "Reçus" (MESSAGES)\r\n'.encode())).decode()
    assert '"Reçus" (MESSAGES 1)' in out, out


async def test_rev2_select_list_line_is_utf8(alice) -> None:
    alice.session.offer_imap4rev2 = True
    await alice.line("e ENABLE IMAP4rev2")
    await alice.send('c CREATE "Été"\r\n'.encode())
    out = (await alice.send('s SELECT "Été"\r\n'.encode())).decode()
    assert '* LIST (\\HasNoChildren) "/" "Été"\r\n' in out, out


# -- APPEND UTF8 (literal8) (RFC 6855 4) ------------------------------------------------------

MSG = "From: Zoé <zoe@test.mss>\r\nSubject: Réunion à 10h\r\n\r\nÀ demain\r\n".encode()


async def test_append_utf8_data_after_enable(alice, core) -> None:
    await _utf8(alice)
    out = await alice.send(b"a APPEND INBOX (\\Seen) UTF8 (~{%d+}\r\n" % len(MSG) + MSG + b")\r\n")
    assert b"a OK [APPENDUID" in out, out
    await alice.line("s SELECT INBOX")
    out = await alice.send(b"f FETCH 1 (FLAGS BODY.PEEK[])\r\n")
    assert b"FLAGS (\\Recent \\Seen) BODY[] {%d}\r\n" % len(MSG) + MSG in out, out


async def test_append_utf8_data_synchronising(alice) -> None:
    await _utf8(alice)
    out = await alice.send(b"a APPEND INBOX UTF8 (~{%d}\r\n" % len(MSG) + MSG + b")\r\n")
    assert out.startswith(b"+ ") and b"a OK [APPENDUID" in out, out


async def test_append_utf8_data_before_enable_is_bad(alice, core) -> None:
    out = await alice.send(b"a APPEND INBOX UTF8 (~{%d+}\r\n" % len(MSG) + MSG + b")\r\n")
    assert out.startswith(b"a BAD"), out
    assert core.sealer.appended == []


@pytest.mark.parametrize(
    "form",
    [b"UTF8 ({%d+}\r\n%s)", b"UTF8 (~{%d+}\r\n%s", b"UTF8 ~{%d+}\r\n%s"],
    ids=["plain-literal", "unclosed", "no-parenthesis"],
)
async def test_malformed_append_utf8_is_bad(alice, core, form) -> None:
    await _utf8(alice)
    out = await alice.send(b"a APPEND INBOX " + form % (len(MSG), MSG) + b"\r\n")
    assert out.startswith(b"a BAD"), out
    assert core.sealer.appended == []


# -- SEARCH (RFC 6855 3) ------------------------------------------------------------------


async def test_search_charset_is_bad_after_enable(alice) -> None:
    await alice.send(b"a APPEND INBOX {%d+}\r\n" % len(MSG) + MSG + b"\r\n")
    await alice.line("s SELECT INBOX")
    assert "* SEARCH 1\r\n" in await alice.line('b SEARCH CHARSET UTF-8 SUBJECT "union"')
    await alice.line("u UNSELECT")
    await _utf8(alice)
    await alice.line("s SELECT INBOX")
    out = await alice.line('b SEARCH CHARSET UTF-8 SUBJECT "union"')
    assert out.startswith("b BAD"), out
    out = (await alice.send('k SEARCH SUBJECT "Réunion"\r\n'.encode())).decode()
    assert "* SEARCH 1\r\n" in out, out


# -- the codec (RFC 3501 5.1.3) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "wire"),
    [
        ("INBOX", "INBOX"),
        ("&", "&-"),
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
        ("Entwürfe", "Entw&APw-rfe"),
        ("😀", "&2D3eAA-"),
    ],
)
def test_modified_utf7_round_trip(name, wire) -> None:
    assert mutf7.encode(name) == wire
    assert mutf7.decode(wire) == name
