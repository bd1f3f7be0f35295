"""SEARCHRES (RFC 5182): SEARCH RETURN (SAVE) keeps the result as `$`, which FETCH, STORE,
COPY, MOVE, SEARCH and UID EXPUNGE then name; through the sans-IO session."""

from __future__ import annotations

import re

import pytest


async def _five(alice) -> None:
    """INBOX with five messages (UIDs 1..5), 2, 3 and 5 \\Seen, selected."""
    for i in range(5):
        data = f"From: a@hopital.test\r\nSubject: s{i}\r\n\r\nbody\r\n".encode()
        out = await alice.send(f"ap APPEND INBOX {{{len(data)}+}}\r\n".encode() + data + b"\r\n")
        assert b"ap OK" in out
    await alice.line("s SELECT INBOX")
    await alice.line("d STORE 2,3,5 +FLAGS.SILENT (\\Seen)")


def _fetched(out: str) -> list[tuple[int, int]]:
    """(sequence number, UID) of each untagged FETCH in `out`."""
    return [(int(s), int(u)) for s, u in re.findall(r"\* (\d+) FETCH \(UID (\d+)", out)]


async def _dollar(alice) -> list[tuple[int, int]]:
    out = await alice.line("f FETCH $ (UID)")
    assert "f OK" in out, out
    return _fetched(out)


async def test_searchres_is_advertised(alice) -> None:
    caps = await alice.line("c CAPABILITY")
    assert " SEARCHRES" in caps and " ESEARCH" in caps  # RFC 5182 2.1: SEARCHRES needs ESEARCH


async def test_save_alone_answers_nothing_and_fetch_uses_it(alice) -> None:
    await _five(alice)
    out = await alice.line("a SEARCH RETURN (SAVE) SEEN")
    assert out == "a OK SEARCH completed\r\n", out
    assert await _dollar(alice) == [(2, 2), (3, 3), (5, 5)]


async def test_save_with_other_options_still_answers_them(alice) -> None:
    await _five(alice)
    out = await alice.line("a SEARCH RETURN (SAVE COUNT) UNSEEN")
    assert '* ESEARCH (TAG "a") COUNT 2\r\n' in out and "a OK" in out, out
    assert await _dollar(alice) == [(1, 1), (4, 4)]


async def test_dollar_is_uids_whichever_command_saved_or_uses_it(alice) -> None:
    await _five(alice)
    await alice.line("e STORE 1 +FLAGS.SILENT (\\Deleted)")
    await alice.line("x EXPUNGE")  # UIDs 2..5 are now sequence numbers 1..4
    assert (await alice.line("a UID SEARCH RETURN (SAVE) UID 3:4")).endswith("a OK UID SEARCH completed\r\n")
    assert await _dollar(alice) == [(2, 3), (3, 4)]
    out = await alice.line("u UID FETCH $ (FLAGS)")
    assert _fetched(out) == [(2, 3), (3, 4)], out
    assert "a OK" in await alice.line("a SEARCH RETURN (SAVE) 1")
    out = await alice.line("u UID FETCH $ (FLAGS)")
    assert _fetched(out) == [(1, 2)], out


async def test_store_changes_only_the_saved_messages(alice) -> None:
    await _five(alice)
    await alice.line("a SEARCH RETURN (SAVE) UNSEEN")
    out = await alice.line("s STORE $ +FLAGS (\\Flagged)")
    assert re.findall(r"\* (\d+) FETCH", out) == ["1", "4"] and "s OK" in out, out
    out = await alice.line("s2 UID STORE $ -FLAGS (\\Flagged)")
    assert re.findall(r"\* (\d+) FETCH \(UID (\d+)", out) == [("1", "1"), ("4", "4")], out
    assert "* SEARCH\r\n" in await alice.line("c SEARCH FLAGGED")


async def test_copy_and_move_the_saved_messages(alice) -> None:
    await _five(alice)
    assert "OK" in await alice.line("c CREATE Archive")
    await alice.line("a SEARCH RETURN (SAVE) SEEN")
    out = await alice.line("c COPY $ Archive")
    assert re.search(r"c OK \[COPYUID \d+ 2:3,5 1:3\]", out), out
    out = await alice.line("m UID MOVE $ Archive")
    assert re.search(r"\* OK \[COPYUID \d+ 2:3,5 4:6\]", out), out
    assert "* 5 EXPUNGE\r\n* 3 EXPUNGE\r\n* 2 EXPUNGE\r\n" in out, out
    assert "MESSAGES 6" in await alice.line("st STATUS Archive (MESSAGES)")
    # Moved away, so expunged from INBOX: no longer in `$`.
    assert await _dollar(alice) == []


