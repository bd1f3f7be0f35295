"""MULTIAPPEND (RFC 3502): several messages in one APPEND, stored all together or not at
all, with the APPENDUID set of RFC 4315 3; through the sans-IO session."""

from __future__ import annotations

import re

import pytest

from imap.protocol.grammar import MAX_APPEND_MESSAGES
from imap.protocol.parser import ContinuationNeeded, Limits, ParseError, Parser
from mss import metrics
from mss.metering import MeteredMailAccess
from mss.services import MAX_APPEND_MESSAGES as CORE_MAX_APPEND_MESSAGES


def _msg(i: int, extra: str = "") -> bytes:
    return f"From: a@hopital.test\r\nSubject: m{i}\r\n{extra}\r\nbody {i}\r\n".encode()


def _lit(data: bytes) -> bytes:
    return f"{{{len(data)}+}}\r\n".encode() + data


def _multi(tag: str, folder: str, parts: list[bytes]) -> bytes:
    """`tag APPEND folder part part ...`, each part already `[flags] [date] literal`."""
    return f"{tag} APPEND {folder} ".encode() + b" ".join(parts) + b"\r\n"


async def _count(alice, folder: str = "INBOX") -> int:
    out = await alice.line(f"st STATUS {folder} (MESSAGES UIDNEXT)")
    return int(re.search(r"MESSAGES (\d+)", out).group(1))


async def test_multiappend_is_advertised(alice) -> None:
    assert " MULTIAPPEND" in await alice.line("c CAPABILITY")


