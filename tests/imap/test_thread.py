"""THREAD and UID THREAD (RFC 5256 4, 5): ORDEREDSUBJECT and REFERENCES through the sans-IO
session, and the threading module on inputs no client would send."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta

import pytest
from test_sort import put, select

from imap.threading_algorithms import (
    MAX_REFERENCES,
    ThreadMessage,
    message_ids,
    references,
    references_of,
    thread_lists,
)


def at(hhmm: str) -> str:
    return f"Mon, 02 Nov 2026 {hhmm}:00 +0000"


async def thread(d, args: str) -> str:
    out = await d.line(f"t THREAD {args}")
    assert "t OK THREAD completed" in out, out
    return out


async def test_orderedsubject(alice) -> None:
    await put(alice, subject="Plan", date=at("10:00"))
    await put(alice, subject="Lunch", date=at("09:00"))
    await put(alice, subject="Re: plan", date=at("11:00"))
    await put(alice, subject="Fwd: Plan", date=at("10:30"))
    await put(alice, subject="Re: Lunch", date=at("12:00"))
    await put(alice, subject="Solo", date=at("08:00"))
    await put(alice, from_="x@y.test", date=at("13:00"))  # no Subject
    await select(alice)
    # One thread per base subject, sorted by date inside, the first message the parent of
    # every other (no grandchildren); threads by the date of their first message.
    assert "* THREAD (6)(2 5)(1 (4)(3))(7)\r\n" in await thread(alice, "ORDEREDSUBJECT UTF-8 ALL")


async def test_references_builds_the_tree_of_replies(alice) -> None:
    await put(alice, message_id="<a@x.test>", subject="Plan", date=at("10:00"))
    await put(alice, message_id="<b@x.test>", in_reply_to="<a@x.test>", subject="Re: Plan", date=at("11:00"))
    await put(alice, message_id="<c@x.test>", references="<a@x.test> <b@x.test>", subject="Re: Plan", date=at("12:00"))
    await put(alice, message_id="<d@x.test>", references="<a@x.test>", subject="Re: Plan", date=at("11:30"))
    # Two replies to a message that is not in the folder: a dummy holds them together.
    await put(alice, message_id="<e@x.test>", references="<missing@x.test>", subject="Other", date=at("10:30"))
    await put(alice, message_id="<f@x.test>", references="<missing@x.test>", subject="Re: Other", date=at("10:45"))
    # One reply to a chain of absent messages: the dummies go, it is a thread of its own.
    await put(
        alice, message_id="<g@x.test>", references="<gone@x.test> <gone2@x.test>", subject="Lonely", date=at("13:00")
    )
    # No references, but "Re:" the subject of a thread: it joins that thread.
    await put(alice, message_id="<h@x.test>", subject="Re: Plan", date=at("14:00"))
    await select(alice)
    assert "* THREAD (1 (2 3)(4)(8))((5)(6))(7)\r\n" in await thread(alice, "REFERENCES UTF-8 ALL")


async def test_references_gathers_threads_by_subject(alice) -> None:
    # Two threads with the same subject and neither a reply: under a new dummy, with the
    # replies that come later.
    await put(alice, message_id="<1@x.test>", subject="Meeting", date=at("10:00"))
    await put(alice, message_id="<2@x.test>", subject="Meeting", date=at("11:00"))
    await put(alice, message_id="<3@x.test>", subject="Re: Meeting", date=at("12:00"))
    # A reply sent before the message it answers (by subject): under it.
    await put(alice, message_id="<4@x.test>", subject="Re: Lunch", date=at("09:00"))
    await put(alice, message_id="<5@x.test>", subject="Lunch", date=at("09:30"))
    # Two dummies with the same subject: one dummy with all their children.
    await put(alice, message_id="<6@x.test>", references="<m1@x.test>", subject="Topic", date=at("13:00"))
    await put(alice, message_id="<7@x.test>", references="<m1@x.test>", subject="Topic", date=at("13:10"))
    await put(alice, message_id="<8@x.test>", references="<m2@x.test>", subject="Re: Topic", date=at("13:20"))
    await put(alice, message_id="<9@x.test>", references="<m2@x.test>", subject="Topic", date=at("13:30"))
    # An empty subject never gathers anything.
    await put(alice, message_id="<10@x.test>", date=at("14:00"))
    await put(alice, message_id="<11@x.test>", date=at("14:10"))
    await select(alice)
    out = await thread(alice, "REFERENCES UTF-8 ALL")
    assert "* THREAD (5 4)((1)(2)(3))((6)(7)(8)(9))(10)(11)\r\n" in out, out


async def test_references_loops_do_not_hang_and_lose_nothing(alice) -> None:
    await put(alice, message_id="<l1@x.test>", references="<l2@x.test>", subject="l1", date=at("10:00"))
    await put(alice, message_id="<l2@x.test>", references="<l1@x.test>", subject="l2", date=at("10:01"))
    await put(alice, message_id="<l3@x.test>", references="<l3@x.test>", subject="l3", date=at("10:02"))
    await put(
        alice,
        message_id="<l4@x.test>",
        references="<l1@x.test> <l2@x.test> <l1@x.test> <l4@x.test> <l1@x.test>",
        subject="l4",
        date=at("10:03"),
    )
    await select(alice)
    # 1 is a reply to 2; 2's reference to 1 would close the loop and is not followed; 3
    # refers to itself; 4's chain loops twice, its parent is its last reference, 1.
    assert "* THREAD (2 1 4)(3)\r\n" in await thread(alice, "REFERENCES UTF-8 ALL")


async def test_references_message_ids_duplicates_and_quoting(alice) -> None:
    await put(alice, message_id="<dup@x.test>", subject="A", date=at("10:00"))
    await put(alice, message_id="<dup@x.test>", subject="B", date=at("11:00"))  # a duplicate: not its ID
    await put(alice, in_reply_to="<dup@x.test> <whatever@x.test>", subject="C", date=at("12:00"))
    await put(alice, message_id='<"q.x"@x.test>', subject="D", date=at("13:00"))
    await put(alice, references="<q.x@x.test>", in_reply_to="<dup@x.test>", subject="E", date=at("14:00"))
    await put(alice, message_id="<Case@x.test>", subject="F", date=at("15:00"))
    await put(alice, in_reply_to="<case@x.test>", subject="G", date=at("16:00"))  # IDs are case-sensitive
    await select(alice)
    assert "* THREAD (1 3)(2)(4 5)(6)(7)\r\n" in await thread(alice, "REFERENCES UTF-8 ALL")


async def test_uid_thread_answers_with_uids(alice) -> None:
    await put(alice, subject="gone", date=at("09:00"))
    await put(alice, message_id="<p@x.test>", subject="P", date=at("10:00"))
    await put(alice, in_reply_to="<p@x.test>", subject="Q", date=at("11:00"))
    await put(alice, subject="P", date=at("12:00"))
    await select(alice)
    await alice.line("d STORE 1 +FLAGS (\\Deleted)")
    assert "d OK" in await alice.line("d EXPUNGE")
    out = await alice.line("u UID THREAD REFERENCES UTF-8 ALL")
    assert "* THREAD ((2 3)(4))\r\n" in out and "u OK UID THREAD completed" in out, out
    assert "* THREAD ((1 2)(3))\r\n" in await thread(alice, "REFERENCES UTF-8 ALL")
    out = await alice.line("u UID THREAD ORDEREDSUBJECT UTF-8 ALL")
    assert "* THREAD (2 4)(3)\r\n" in out, out


async def test_the_search_criteria_choose_the_messages(alice) -> None:
    await put(alice, message_id="<a@x.test>", subject="x", date=at("10:00"))
    await put(alice, message_id="<b@x.test>", references="<a@x.test>", subject="y", date=at("11:00"))
    await put(alice, message_id="<c@x.test>", references="<a@x.test> <b@x.test>", subject="z", date=at("12:00"))
    await select(alice)
    assert "* THREAD (1 2 3)\r\n" in await thread(alice, "REFERENCES UTF-8 ALL")
    await alice.line("f STORE 2 +FLAGS (\\Deleted)")
    # 2 is not searched: a dummy in the middle of the chain, which goes.
    assert "* THREAD (1 3)\r\n" in await thread(alice, "REFERENCES US-ASCII UNDELETED")
    assert "* THREAD (2)\r\n" in await thread(alice, "REFERENCES UTF-8 DELETED")
    assert "* THREAD (1)(3)\r\n" in await thread(alice, "ORDEREDSUBJECT UTF-8 NOT 2")
    assert "* THREAD\r\n" in await thread(alice, 'REFERENCES UTF-8 SUBJECT "no such"')


@pytest.mark.parametrize("algorithm", ["ORDEREDSUBJECT", "REFERENCES", "references"])
async def test_empty_folder(alice, algorithm) -> None:
    await select(alice)
    assert "* THREAD\r\n" in await thread(alice, f"{algorithm} UTF-8 ALL")


async def test_another_charset_is_badcharset(alice) -> None:
    await select(alice)
    out = await alice.line("t THREAD REFERENCES ISO-8859-15 ALL")
    assert out == "t NO [BADCHARSET (US-ASCII UTF-8)] Unsupported charset ISO-8859-15\r\n", out


@pytest.mark.parametrize(
    "args",
    [
        "BOGUS UTF-8 ALL",  # an algorithm this server does not know
        "UTF-8 ALL",
        "REFERENCES ALL",  # no charset
        "REFERENCES UTF-8",  # no search key
        "REFERENCES UTF-8 FOO",
        "(REFERENCES) UTF-8 ALL",
        "",
    ],
)
async def test_syntax_errors_are_bad(alice, args) -> None:
    await put(alice, subject="a")
    await select(alice)
    for command in ("THREAD", "UID THREAD"):
        out = await alice.line(f"t {command} {args}".rstrip())
        assert out.startswith("t BAD"), out
        assert "* THREAD" not in out


async def test_thread_needs_a_selected_folder(alice) -> None:
    out = await alice.line("t THREAD REFERENCES UTF-8 ALL")
    assert out == "t BAD THREAD is not valid in the authenticated state\r\n", out


# -- the module, on inputs no client would send ------------------------------------------

T0 = datetime(2026, 11, 2, tzinfo=UTC)


def msg(n: int, refs: tuple[str, ...] = (), subject: str = "") -> ThreadMessage:
    return ThreadMessage(
        number=n, seq=n, sent=T0 + timedelta(minutes=n), subject=subject, message_id=f"{n}@x", references=refs
    )


def numbers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", text)]


@pytest.mark.parametrize("reverse", [False, True])
def test_a_deep_chain_in_any_order_is_one_thread(reverse) -> None:
    """A chain of 5,000 replies, each naming all its ancestors up to the reference limit,
    delivered in order or newest first: one thread, no recursion anywhere."""
    n = 5_000

    def ancestry(i: int) -> tuple[str, ...]:  # what `references_of` keeps of 1 .. i-1
        kept = [1, *range(max(2, i - MAX_REFERENCES + 1), i)] if i > 1 else []
        return tuple(f"{j}@x" for j in kept)

    msgs = [msg(i, ancestry(i)) for i in range(1, n + 1)]
    if reverse:
        msgs = [ThreadMessage(**{**m.__dict__, "seq": n + 1 - m.seq}) for m in msgs]
    text = thread_lists(references(msgs))
    assert text == "(" + " ".join(str(i) for i in range(1, n + 1)) + ")"


def test_a_deep_branching_tree_is_written_without_recursion() -> None:
    """Each message has two replies, one of them answered again, 3,000 deep."""
    msgs = [msg(1)]
    for i in range(1, 3_000):
        parent = 2 * i - 1
        msgs += [msg(2 * i, (f"{parent}@x",)), msg(2 * i + 1, (f"{parent}@x",))]
    text = thread_lists(references(msgs))
    assert text.startswith("(1 (2)(3 (4)(5 (6)(7 ") and text.endswith(")" * 3_000)
    assert sorted(numbers(text)) == list(range(1, len(msgs) + 1))


def test_hostile_references_are_bounded_and_lose_no_message() -> None:
    """Every message names 150 random others, in random order: loops everywhere. Each
    message is answered exactly once, and fast (the loop checks share a bounded budget)."""
    rnd = random.Random(5256)
    n = 3_000
    msgs = [msg(i, tuple(f"{rnd.randint(1, n)}@x" for _ in range(150))[:MAX_REFERENCES]) for i in range(1, n + 1)]
    text = thread_lists(references(msgs))
    assert sorted(numbers(text)) == list(range(1, n + 1))


def test_references_of() -> None:
    many = " ".join(f"<{i}@x>" for i in range(150))
    refs = references_of(many, "<irt@x>")
    assert len(refs) == MAX_REFERENCES and refs[0] == "0@x" and refs[1] == "51@x" and refs[-1] == "149@x"
    assert references_of("", "<a@x> <b@x>") == ("a@x",)  # In-Reply-To: the first only
    assert references_of("no ids here", "junk <c@x>") == ("c@x",)
    assert references_of("<r@x>", "<a@x>") == ("r@x",)
    assert references_of("", "") == ()


def test_message_ids_are_normalised() -> None:
    assert message_ids('<"a.b"@x.test> <a.b@x.test>') == ["a.b@x.test", "a.b@x.test"]
    assert message_ids('<"a\\"b"@x>') == ['a"b@x']
    assert message_ids("<a@\r\n x.test>") == ["a@x.test"]
    assert message_ids("<no-at-sign> <@x> <a@> <> junk") == []
    assert message_ids("<Case@X>") == ["Case@X"]  # case is kept: comparisons are case-sensitive