async def test_dollar_as_a_search_key(alice) -> None:
    await _five(alice)
    await alice.line("a SEARCH RETURN (SAVE) SEEN")
    assert "* SEARCH 2 3 5\r\n" in await alice.line("b SEARCH $")
    assert "* SEARCH 2 3 5\r\n" in await alice.line("b UID SEARCH UID $")
    assert "* SEARCH 1 4\r\n" in await alice.line("b SEARCH NOT $")
    assert "* SEARCH 3 5\r\n" in await alice.line("b SEARCH $ UID 3:*")
    assert '* ESEARCH (TAG "e") UID ALL 2:3,5\r\n' in await alice.line("e UID SEARCH RETURN (ALL) OR $ DELETED")


async def test_a_save_can_refine_the_saved_result(alice) -> None:
    await _five(alice)
    await alice.line("a SEARCH RETURN (SAVE) SEEN")
    # `$` in the key is the result saved before this SEARCH; SAVE then replaces it.
    assert "b OK" in await alice.line("b SEARCH RETURN (SAVE) $ UID 3:*")
    assert await _dollar(alice) == [(3, 3), (5, 5)]


async def test_sort_and_thread_take_dollar_as_a_key(alice) -> None:
    await _five(alice)
    await alice.line("a SEARCH RETURN (SAVE) SEEN")
    out = await alice.line("s SORT (REVERSE SUBJECT) UTF-8 $")
    assert "* SORT 5 3 2\r\n" in out, out


async def test_uid_expunge_of_the_saved_messages(alice) -> None:
    await _five(alice)
    await alice.line("d STORE 1:* +FLAGS.SILENT (\\Deleted)")
    await alice.line("a SEARCH RETURN (SAVE) UNSEEN")
    out = await alice.line("x UID EXPUNGE $")
    assert out == "* 4 EXPUNGE\r\n* 1 EXPUNGE\r\nx OK UID EXPUNGE completed\r\n", out
    assert "MESSAGES 3" in await alice.line("st STATUS INBOX (MESSAGES)")
    assert await _dollar(alice) == []


async def test_dollar_before_any_save_is_empty(alice) -> None:
    await _five(alice)
    assert await alice.line("f FETCH $ (UID)") == "f OK FETCH completed\r\n"
    assert await alice.line("s STORE $ +FLAGS (\\Flagged)") == "s OK STORE completed\r\n"
    assert await alice.line("c COPY $ INBOX") == "c OK COPY completed\r\n"
    assert "* SEARCH\r\n" in await alice.line("b SEARCH $")
    assert "* SEARCH 1 2 3 4 5\r\n" in await alice.line("b SEARCH NOT $")


async def test_a_save_that_finds_nothing_empties_dollar(alice) -> None:
    await _five(alice)
    await alice.line("a SEARCH RETURN (SAVE) SEEN")
    assert "b OK" in await alice.line("b SEARCH RETURN (SAVE) DELETED")
    assert await _dollar(alice) == []


@pytest.mark.parametrize("again", ["SELECT INBOX", "EXAMINE INBOX"])
async def test_select_and_examine_reset_dollar(alice, again) -> None:
    await _five(alice)
    await alice.line("a SEARCH RETURN (SAVE) SEEN")
    assert "r OK" in await alice.line(f"r {again}")
    assert await _dollar(alice) == []


async def test_unselect_and_close_reset_dollar(alice) -> None:
    await _five(alice)
    for leave in ("UNSELECT", "CLOSE"):
        await alice.line("a SEARCH RETURN (SAVE) SEEN")
        assert "l OK" in await alice.line(f"l {leave}")
        out = await alice.line("f FETCH $ (UID)")
        assert out.startswith("f BAD"), out  # no folder selected, so no `$` either
        await alice.line("s SELECT INBOX")
        assert await _dollar(alice) == []


async def test_a_save_answered_no_empties_dollar(alice) -> None:
    await _five(alice)
    await alice.line("a SEARCH RETURN (SAVE) SEEN")
    out = await alice.line("b SEARCH RETURN (SAVE) CHARSET KOI8-R SEEN")
    assert out.startswith("b NO [BADCHARSET"), out
    assert await _dollar(alice) == []


async def test_searches_that_must_not_change_dollar(alice) -> None:
    # RFC 5182 2.1: neither a SEARCH answered BAD, nor one without SAVE answered NO, nor a
    # successful one without SAVE changes the search result variable.
    await _five(alice)
    await alice.line("a SEARCH RETURN (SAVE) SEEN")
    assert (await alice.line("b SEARCH RETURN (SAVE) FROB")).startswith("b BAD")
    assert (await alice.line("c SEARCH CHARSET KOI8-R SEEN")).startswith("c NO [BADCHARSET")
    assert "d OK" in await alice.line("d SEARCH RETURN (ALL) UNSEEN")
    assert "e OK" in await alice.line("e SEARCH UNSEEN")
    assert await _dollar(alice) == [(2, 2), (3, 3), (5, 5)]


