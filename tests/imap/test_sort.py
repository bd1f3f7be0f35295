"""SORT and UID SORT (RFC 5256 3), through the sans-IO session, and the base subject and
sent date rules they sort by (RFC 5256 2.1, 2.2)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from imap.sorting import base_subject, first_mailbox, sent_date


async def put(d, *, when: str | None = None, body: str = "x", **fields: str) -> None:
    """APPEND to INBOX a message with the given header fields (`from_` for From, `in_reply_to`
    for In-Reply-To...; a field left out is absent) and INTERNALDATE `when`."""
    head = "".join(f"{name.rstrip('_').replace('_', '-').title()}: {value}\r\n" for name, value in fields.items())
    data = f"{head}\r\n{body}\r\n".encode()
    date = f' "{when}"' if when else ""
    out = await d.send(f"ap APPEND INBOX{date} {{{len(data)}+}}\r\n".encode() + data + b"\r\n")
    assert b"ap OK" in out, out


async def select(d) -> None:
    assert "s OK" in await d.line("s SELECT INBOX")


async def sort(d, args: str) -> str:
    out = await d.line(f"t SORT {args}")
    assert "t OK SORT completed" in out, out
    return out


async def test_sort_and_thread_are_advertised(alice) -> None:
    caps = (await alice.line("c CAPABILITY")).split("\r\n")[0].split()
    assert {"SORT", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES"} <= set(caps), caps


async def test_arrival_is_the_internal_date_with_its_time(alice) -> None:
    await put(alice, subject="a", when="02-Nov-2026 10:00:00 +0000")
    await put(alice, subject="b", when="02-Nov-2026 09:00:00 +0000")
    await put(alice, subject="c", when="02-Nov-2026 11:00:00 +0200")  # 09:00:00 UTC
    await put(alice, subject="d", when="01-Nov-2026 23:00:00 +0000")
    await select(alice)
    assert "* SORT 4 2 3 1\r\n" in await sort(alice, "(ARRIVAL) UTF-8 ALL")


async def test_date_is_the_sent_date_in_utc_and_falls_back_to_internaldate(alice) -> None:
    await put(alice, subject="a", date="Mon, 02 Nov 2026 10:00:00 +0100", when="05-Nov-2026 00:00:00 +0000")  # 09:00Z
    await put(alice, subject="b", date="Mon, 02 Nov 2026 08:30:00 +0000", when="05-Nov-2026 00:00:00 +0000")
    await put(alice, subject="c", when="02-Nov-2026 08:00:00 +0000")  # no Date: its INTERNALDATE
    await put(alice, subject="d", date="not a date at all", when="02-Nov-2026 09:30:00 +0000")  # unparseable
    await put(alice, subject="e", date="Mon, 02 Nov 2026 04:00:00 -0500", when="01-Nov-2026 00:00:00 +0000")  # 09:00Z
    await select(alice)
    # 1 and 5 are both 09:00 UTC: the sequence number decides.
    assert "* SORT 3 2 1 5 4\r\n" in await sort(alice, "(DATE) UTF-8 ALL")
    assert "* SORT 4 1 5 2 3\r\n" in await sort(alice, "(REVERSE DATE) UTF-8 ALL")


async def test_from_to_cc_sort_on_the_local_part_of_the_first_address(alice) -> None:
    await put(alice, from_="Zed <mike@b.test>", to="nina@a.test, adam@a.test", cc="Cc <Zoe@x.test>")
    await put(alice, from_='"Aaron" <victor@a.test>', to="Bob (comment) <bob@a.test>")
    await put(alice, from_="ALPHA@z.test", to="yann@a.test", cc="ben@x.test, aaa@x.test")
    await put(alice, to="")  # no From, an empty To, no Cc: the empty string, first
    await select(alice)
    assert "* SORT 4 3 1 2\r\n" in await sort(alice, "(FROM) UTF-8 ALL")  # "", alpha, mike, victor
    assert "* SORT 4 2 1 3\r\n" in await sort(alice, "(TO) UTF-8 ALL")  # "", bob, nina, yann
    assert "* SORT 2 4 3 1\r\n" in await sort(alice, "(CC) UTF-8 ALL")  # "", "", ben, Zoe


async def test_size(alice) -> None:
    await put(alice, subject="s", body="x" * 300)
    await put(alice, subject="s", body="x" * 10)
    await put(alice, subject="s", body="x" * 100)
    await put(alice, subject="s", body="x" * 10)
    await select(alice)
    assert "* SORT 2 4 3 1\r\n" in await sort(alice, "(SIZE) UTF-8 ALL")
    # REVERSE turns the key round, not the tie-breaker: 2 stays before 4.
    assert "* SORT 1 3 2 4\r\n" in await sort(alice, "(REVERSE SIZE) UTF-8 ALL")


async def test_subject_sorts_on_the_base_subject(alice) -> None:
    for subject in (
        "Re: [foo] Fwd: delta (fwd)",  # delta
        "=?utf-8?q?Charlie?=",  # Charlie, an encoded word
        "[fwd: Re: bravo]",  # bravo
        "RE:  RE[2]:   alpha  ",  # alpha
        "[list] Echo",  # Echo
        "[only a blob]",  # the blob itself: nothing would be left without it
    ):
        await put(alice, subject=subject)
    await put(alice, from_="x@y.test")  # no Subject: the empty string, first
    await select(alice)
    assert "* SORT 7 4 3 2 1 5 6\r\n" in await sort(alice, "(SUBJECT) UTF-8 ALL")


async def test_several_criteria_and_reverse_of_one_only(alice) -> None:
    await put(alice, subject="b", date="Mon, 02 Nov 2026 10:00:00 +0000")
    await put(alice, subject="a", date="Mon, 02 Nov 2026 11:00:00 +0000")
    await put(alice, subject="Re: b", date="Mon, 02 Nov 2026 12:00:00 +0000")
    await put(alice, subject="a", date="Mon, 02 Nov 2026 09:00:00 +0000")
    await put(alice, subject="B", date="Mon, 02 Nov 2026 12:00:00 +0000")
    await select(alice)
    assert "* SORT 4 2 1 3 5\r\n" in await sort(alice, "(SUBJECT DATE) UTF-8 ALL")
    assert "* SORT 2 4 3 5 1\r\n" in await sort(alice, "(SUBJECT REVERSE DATE) UTF-8 ALL")
    assert "* SORT 1 3 5 4 2\r\n" in await sort(alice, "(REVERSE SUBJECT DATE) UTF-8 ALL")
    # Lower case, and the charset too.
    assert "* SORT 3 5 1 2 4\r\n" in await sort(alice, "(reverse subject reverse date) utf-8 all")


async def test_uid_sort_answers_with_uids(alice) -> None:
    for subject in ("gone", "c", "a", "b"):
        await put(alice, subject=subject)
    await select(alice)
    await alice.line("d STORE 1 +FLAGS (\\Deleted)")
    assert "d OK" in await alice.line("d EXPUNGE")
    out = await alice.line("u UID SORT (SUBJECT) UTF-8 ALL")
    assert "* SORT 3 4 2\r\n" in out and "u OK UID SORT completed" in out, out
    assert "* SORT 2 3 1\r\n" in await sort(alice, "(SUBJECT) UTF-8 ALL")


async def test_the_search_criteria_choose_the_messages(alice) -> None:
    await put(alice, subject="c", from_="bob@a.test")
    await put(alice, subject="b", from_="carol@a.test")
    await put(alice, subject="a", from_="bob@a.test")
    await put(alice, subject="d", from_="bob@a.test", body="x" * 500)
    await select(alice)
    await alice.line("f STORE 3 +FLAGS (\\Seen)")
    assert "* SORT 3 1 4\r\n" in await sort(alice, "(SUBJECT) UTF-8 FROM bob")
    assert "* SORT 1 4\r\n" in await sort(alice, "(SUBJECT) US-ASCII FROM bob UNSEEN")
    assert "* SORT 4 3\r\n" in await sort(alice, "(REVERSE SUBJECT) UTF-8 OR LARGER 400 SEEN")
    assert "* SORT\r\n" in await sort(alice, "(SUBJECT) UTF-8 SUBJECT nothing-like-this")


async def test_empty_folder(alice) -> None:
    await select(alice)
    assert "* SORT\r\n" in await sort(alice, "(DATE SUBJECT) UTF-8 ALL")


@pytest.mark.parametrize("charset", ["ISO-8859-1", '"KOI8-R"', "UTF-7"])
async def test_another_charset_is_badcharset(alice, charset) -> None:
    await put(alice, subject="a")
    await select(alice)
    out = await alice.line(f"t SORT (SUBJECT) {charset} ALL")
    assert out.startswith("t NO [BADCHARSET (US-ASCII UTF-8)]"), out
    assert "* SORT" not in out


@pytest.mark.parametrize(
    "args",
    [
        "SUBJECT UTF-8 ALL",  # the criteria need their parentheses
        "() UTF-8 ALL",  # and at least one key
        "(BOGUS) UTF-8 ALL",
        "(REVERSE) UTF-8 ALL",
        "(REVERSE REVERSE DATE) UTF-8 ALL",
        "(SUBJECT DATE UTF-8 ALL",
        "(SUBJECT) ALL",  # the charset is not optional (RFC 5256 3)
        "(SUBJECT) UTF-8",  # nor are the search keys
        "(SUBJECT) UTF-8 FOO",
        "(SUBJECT)UTF-8 ALL",
        "",
    ],
)
async def test_syntax_errors_are_bad(alice, args) -> None:
    await put(alice, subject="a")
    await select(alice)
    out = await alice.line(f"t SORT {args}".rstrip())
    assert out.startswith("t BAD"), out
    out = await alice.line(f"t UID SORT {args}".rstrip())
    assert out.startswith("t BAD"), out


async def test_sort_needs_a_selected_folder(alice) -> None:
    out = await alice.line("t SORT (SUBJECT) UTF-8 ALL")
    assert out == "t BAD SORT is not valid in the authenticated state\r\n", out


async def test_no_expunge_while_answering_sort_by_sequence_number(alice, make_session) -> None:
    for subject in ("b", "a", "c"):
        await put(alice, subject=subject)
    await select(alice)
    other = make_session()
    assert "a0 OK" in await other.line("a0 AUTHENTICATE EXTERNAL =")
    await select(other)
    await other.line("d STORE 1 +FLAGS (\\Deleted)")
    assert "d OK" in await other.line("d EXPUNGE")
    out = await sort(alice, "(SUBJECT) UTF-8 ALL")
    assert "* SORT 2 3\r\n" in out and "EXPUNGE" not in out, out  # 1 is still there for the client
    assert "* 1 EXPUNGE" in await alice.line("n NOOP")


# -- the rules, one by one (RFC 5256 2.1, 2.2, 3) ------------------------------------------


@pytest.mark.parametrize(
    ("subject", "base", "reply"),
    [
        ("Hello", "Hello", False),
        ("  Hello \t  world  ", "Hello world", False),
        ("Re: Hello", "Hello", True),
        ("RE:Hello", "Hello", True),
        ("re : Hello", "Hello", True),
        ("Fw: Hello", "Hello", True),
        ("FWD: Hello", "Hello", True),
        ("Re[2]: Hello", "Hello", True),
        ("Re: Re: Fwd: Hello", "Hello", True),
        ("Re: [foo] Fwd: Hello (fwd)", "Hello", True),
        ("[foo] Re: Hello", "Hello", True),
        ("[foo] [bar] Hello", "Hello", False),  # blobs alone make no reply
        ("[foo]", "[foo]", False),  # the last blob is the base when nothing else is left
        ("[foo] [bar]", "[bar]", False),
        ("Hello (fwd)", "Hello", True),
        ("Hello (FWD) (fwd)  ", "Hello", True),
        ("[fwd: Hello]", "Hello", True),
        ("[Fwd: Re: [list] Hello (fwd)]", "Hello", True),
        ("[fwd: [fwd: Hello] ]", "Hello", True),
        ("Reply to this", "Reply to this", False),  # "re" without a colon is text
        ("Re(2): Hello", "Re(2): Hello", False),  # only a [blob] may sit before the colon
        ("Re: ", "", True),
        ("", "", False),
        ("Re:\r\n Hello", "Hello", True),  # a continuation is a space
        ("[unclosed Re: Hello", "[unclosed Re: Hello", False),
    ],
)
def test_base_subject(subject, base, reply) -> None:
    assert base_subject(subject) == (base, reply)


def test_base_subject_is_linear_on_many_blobs() -> None:
    subject = "[x]" * 20_000 + " Hello"
    assert base_subject(subject) == ("Hello", False)
    assert base_subject("Re: " * 20_000 + "Hello") == ("Hello", True)
    assert base_subject("[fwd: " * 5_000 + "Hello" + "]" * 5_000) == ("Hello", True)


def test_sent_date() -> None:
    internal = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    assert sent_date("Sat, 31 Dec 2000 16:01:33 -0800", internal) == datetime(2001, 1, 1, 0, 1, 33, tzinfo=UTC)
    assert sent_date("Sat, 31 Dec 2000 16:01:33 -0000", internal) == datetime(2000, 12, 31, 16, 1, 33, tzinfo=UTC)
    assert sent_date("", internal) == internal
    assert sent_date("32 Foo 99999 99:99", internal) == internal


@pytest.mark.parametrize(
    ("value", "mailbox"),
    [
        ("Zed <mike@b.test>", "mike"),
        ("mike@b.test, adam@a.test", "mike"),
        ('"Doe, John" <jdoe@x.test>', "jdoe"),
        ("=?utf-8?q?Z=C3=A9?= <ze@x.test>", "ze"),
        ("undisclosed-recipients:;", ""),
        ("", ""),
    ],
)
def test_first_mailbox(value, mailbox) -> None:
    assert first_mailbox(value) == mailbox