async def test_three_messages_get_consecutive_uids_and_one_appenduid_set(alice, core) -> None:
    first = await alice.send(_multi("a0", "INBOX", [_lit(_msg(0))]))
    assert re.search(rb"a0 OK \[APPENDUID \d+ 1\]", first), first
    parts = [
        b"(\\Seen) " + _lit(_msg(1)),
        b'"02-Nov-2026 10:00:00 +0100" ' + _lit(_msg(2)),
        b'(\\Flagged $Work) " 3-Nov-2026 11:30:00 +0000" ' + _lit(_msg(3)),
    ]
    out = await alice.send(_multi("a", "INBOX", parts))
    m = re.search(rb"a OK \[APPENDUID (\d+) 2:4\] APPEND completed\r\n", out)
    assert m, out
    status = await alice.line("v STATUS INBOX (UIDVALIDITY)")
    assert f"UIDVALIDITY {int(m.group(1))})" in status, status
    await alice.line("s SELECT INBOX")
    out = await alice.line("f UID FETCH 2:4 (FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert "* 2 FETCH (UID 2 FLAGS (\\Recent \\Seen) INTERNALDATE" in out, out
    assert '* 3 FETCH (UID 3 FLAGS (\\Recent) INTERNALDATE "02-Nov-2026 09:00:00 +0000"' in out, out
    assert '* 4 FETCH (UID 4 FLAGS ($Work \\Flagged \\Recent) INTERNALDATE "03-Nov-2026 11:30:00 +0000"' in out, out
    subjects = re.findall(r"Subject: (m\d)", out)
    assert subjects == ["m1", "m2", "m3"], out
    assert await _count(alice) == 4


async def test_single_message_append_is_unchanged(alice) -> None:
    out = await alice.send(b"a APPEND INBOX (\\Draft) " + _lit(_msg(0)) + b"\r\n")
    assert re.search(rb"a OK \[APPENDUID \d+ 1\] APPEND completed", out), out
    assert await _count(alice) == 1


async def test_synchronising_literals_each_get_a_continuation(alice) -> None:
    one, two = _msg(1), _msg(2)
    out = await alice.send(f"a APPEND INBOX {{{len(one)}}}\r\n".encode())
    assert out == b"+ Ready for literal data\r\n"
    out = await alice.send(one + f" (\\Seen) {{{len(two)}}}\r\n".encode())
    assert out == b"+ Ready for literal data\r\n"
    out = await alice.send(two + b"\r\n")
    assert re.search(rb"a OK \[APPENDUID \d+ 1:2\]", out), out


async def test_a_malformed_message_among_them_stores_none(alice, core) -> None:
    bad = b"From: a@hopital.test\r\nSubject: nul\r\n\r\nbo\x00dy\r\n"  # NUL: RFC 5322 2.2
    out = await alice.send(_multi("a", "INBOX", [_lit(_msg(1)), _lit(bad), _lit(_msg(3))]))
    assert out.startswith(b"a NO [CANNOT]") and b"NUL" in out, out
    assert await _count(alice) == 0
    assert core.sealer.appended[-1:] != [bad]  # refused before it was sealed
    # The next APPEND takes UID 1: nothing was reserved by the refused one.
    out = await alice.send(_multi("b", "INBOX", [_lit(_msg(4))]))
    assert re.search(rb"b OK \[APPENDUID \d+ 1\]", out), out


async def test_a_message_over_appendlimit_stores_none(core, make_session) -> None:
    # A core whose message size limit (what APPENDLIMIT announces when below the literal
    # limit) is 200 octets, so the test need not send 25 MiB.
    core.mail = type(core.mail)(core.store, core.sealer, max_message_size=200)
    d = make_session()
    assert "a0 OK" in await d.line("a0 AUTHENTICATE EXTERNAL =")
    big = _msg(2, extra="X-Pad: " + "p" * 300 + "\r\n")
    out = await d.send(_multi("a", "INBOX", [_lit(_msg(1)), _lit(big), _lit(_msg(3))]))
    assert out.startswith(b"a NO [TOOBIG]"), out
    assert await _count(d) == 0
    assert b"b OK" in await d.send(_multi("b", "INBOX", [_lit(_msg(1)), _lit(_msg(3))]))
    assert await _count(d) == 2


async def test_a_literal_over_the_literal_limit_is_bad_and_stores_none(alice) -> None:
    lim = alice.session.core.settings.limits
    one = _msg(1)
    out = await alice.send(
        f"a APPEND INBOX {{{len(one)}+}}\r\n".encode() + one + f" {{{lim.imap_literal + 1}}}\r\n".encode()
    )
    assert out.startswith(b"a BAD") and b"Literal too large" in out, out
    assert alice.session.parser.idle
    assert await _count(alice) == 0


def test_literals_together_over_the_command_limit_are_bad() -> None:
    # The messages of one APPEND share the whole-command bound (one literal plus one line).
    p = Parser(Limits(line=100, literal=200))
    p.feed(b"a APPEND INBOX {150}\r\n")
    assert p.next_event() == ContinuationNeeded(150)
    p.feed(b"x" * 150 + b" {150}\r\n")
    err = p.next_event()
    assert isinstance(err, ParseError) and err.tag == "a" and not err.fatal, err
    assert "Command too large (limit 300 octets" in err.text
    # Non-synchronising: the octets are on their way, the connection cannot go on.
    p = Parser(Limits(line=100, literal=200))
    p.feed(b"b APPEND INBOX {150+}\r\n" + b"x" * 150 + b" {150+}\r\n")
    err = p.next_event()
    assert isinstance(err, ParseError) and err.fatal and "Command too large" in err.text


async def test_missing_folder_is_trycreate_and_stores_nothing(alice) -> None:
    out = await alice.send(_multi("a", "Nowhere", [_lit(_msg(1)), _lit(_msg(2))]))
    assert out.startswith(b"a NO [TRYCREATE]"), out
    assert await _count(alice) == 0


async def test_too_many_messages_is_bad(alice) -> None:
    parts = [_lit(b"x")] * (MAX_APPEND_MESSAGES + 1)
    out = await alice.send(_multi("a", "INBOX", parts))
    assert out.startswith(b"a BAD") and b"Too many messages" in out, out
    assert await _count(alice) == 0


async def test_the_grammar_bound_is_within_the_core_bound(alice) -> None:
    assert MAX_APPEND_MESSAGES <= CORE_MAX_APPEND_MESSAGES
    items = [(_msg(i), (), None) for i in range(CORE_MAX_APPEND_MESSAGES + 1)]
    from mss.refusals import Refusal

    with pytest.raises(Refusal):
        await alice.session.box.append_many("INBOX", items)
    assert await _count(alice) == 0


@pytest.mark.parametrize(
    ("second", "why"),
    [
        (b"{0+}\r\n", b"non-empty message (message 2)"),
        (b"(\\Bogus) " + _lit(_msg(2)), b"\\Bogus is not a flag"),
    ],
)
async def test_an_empty_message_or_a_bad_flag_is_bad_and_stores_none(alice, second, why) -> None:
    out = await alice.send(_multi("a", "INBOX", [_lit(_msg(1)), second]))
    assert out.startswith(b"a BAD") and why in out, out
    assert await _count(alice) == 0


@pytest.mark.parametrize(
    "tail",
    [
        b" (\\Seen)",  # flags with no literal after them
        b' "02-Nov-2026 10:00:00 +0100"',  # a date with no literal
        b" x",  # not a message at all
    ],
)
async def test_a_malformed_later_message_is_bad(alice, tail) -> None:
    out = await alice.send(b"a APPEND INBOX " + _lit(_msg(1)) + tail + b"\r\n")
    assert out.startswith(b"a BAD"), out
    assert await _count(alice) == 0


async def test_metering_counts_each_message_of_a_multiappend(core, make_session) -> None:
    core.mail = MeteredMailAccess(core.store, core.sealer, max_message_size=core.settings.limits.max_message_size)
    d = make_session()
    assert "a0 OK" in await d.line("a0 AUTHENTICATE EXTERNAL =")

    def sample(name: str, **labels: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    ok0 = sample("mss_messages_accepted_total", protocol="imap")
    seen0 = sample("mss_delivery_duration_seconds_count", protocol="imap")
    gone0 = sample("mss_messages_refused_total", protocol="imap", stage="append", reason="no_such_folder")
    assert b"a OK" in await d.send(_multi("a", "INBOX", [_lit(_msg(1)), _lit(_msg(2)), _lit(_msg(3))]))
    assert b"b OK" in await d.send(_multi("b", "INBOX", [_lit(_msg(4))]))
    assert b"c NO" in await d.send(_multi("c", "Nowhere", [_lit(_msg(5)), _lit(_msg(6))]))
    assert sample("mss_messages_accepted_total", protocol="imap") == ok0 + 4
    assert sample("mss_delivery_duration_seconds_count", protocol="imap") == seen0 + 2
    assert sample("mss_messages_refused_total", protocol="imap", stage="append", reason="no_such_folder") == gone0 + 2