async def test_messages_expunged_by_another_session_leave_dollar(alice, make_session) -> None:
    await _five(alice)
    await alice.line("a SEARCH RETURN (SAVE) SEEN")
    other = make_session()
    assert "o OK" in await other.line("o AUTHENTICATE EXTERNAL =")
    await other.line("s SELECT INBOX")
    await other.line("d UID STORE 3 +FLAGS.SILENT (\\Deleted)")
    assert "x OK" in await other.line("x EXPUNGE")
    out = await alice.line("n NOOP")
    assert "* 3 EXPUNGE\r\n" in out, out
    assert await _dollar(alice) == [(2, 2), (4, 5)]  # UID 5 is now message 4


@pytest.mark.parametrize(
    ("returns", "kept"),
    [
        ("MIN", [(1, 1)]),
        ("MAX", [(4, 4)]),
        ("MIN MAX", [(1, 1), (4, 4)]),
        ("MAX MIN", [(1, 1), (4, 4)]),
        ("MIN ALL", [(1, 1), (3, 3), (4, 4)]),
        ("MAX COUNT", [(1, 1), (3, 3), (4, 4)]),
        ("MIN MAX COUNT", [(1, 1), (3, 3), (4, 4)]),
        ("ALL", [(1, 1), (3, 3), (4, 4)]),
        ("", [(1, 1), (3, 3), (4, 4)]),
    ],
)
async def test_save_with_min_and_max_keeps_what_they_name(alice, returns, kept) -> None:
    # RFC 5182 2.4: SAVE with MIN and/or MAX only (no ALL, no COUNT) keeps those messages;
    # with ALL or COUNT, or alone, every message found.
    await _five(alice)
    await alice.line("n STORE 1,3:5 +FLAGS.SILENT (\\Flagged)")
    opts = f"SAVE {returns}".strip()
    assert "a OK" in await alice.line(f"a SEARCH RETURN ({opts}) FLAGGED UID 1:4")
    assert await _dollar(alice) == kept


async def test_save_with_min_of_one_message_keeps_that_one(alice) -> None:
    await _five(alice)
    out = await alice.line("a UID SEARCH RETURN (MIN MAX SAVE) UID 4")
    assert '* ESEARCH (TAG "a") UID MIN 4 MAX 4\r\n' in out, out
    assert await _dollar(alice) == [(4, 4)]


@pytest.mark.parametrize(
    "command",
    [
        "FETCH $,1 (UID)",
        "FETCH 1,$ (UID)",
        "FETCH $:3 (UID)",
        "FETCH 1:$ (UID)",
        "UID STORE $,2 +FLAGS (\\Seen)",
        "COPY $,1 INBOX",
        "SEARCH $,1",
        "SEARCH UID 1,$",
        "UID EXPUNGE $:*",
        "FETCH $$ (UID)",
    ],
)
async def test_dollar_cannot_be_combined_with_numbers(alice, command) -> None:
    await _five(alice)
    await alice.line("a SEARCH RETURN (SAVE) SEEN")
    out = await alice.line(f"b {command}")
    assert out.startswith("b BAD"), out
    assert "MESSAGES 5" in await alice.line("st STATUS INBOX (MESSAGES)")
    assert await _dollar(alice) == [(2, 2), (3, 3), (5, 5)]  # BAD: `$` unchanged


async def test_dollar_is_refused_where_rfc_5182_gives_it_no_meaning(alice) -> None:
    await alice.line("e ENABLE QRESYNC")
    out = await alice.line("s SELECT INBOX (QRESYNC (1 1 $))")
    assert out.startswith("s BAD") and "$" in out, out


def test_the_parser_marks_dollar_and_takes_save_out_of_the_options() -> None:
    from imap.protocol.commands import Fetch, Search, SequenceSet
    from imap.protocol.parser import parse_command

    f = parse_command(b"a UID FETCH $ (UID)\r\n")
    assert isinstance(f, Fetch) and f.set == SequenceSet((), saved=True) and str(f.set) == "$"
    with pytest.raises(ValueError):
        f.set.contains(1, 1)  # only the folder view knows what `$` holds
    s = parse_command(b"b SEARCH RETURN (SAVE) $\r\n")
    assert isinstance(s, Search) and (s.return_, s.save) == ((), True)
    assert s.key == ("SEQ", SequenceSet((), saved=True))
    s = parse_command(b"c SEARCH RETURN (MIN SAVE MIN) ALL\r\n")
    assert (s.return_, s.save) == (("MIN",), True)
    s = parse_command(b"d SEARCH RETURN () ALL\r\n")
    assert (s.return_, s.save) == (("ALL",), False)
