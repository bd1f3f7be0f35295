"""LIST pattern matching without backtracking, INBOX case-insensitivity, RENAME of a
hierarchy, flag validation, one-transaction MOVE, and the cheap selected-state resync."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from imap_fakes import ALICE, sample

from imap.commands.mailbox import MAX_PATTERN, Pattern
from imap.flags import check_flags

# -- LIST patterns ---------------------------------------------------------------------------


def reference_match(pattern: str, name: str) -> bool:
    """The RFC 9051 6.3.9 meaning, by a regular expression (fine on small inputs)."""
    rx = "".join(".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, name, re.S) is not None


@settings(max_examples=2000, deadline=None)
@given(st.text("ab/*%", max_size=8), st.text("ab/", max_size=8))
def test_pattern_agrees_with_the_rfc_meaning(pattern, name):
    assert Pattern("", pattern).match(name) == reference_match(pattern, name)


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "pattern",
    [
        "*" * 12 + "Z",
        "*a" * 100 + "Z",
        "%a" * 100 + "Z",
        "*%" * 200 + "Z",
        "%/" * 100 + "Z",
        ("*a%" * 200)[: MAX_PATTERN - 1] + "Z",
    ],
)
def test_pathological_patterns_answer_at_once(pattern):
    for name in ("a" * 40, "a/" * 20, "a" * 255):
        assert Pattern("", pattern).match(name) is False
    assert Pattern("", "*a" * 100).match("a" * 255) is True
    assert Pattern("", "%a" * 100).match("a" * 255) is True
    assert Pattern("", "%a" * 100).match("a" * 100 + "/" + "a" * 100) is False


@pytest.mark.timeout(30)
async def test_list_with_pathological_patterns_through_the_session(alice):
    for i in range(20):
        await alice.line(f"c{i} CREATE {'a' * 40}{i:02d}/{'a' * 40}")
    out = await alice.line('l LIST "" "' + "*" * 12 + 'Z"')
    assert out.startswith("l OK")  # nothing matched, and it did answer
    out = await alice.line('l LIST "" ' + "%a" * 30 + "%")
    assert out.count("* LIST") == 20 and "/" not in out.replace('"/"', "")
    out = await alice.line('l LIST "" "' + "*a" * 40 + '"')
    assert out.count("* LIST") == 20  # the children: parents end in digits
    assert (await alice.line('l LIST "" "*%*%*"')).count("* LIST") == 40 + 5  # with the defaults
    too_long = "*" * (MAX_PATTERN + 1)
    assert (await alice.line(f'l LIST "" "{too_long}"')).startswith("l BAD")
    out = await alice.line('l LIST () "" (' + " ".join(["%"] * 17) + ")")
    assert out.startswith("l BAD")


async def test_inbox_is_case_insensitive_in_list(alice):
    await alice.line("a CREATE inboxes")
    await alice.line("b CREATE INBOX/Child")
    assert '"INBOX"' in await alice.line('l LIST "" inbox')
    assert '"INBOX/Child"' in await alice.line('l LIST "" Inbox/%')
    out = await alice.line('l LIST "" inboxes')  # not turned into "INBOXes"
    assert '"inboxes"' in out


# -- DELETE / RENAME -------------------------------------------------------------------------


async def test_delete_and_rename_inbox_in_any_case_are_refused_cleanly(alice):
    for cmd in ("DELETE inbox", "DELETE InBoX", "RENAME inbox Other", "RENAME Inbox Other"):
        out = await alice.line("a " + cmd)
        assert out.startswith("a NO [CANNOT]"), (cmd, out)
    await alice.line("c CREATE Work")
    assert (await alice.line("b RENAME Work inbox")).startswith("b NO [CANNOT]")
    assert '"Work"' in await alice.line('l LIST "" *')
    assert (await alice.line("s SELECT inbox")).rstrip().endswith("[READ-WRITE] SELECT completed")


async def folder_names(core) -> set[str]:
    return {f.name for f in await core.store.list_folders(ALICE)}


async def test_rename_hierarchy_clash_is_refused_and_changes_nothing(core, alice):
    for name in ("A", "A/x", "A/y", "B/x"):
        assert (await alice.line(f"c CREATE {name}")).startswith("c OK")
    before = await folder_names(core)
    out = await alice.line("r RENAME A B")  # "B" itself does not exist, but "B/x" does
    assert out.startswith("r NO [ALREADYEXISTS]") and "B/x" in out
    assert await folder_names(core) == before


async def test_rename_into_itself_is_refused(core, alice):
    await alice.line("c CREATE A")
    assert (await alice.line("r RENAME A A/B")).startswith("r NO [CANNOT]")
    assert "A" in await folder_names(core)


async def test_rename_is_one_transaction_a_failure_half_way_renames_nothing(core, alice, monkeypatch):
    """RENAME moves a folder and its inferiors in one transaction: a database failure after
    two of the three renames leaves the tree exactly as it was."""
    for name in ("A", "A/x", "A/y"):
        await alice.line(f"c CREATE {name}")
    before = await folder_names(core)
    real_run = core.store.commit.run

    async def failing_third_update(locks, run):
        async def wrapped(s):
            real_execute, updates = s.execute, []

            async def execute(stmt, *a, **k):
                if getattr(stmt, "is_update", False):
                    updates.append(stmt)
                    if len(updates) == 3:  # A -> B and A/x -> B/x are done
                        raise OSError("disk failure during RENAME")
                return await real_execute(stmt, *a, **k)

            s.execute = execute
            try:
                return await run(s)
            finally:
                del s.execute

        return await real_run(locks, wrapped)

    monkeypatch.setattr(core.store.commit, "run", failing_third_update)
    out = await alice.line("r RENAME A B")
    assert out.startswith("r NO [SERVERBUG]") and "nothing was changed" in out
    assert await folder_names(core) == before
    monkeypatch.setattr(core.store.commit, "run", real_run)
    assert (await alice.line("r RENAME A B")).startswith("r OK")
    names = await folder_names(core)
    assert {"B", "B/x", "B/y"} <= names and not {"A", "A/x", "A/y"} & names


# -- flags -----------------------------------------------------------------------------------


def test_system_flags_are_case_insensitive_and_canonical():
    assert check_flags(["\\seen", "\\DELETED", "\\fLaGgEd", "$Label", "\\recent", "\\Seen"]) == (
        ["\\Seen", "\\Deleted", "\\Flagged", "$Label"],
        None,
    )
    flags, why = check_flags(["\\Seen", "\\Bogus"])
    assert flags == [] and "\\Bogus" in why
    assert check_flags(["\\*"])[1]


async def test_store_and_append_accept_any_case_of_system_flags(core, alice):
    await core.deliver(ALICE, sample("one"))
    await alice.line("s SELECT INBOX")
    assert "FLAGS (\\Flagged \\Recent \\Seen)" in await alice.line("a STORE 1 +FLAGS (\\seen \\FLAGGED)")
    assert (await alice.line("b STORE 1 +FLAGS (\\Bogus)")).startswith("b BAD")
    raw = sample("draft")
    out = (await alice.send(b"c APPEND Drafts (\\draft) {%d+}\r\n" % len(raw) + raw + b"\r\n")).decode()
    assert "c OK" in out
    info = await core.store.get_folder(ALICE, "Drafts")
    assert [m.flags for m in await core.store.messages(ALICE, info.id)] == [frozenset({"\\Draft"})]


def test_append_does_not_reach_into_the_store_command_module():
    import imap.commands.append as append
    import imap.commands.store as store_cmd

    assert append.check_flags is check_flags and store_cmd.check_flags is check_flags


# -- MOVE ------------------------------------------------------------------------------------


async def test_move_is_one_store_call_with_rfc6851_responses(core, alice, monkeypatch):
    for i in range(5):
        await core.deliver(ALICE, sample(f"m{i}"), flags={"\\Seen"} if i == 1 else ())
    await alice.line("s SELECT INBOX")
    moves = []
    real_move = core.store.move

    async def move(mailbox, folder_id, uids, dest_id, **flag_rights):
        moves.append(list(uids))
        return await real_move(mailbox, folder_id, uids, dest_id, **flag_rights)

    async def forbidden(*a, **k):
        raise AssertionError("MOVE must be one Store.move transaction")

    monkeypatch.setattr(core.store, "move", move)
    for name in ("copy", "set_flags", "expunge"):
        monkeypatch.setattr(core.store, name, forbidden)
    out = await alice.line("m MOVE 2,4 Trash")
    assert moves == [[2, 4]]
    lines = out.splitlines()
    assert re.fullmatch(r"\* OK \[COPYUID \d+ 2,4 1:2\] Moved", lines[0]), out
    assert lines[1:] == ["* 4 EXPUNGE", "* 2 EXPUNGE", "m OK MOVE completed"]
    out = await alice.line("f UID FETCH 1:* (FLAGS)")
    assert [int(u) for u in re.findall(r"UID (\d+)", out)] == [1, 3, 5] and "EXPUNGE" not in out
    out = await alice.line("u UID MOVE 5 Trash")
    assert re.search(r"\* OK \[COPYUID \d+ 5 3\]", out) and "* 3 EXPUNGE" in out
    trash = await core.store.get_folder(ALICE, "Trash")
    metas = await core.store.messages(ALICE, trash.id)
    assert [m.uid for m in metas] == [1, 2, 3] and metas[0].flags == frozenset({"\\Seen"})
    assert "* 2 EXISTS" in await alice.line("x SELECT INBOX")


async def test_failed_move_changes_nothing(core, alice, monkeypatch):
    for i in range(3):
        await core.deliver(ALICE, sample(f"m{i}"))
    await alice.line("s SELECT INBOX")

    async def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(core.store, "move", broken)
    out = await alice.line("m MOVE 1:3 Trash")
    assert out.startswith("m NO") and "EXPUNGE" not in out
    assert alice.session.view.exists == 3
    # MOVE into the folder itself goes through the same (here failing) store move.
    assert (await alice.line("n MOVE 1 INBOX")).startswith("n NO") and alice.session.view.exists == 3


# -- selected-state resync ---------------------------------------------------------------------


async def test_resync_reads_the_message_list_only_when_the_folder_changed(core, alice, make_session, monkeypatch):
    for i in range(3):
        await core.deliver(ALICE, sample(f"m{i}"))
    await alice.line("s SELECT INBOX")
    reads = []
    real = core.store.messages

    async def messages(mailbox, folder_id, known_state=None):
        reads.append(folder_id)
        return await real(mailbox, folder_id, known_state)

    monkeypatch.setattr(core.store, "messages", messages)
    for i in range(3):
        assert (await alice.line(f"n{i} NOOP")).startswith(f"n{i} OK")
    assert reads == []
    await core.deliver(ALICE, sample("new"))
    assert "* 4 EXISTS" in await alice.line("n NOOP")
    assert len(reads) == 1
    await alice.line("n NOOP")
    assert len(reads) == 1
    # A change by another session (flags, then expunge) is still seen.
    other = make_session()
    await other.line("a AUTHENTICATE EXTERNAL =")
    await other.line("s SELECT INBOX")
    await other.line("t STORE 2 +FLAGS.SILENT (\\Deleted)")
    # \Recent: Alice's SELECT took the messages first.
    assert "* 2 FETCH (FLAGS (\\Deleted \\Recent))" in await alice.line("n NOOP")
    await other.line("e EXPUNGE")
    # FETCH may not announce the EXPUNGE; the NOOP after it still must.
    assert "EXPUNGE" not in await alice.line("f FETCH 1 FLAGS")
    assert "* 2 EXPUNGE" in await alice.line("n NOOP")
    n = len(reads)
    await alice.line("n NOOP")
    assert len(reads) == n


def test_only_inbox_itself_is_case_insensitive_in_list_patterns():
    assert Pattern("", "inbox").match("INBOX")
    assert Pattern("", "inbox*").match("INBOX/Patients")
    assert not Pattern("", "inbox*").match("INBOXold")  # another folder, matched case-sensitively
    assert Pattern("", "INBOX*").match("INBOXold")


# -- second review: bounded work on client input ----------------------------------------------


async def test_search_with_too_many_keys_is_refused(core, alice):
    await core.deliver(ALICE, sample("one"))
    await alice.line("s SELECT INBOX")
    out = await alice.line("a UID SEARCH " + " ".join(["NOT TEXT zz"] * 300))
    assert out.startswith("a BAD") and "Too many search keys" in out
    assert (await alice.line("b SEARCH " + " ".join(["NOT TEXT zz"] * 100))).rstrip().endswith("b OK SEARCH completed")


async def test_append_is_bounded_like_a_submission(core, alice):
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(1200))
    raw = b"From: <alice@test.mss>\r\n" + fields + b"\r\nbody\r\n"
    out = (await alice.send(b"a APPEND Drafts {%d+}\r\n" % len(raw) + raw + b"\r\n")).decode()
    assert "a NO" in out and "fields" in out
    draft = b"Subject: no author yet\r\n\r\nbody\r\n"  # a draft may lack From
    out = (await alice.send(b"b APPEND Drafts {%d+}\r\n" % len(draft) + draft + b"\r\n")).decode()
    assert "b OK" in out


async def test_delete_of_the_selected_folder_is_refused_after_a_rename(core, alice):
    await alice.line("c CREATE A")
    await alice.line("s SELECT A")
    assert (await alice.line("r RENAME A B")).startswith("r OK")
    assert "INUSE" in await alice.line("d DELETE B")  # still the selected one
    await alice.line("c CREATE A")
    assert (await alice.line("e DELETE A")).startswith("e OK")  # a different folder now
