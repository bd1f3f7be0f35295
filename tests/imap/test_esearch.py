"""ESEARCH (RFC 4731): SEARCH RETURN (MIN MAX ALL COUNT), through the sans-IO session."""

from __future__ import annotations

import pytest


async def _five(alice) -> None:
    for i in range(5):
        data = f"From: a@hopital.test\r\nSubject: s{i}\r\n\r\nbody\r\n".encode()
        out = await alice.send(f"ap APPEND INBOX {{{len(data)}+}}\r\n".encode() + data + b"\r\n")
        assert b"ap OK" in out
    await alice.line("s SELECT INBOX")
    await alice.line("d STORE 2,3,5 +FLAGS (\\Seen)")


async def test_esearch_is_advertised(alice) -> None:
    assert "ESEARCH" in await alice.line("c CAPABILITY")


async def test_return_min_max_count_all(alice) -> None:
    await _five(alice)
    out = await alice.line("x SEARCH RETURN (MIN MAX COUNT ALL) SEEN")
    assert '* ESEARCH (TAG "x") MIN 2 MAX 5 COUNT 3 ALL 2:3,5\r\n' in out, out
    assert "* SEARCH" not in out and "x OK" in out


async def test_uid_search_says_uid_and_empty_return_means_all(alice) -> None:
    await _five(alice)
    out = await alice.line("u UID SEARCH RETURN () UNSEEN")
    assert '* ESEARCH (TAG "u") UID ALL 1,4\r\n' in out, out


async def test_nothing_found_gives_only_the_count(alice) -> None:
    await _five(alice)
    out = await alice.line("n SEARCH RETURN (MIN MAX ALL COUNT) DELETED")
    assert '* ESEARCH (TAG "n") COUNT 0\r\n' in out, out
    out = await alice.line("n2 SEARCH RETURN (MIN) DELETED")
    assert '* ESEARCH (TAG "n2")\r\n' in out, out


async def test_return_with_a_charset(alice) -> None:
    await _five(alice)
    out = await alice.line('c SEARCH RETURN (COUNT) CHARSET UTF-8 SUBJECT "s"')
    assert '* ESEARCH (TAG "c") COUNT 5' in out, out


@pytest.mark.parametrize("opts", ["(SAVE BOGUS)", "(BOGUS)", "(MIN", "MIN", "()x"])
async def test_unknown_or_malformed_options_are_bad(alice, opts) -> None:
    await _five(alice)
    out = await alice.line(f"b SEARCH RETURN {opts} ALL")
    assert out.startswith("b BAD"), out


async def test_classic_search_is_unchanged(alice) -> None:
    await _five(alice)
    assert "* SEARCH 2 3 5\r\n" in await alice.line("s SEARCH SEEN")


# -- APPENDLIMIT (RFC 7889), beside: the limit APPEND enforces, announced --------------------


async def test_appendlimit_is_announced_and_is_the_limit_append_enforces(alice) -> None:
    import re

    caps = await alice.line("c CAPABILITY")
    limit = int(re.search(r"APPENDLIMIT=(\d+)", caps).group(1))
    lim = alice.session.core.settings.limits
    assert limit == min(lim.max_message_size, lim.imap_literal)
    out = await alice.line("s STATUS INBOX (APPENDLIMIT MESSAGES)")
    assert f"APPENDLIMIT {limit} MESSAGES 0" in out, out
    # The core refuses a message above max_message_size; a literal above the parser's own
    # limit is refused before any of its bytes is read.
    out = await alice.send(f"a APPEND INBOX {{{lim.imap_literal + 1}}}\r\n".encode())
    assert b"a BAD" in out and b"Literal too large" in out, out
